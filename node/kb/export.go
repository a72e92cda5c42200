package kb

// This file is the export format (JSON lines, one record each, the same since
// the first release) and the streaming export and import of whole models.

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha1" //nolint:gosec // pattern names are SHA-1 hex (KATO)
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/node/processor"
)

// Kinds of export lines. A line is {"kind":...,"key":...,"value":...}, the
// key being where the layout before FormatVersion 1 stored the record
// (patterns/<hash>, vectors/<hash>, meta).
const (
	KindPattern = "pattern"
	KindVector  = "vector"
	KindMeta    = "meta"
)

// AppendExportLine appends the export line of a change (a pattern or a
// vector) and a newline.
func AppendExportLine(dst []byte, ch processor.Change) ([]byte, error) {
	var kind, key string
	var value []byte
	var err error
	switch ch.Kind {
	case processor.PutPattern:
		kind, key = KindPattern, legacyPatterns+ch.Pattern.Name
		value, err = ch.Pattern.MarshalJSON()
	case processor.PutVector:
		kind, key = KindVector, legacyVectorDir+strings.TrimPrefix(ch.Vector.Name, vectorPrefix)
		value, err = ch.Vector.MarshalJSON()
	default:
		return nil, fmt.Errorf("kb: cannot export a %v", ch.Kind)
	}
	if err != nil {
		return nil, err
	}
	return appendLine(dst, kind, key, value)
}

func appendLine(dst []byte, kind, key string, value []byte) ([]byte, error) {
	k, err := json.Marshal(key)
	if err != nil {
		return nil, err
	}
	dst = append(dst, `{"kind":"`...)
	dst = append(dst, kind...)
	dst = append(dst, `","key":`...)
	dst = append(dst, k...)
	dst = append(dst, `,"value":`...)
	var buf bytes.Buffer
	if err := json.Compact(&buf, value); err != nil {
		return nil, fmt.Errorf("record %s is not JSON: %w", key, err)
	}
	dst = append(dst, buf.Bytes()...)
	return append(dst, "}\n"...), nil
}

// ParseExportLine decodes and checks one export line: a pattern or vector
// whose key names it and whose name is its hash, or the meta record (kind
// KindMeta, ch zero).
func ParseExportLine(b []byte) (kind string, ch processor.Change, err error) {
	var l struct {
		Kind  string          `json:"kind"`
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return "", ch, fmt.Errorf("not a record line (want {\"kind\",\"key\",\"value\"}): %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "", ch, errors.New("more than one JSON value on the line")
	}
	if len(l.Value) == 0 || string(l.Value) == "null" {
		return "", ch, fmt.Errorf("record %s has no value", l.Key)
	}
	switch l.Kind {
	case KindPattern:
		name, ok := strings.CutPrefix(l.Key, legacyPatterns)
		if !ok {
			return "", ch, fmt.Errorf("pattern key %q does not start with %s", l.Key, legacyPatterns)
		}
		var p processor.PatternRecord
		if err := p.UnmarshalJSON(l.Value); err != nil {
			return "", ch, fmt.Errorf("pattern %s: %w", l.Key, err)
		}
		if p.Name != name {
			return "", ch, fmt.Errorf("key %s holds pattern %q", l.Key, p.Name)
		}
		if err := p.Validate(); err != nil { // its name is the hash of its events, and more
			return "", ch, err
		}
		return KindPattern, processor.Change{Kind: processor.PutPattern, Pattern: p}, nil
	case KindVector:
		hash, ok := strings.CutPrefix(l.Key, legacyVectorDir)
		if !ok {
			return "", ch, fmt.Errorf("vector key %q does not start with %s", l.Key, legacyVectorDir)
		}
		var v processor.VectorRecord
		if err := v.UnmarshalJSON(l.Value); err != nil {
			return "", ch, fmt.Errorf("vector %s: %w", l.Key, err)
		}
		if v.Name != vectorPrefix+hash {
			return "", ch, fmt.Errorf("key %s holds vector %q", l.Key, v.Name)
		}
		if h := processor.VectorName(v.Vector); h != v.Name {
			return "", ch, fmt.Errorf("vector %s: its values hash to %s", v.Name, h)
		}
		return KindVector, processor.Change{Kind: processor.PutVector, Vector: v}, nil
	case KindMeta:
		if l.Key != MetaKey {
			return "", ch, fmt.Errorf("meta record key %q, want %q", l.Key, MetaKey)
		}
		if l.Value[0] != '{' {
			return "", ch, errors.New("meta record value is not a JSON object")
		}
		return KindMeta, ch, nil
	}
	return "", ch, fmt.Errorf("kind %q: want %s, %s or %s", l.Kind, KindPattern, KindVector, KindMeta)
}

// Counts counts the records of an export or import.
type Counts struct {
	Patterns, Vectors int64
}

func (n *Counts) add(ch processor.Change) {
	if ch.Kind == processor.PutPattern {
		n.Patterns++
	} else {
		n.Vectors++
	}
}

// Total is the number of records.
func (n Counts) Total() int64 { return n.Patterns + n.Vectors }

func (n Counts) String() string { return fmt.Sprintf("%d patterns, %d vectors", n.Patterns, n.Vectors) }

// overlay is the model's log folded into its final records: what a stream of
// the snapshot must skip (a cleared model or a record the log rewrote) and
// add.
type overlay struct {
	cleared  bool
	patterns map[string]processor.PatternRecord
	vectors  map[string]processor.VectorRecord
}

func (o *overlay) Record(processor.Change) error { return nil }
func (o *overlay) Built() error                  { return nil }
func (o *overlay) Changes(chs processor.Changes) error {
	for _, ch := range chs {
		switch ch.Kind {
		case processor.PutPattern:
			o.patterns[ch.Pattern.Name] = ch.Pattern
		case processor.PutVector:
			if _, ok := o.vectors[ch.Vector.Name]; !ok { // a stored vector is kept as it is
				o.vectors[ch.Vector.Name] = ch.Vector
			}
		case processor.ClearAll:
			o.cleared = true
			clear(o.patterns)
			clear(o.vectors)
		}
	}
	return nil
}

// Export streams model at one revision to emit, one record at a time:
// snapshot records the log did not replace, then the records the log wrote
// (in learn order). It holds only the log in memory (the checkpoint policy
// bounds it by the snapshot's size), never the snapshot.
func Export(ctx context.Context, kv clientv3.KV, lg *zap.Logger, model string, emit func(processor.Change) error) (int64, Counts, error) {
	var n Counts
	// The log first, at the revision of the load; then the snapshot at it.
	o := &overlay{patterns: map[string]processor.PatternRecord{}, vectors: map[string]processor.VectorRecord{}}
	st, err := load(ctx, kv, lg, model, o, nil, loadOpts{log: true})
	if err != nil {
		return 0, n, err
	}
	if !o.cleared {
		_, err = readSnapshot(ctx, kv, model, st, func(ch processor.Change) error {
			switch ch.Kind {
			case processor.PutPattern:
				if ch.Pattern.Name == "" {
					ch.Pattern.Name = processor.ModelName(ch.Pattern.Events)
				}
				if _, ok := o.patterns[ch.Pattern.Name]; ok {
					return nil
				}
			case processor.PutVector:
				if _, ok := o.vectors[ch.Vector.Name]; ok {
					delete(o.vectors, ch.Vector.Name) // the stored one stays
				}
			}
			n.add(ch)
			return emit(ch)
		})
		if err != nil {
			return 0, n, err
		}
	}
	if n.Total() == 0 && st.Head == nil && st.LogEntries == 0 && st.MetaRev == 0 {
		return 0, n, fmt.Errorf("%w: model %s has no records", ErrNotFound, model)
	}
	// Then what the log wrote: patterns, then vectors, in learn order.
	rest := make([]processor.Change, 0, len(o.patterns)+len(o.vectors))
	for _, p := range o.patterns {
		rest = append(rest, processor.Change{Kind: processor.PutPattern, Pattern: p})
	}
	for _, v := range o.vectors {
		rest = append(rest, processor.Change{Kind: processor.PutVector, Vector: v})
	}
	seq := func(ch processor.Change) uint64 { return ch.Pattern.Seq + ch.Vector.Seq }
	slices.SortFunc(rest, func(a, b processor.Change) int {
		if a.Kind != b.Kind {
			return cmp.Compare(a.Kind, b.Kind)
		}
		return cmp.Compare(seq(a), seq(b))
	})
	for _, ch := range rest {
		n.add(ch)
		if err := emit(ch); err != nil {
			return 0, n, err
		}
	}
	return st.Rev, n, nil
}

// readSnapshot streams the snapshot (or the old layout's records) of st, at
// st.Rev.
func readSnapshot(ctx context.Context, kv clientv3.KV, model string, st State, fn func(processor.Change) error) (int64, error) {
	st2, err := load(ctx, kv, zap.NewNop(), model, snapshotOnly(fn), nil, loadOpts{rev: st.Rev, snapshot: true})
	return st2.Rev, err
}

// snapshotOnly is a Loader of the snapshot's records.
type snapshotOnly func(processor.Change) error

func (s snapshotOnly) Record(ch processor.Change) error { return s(ch) }
func (s snapshotOnly) Built() error                     { return nil }
func (s snapshotOnly) Changes(processor.Changes) error  { return nil }

// Import writes a model from records given one at a time, into a new
// snapshot: nothing is visible until Publish. It holds one chunk and the set
// of names and sequence numbers seen (to refuse duplicates), never the
// records.
type Import struct {
	w     *SnapshotWriter
	names map[[sha1.Size]byte]struct{}
	vecs  map[string]struct{}
	pseqs map[uint64]struct{}
	vseqs map[uint64]struct{}
	n     Counts
}

// NewImport starts an import into model, written through fenced, every
// transaction putting the meta record meta gives (if not nil).
func NewImport(model string, fenced FenceFunc, meta func() []byte) *Import {
	return &Import{w: NewSnapshot(model, fenced, meta), names: map[[sha1.Size]byte]struct{}{}, vecs: map[string]struct{}{},
		pseqs: map[uint64]struct{}{}, vseqs: map[uint64]struct{}{}}
}

// Add checks one record (from ParseExportLine) against those before it and
// adds it to the snapshot.
func (im *Import) Add(ctx context.Context, ch processor.Change) error {
	switch ch.Kind {
	case processor.PutPattern:
		var h [sha1.Size]byte
		if _, err := hex.Decode(h[:], []byte(ch.Pattern.Name)); err != nil {
			return fmt.Errorf("pattern %s: name is not a SHA-1", ch.Pattern.Name)
		}
		if _, dup := im.names[h]; dup {
			return fmt.Errorf("pattern %s given twice", ch.Pattern.Name)
		}
		if _, dup := im.pseqs[ch.Pattern.Seq]; dup {
			return fmt.Errorf("pattern %s: another pattern has seq %d", ch.Pattern.Name, ch.Pattern.Seq)
		}
		im.names[h], im.pseqs[ch.Pattern.Seq] = struct{}{}, struct{}{}
	case processor.PutVector:
		if _, dup := im.vecs[ch.Vector.Name]; dup {
			return fmt.Errorf("vector %s given twice", ch.Vector.Name)
		}
		if _, dup := im.vseqs[ch.Vector.Seq]; dup {
			return fmt.Errorf("vector %s: another vector has seq %d", ch.Vector.Name, ch.Vector.Seq)
		}
		im.vecs[ch.Vector.Name], im.vseqs[ch.Vector.Seq] = struct{}{}, struct{}{}
	default:
		return fmt.Errorf("kb: cannot import a %v", ch.Kind)
	}
	im.n.add(ch)
	return im.w.Add(ctx, ch)
}

// Counts returns what was added.
func (im *Import) Counts() Counts { return im.n }

// Publish makes the import the model in one fenced transaction that
// replaces everything the model held (snapshot, log, old layout);
// followers load the model again (a new base).
func (im *Import) Publish(ctx context.Context, by string) (Head, error) {
	return im.w.Publish(ctx, NewBase(), 0, true, by)
}

// ErrNotFound is returned for a model with nothing stored.
var ErrNotFound = errors.New("kb: no such model")

// Abort deletes the chunks an import wrote (they were never visible; the
// next checkpoint or import would delete them too).
func (im *Import) Abort(ctx context.Context) {
	w := im.w
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, _ = w.fenced(ctx).Then(clientv3.OpDelete(w.prefix+chunkPrefix(w.id), clientv3.WithPrefix())).Commit()
}
