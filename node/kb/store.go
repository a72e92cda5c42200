package kb

// This file reads a model: Load streams it at one revision (snapshot, then
// log) from etcd or from keys in memory (replay.go).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/processor"
)

// Loader receives a model as Load reads it: first every record of the
// snapshot (PutPattern and PutVector changes, in the snapshot's order; a
// pattern's Name may be empty: it is the hash of its events), then Built,
// then every group of the log after the snapshot, in order.
type Loader interface {
	Record(processor.Change) error
	Built() error
	Changes(processor.Changes) error
}

// Sizer is a Loader that is told, before the snapshot's first record, how
// many patterns and vectors the snapshot's head says it holds (bounded by
// maxSizeHint), to make room for them up front.
type Sizer interface {
	Size(patterns, vectors int)
}

// maxSizeHint bounds the counts a Sizer is told, so that a head that is
// wrong cannot make a load reserve much more than a large model needs.
const maxSizeHint = 1 << 24

// State is what a Load found.
type State struct {
	// Rev is the etcd revision the model was read at.
	Rev int64
	// Head is the model's head record; nil for a model without a snapshot
	// (new, or stored in the layout before FormatVersion 1: Legacy).
	Head   *Head
	Legacy bool
	// MetaRev is the mod revision of the meta key (0 if none).
	MetaRev int64
	// NextSeq is the log sequence number of the next entry; LogEntries and
	// LogBytes what the log after the snapshot holds.
	NextSeq    uint64
	LogEntries int
	LogBytes   int64
	// Records counts the snapshot's records.
	Records int64
}

// Base is the model's base (see Head.Base).
func (s State) Base() string {
	if s.Head == nil {
		return ""
	}
	return s.Head.Base
}

// Load reads model at one revision, streaming it (etcd's RangeStream: no
// page makes etcd count the rest of the range) and handing every record to l
// as it arrives, and returns what it found. progress, if not nil, is told
// the number of records and log entries read so far; the log gets a line
// every 2 s for large models.
func Load(ctx context.Context, kv clientv3.KV, lg *zap.Logger, model string, l Loader, progress func(records int64)) (State, error) {
	return load(ctx, kv, lg, model, l, progress, loadOpts{snapshot: true, log: true})
}

// loadOpts says what a load reads: the snapshot, the log, at which revision
// (0: the current one).
type loadOpts struct {
	rev           int64
	snapshot, log bool
}

func load(ctx context.Context, kv clientv3.KV, lg *zap.Logger, model string, l Loader, progress func(records int64), o loadOpts) (State, error) {
	return loadFrom(ctx, etcdSource{kv}, lg, model, l, progress, o)
}

// source is where a load reads a model: etcd, or keys in memory (LoadKeys).
type source interface {
	// first reads the head and meta records (nil when absent) at rev (0: now)
	// and returns the revision read.
	first(ctx context.Context, prefix string, rev int64) (head, meta *mvccpb.KeyValue, at int64, err error)
	// each calls fn for every key under prefix at rev, in key order.
	each(ctx context.Context, prefix string, rev int64, fn func(*mvccpb.KeyValue) error, tick func()) error
	// count counts the keys under prefix at rev.
	count(ctx context.Context, prefix string, rev int64) (int64, error)
}

type etcdSource struct{ kv clientv3.KV }

func (s etcdSource) first(ctx context.Context, prefix string, rev int64) (head, meta *mvccpb.KeyValue, at int64, err error) {
	var revOpt []clientv3.OpOption
	if rev > 0 {
		revOpt = append(revOpt, clientv3.WithRev(rev))
	}
	resp, err := s.kv.Txn(ctx).Then(clientv3.OpGet(prefix+HeadKey, revOpt...), clientv3.OpGet(prefix+MetaKey, revOpt...)).Commit()
	if err != nil {
		return nil, nil, 0, err
	}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		head = kvs[0]
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		meta = kvs[0]
	}
	if rev == 0 {
		rev = resp.Header.Revision
	}
	return head, meta, rev, nil
}

func (s etcdSource) each(ctx context.Context, prefix string, rev int64, fn func(*mvccpb.KeyValue) error, tick func()) error {
	return stream(ctx, s.kv, prefix, rev, fn, tick)
}

func (s etcdSource) count(ctx context.Context, prefix string, rev int64) (int64, error) {
	resp, err := s.kv.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Count, nil
}

func loadFrom(ctx context.Context, src source, lg *zap.Logger, model string, l Loader, progress func(records int64), o loadOpts) (State, error) {
	prefix := coord.ModelPrefix(model)
	headKV, metaKV, rev, err := src.first(ctx, prefix, o.rev)
	if err != nil {
		return State{}, fmt.Errorf("kb: load model %s: %w", model, err)
	}
	st := State{Rev: rev}
	if metaKV != nil {
		st.MetaRev = metaKV.ModRevision
		if f := metaFormat(metaKV.Value); f > FormatVersion {
			return State{}, unknownFormat(model, "meta record", f)
		}
	}
	start, lastLog := time.Now(), time.Now()
	var n int64
	tick := func() {
		if progress != nil {
			progress(n)
		}
		if time.Since(lastLog) > 2*time.Second {
			lastLog = time.Now()
			lg.Info("loading model", zap.String("model", model), zap.Int64("read", n), zap.Duration("for", time.Since(start)))
		}
	}
	record := func(ch processor.Change) error {
		n++
		st.Records++
		return l.Record(ch)
	}

	if headKV != nil {
		h, err := decodeHead(model, headKV.Value)
		if err != nil {
			return State{}, err
		}
		st.Head, st.NextSeq = &h, h.LogFrom
	}
	if h := st.Head; h != nil && o.snapshot {
		if sz, ok := l.(Sizer); ok {
			hint := func(n int64) int { return int(min(max(n, 0), maxSizeHint)) }
			sz.Size(hint(h.Patterns), hint(h.Vectors))
		}
		chunks := 0
		err = src.each(ctx, prefix+chunkPrefix(h.Snapshot), st.Rev, func(item *mvccpb.KeyValue) error {
			key := string(item.Key[len(prefix):])
			if key != chunkKey(h.Snapshot, chunks) {
				return fmt.Errorf("%w: model %s: snapshot chunk %s where chunk %d was expected", ErrCorrupt, model, key, chunks)
			}
			chunks++
			body, err := openChunk(model, key, item.Value)
			if err != nil {
				return err
			}
			return decodeChanges(body, false, record)
		}, tick)
		if err == nil && chunks != h.Chunks {
			err = fmt.Errorf("%w: model %s: snapshot %s has %d of its %d chunks", ErrCorrupt, model, h.Snapshot, chunks, h.Chunks)
		}
		if err == nil {
			err = noLegacy(ctx, src, model, st.Rev)
		}
		if err != nil {
			return State{}, fmt.Errorf("kb: load model %s: %w", model, err)
		}
	} else if o.snapshot {
		for _, dir := range []string{legacyPatterns, legacyVectorDir} {
			err := src.each(ctx, prefix+dir, st.Rev, func(item *mvccpb.KeyValue) error {
				st.Legacy = true
				ch, err := decodeLegacy(string(item.Key[len(prefix):]), item.Value)
				if err != nil {
					return err
				}
				return record(ch)
			}, tick)
			if err != nil {
				return State{}, fmt.Errorf("kb: load model %s: %w", model, err)
			}
		}
	}
	if err := l.Built(); err != nil {
		return State{}, err
	}

	if !o.log {
		return st, nil
	}
	g := &groups{model: model, next: st.NextSeq}
	err = src.each(ctx, prefix+logDir, st.Rev, func(item *mvccpb.KeyValue) error {
		e, err := openLogEntry(model, string(item.Key[len(prefix):]), item.Value)
		if err != nil {
			return err
		}
		st.LogEntries++
		st.LogBytes += int64(len(e.part))
		n++
		chs, err := g.changes(e)
		if err != nil || chs == nil {
			return err
		}
		return l.Changes(chs)
	}, tick)
	if err != nil {
		return State{}, fmt.Errorf("kb: load model %s: %w", model, err)
	}
	st.NextSeq = g.next
	if g.dropped > 0 || g.open {
		lg.Info("model log holds changes whose writer failed before they were complete; they were never visible and are skipped",
			zap.String("model", model), zap.Int("groups", g.dropped+btoi(g.open)))
	}
	if n >= 1000 || time.Since(start) > time.Second {
		lg.Info("model loaded", zap.String("model", model), zap.Int64("records", st.Records), zap.Int("log_entries", st.LogEntries),
			zap.Int64("revision", st.Rev), zap.Duration("took", time.Since(start)))
	}
	return st, nil
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// decodeLegacy reads a record of the layout before FormatVersion 1.
func decodeLegacy(key string, v []byte) (processor.Change, error) {
	switch {
	case strings.HasPrefix(key, legacyPatterns):
		var p processor.PatternRecord
		if err := p.UnmarshalJSON(v); err != nil {
			return processor.Change{}, fmt.Errorf("%s: %w", key, err)
		}
		return processor.Change{Kind: processor.PutPattern, Pattern: p}, nil
	default:
		var r processor.VectorRecord
		if err := r.UnmarshalJSON(v); err != nil {
			return processor.Change{}, fmt.Errorf("%s: %w", key, err)
		}
		return processor.Change{Kind: processor.PutVector, Vector: r}, nil
	}
}

// stream reads every key under prefix at rev,
// calling fn for each in key order as it arrives and tick after each
// response. An etcd older than 3.7 has no RangeStream: then it reads pages
// of 1000 keys instead (each page makes etcd count the rest of the range).
func stream(ctx context.Context, kv clientv3.KV, prefix string, rev int64, fn func(*mvccpb.KeyValue) error, tick func()) error {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := kv.GetStream(sctx, prefix, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)), clientv3.WithRev(rev))
	if status.Code(err) == codes.Unimplemented {
		return streamPaged(ctx, kv, prefix, rev, fn, tick)
	}
	if err != nil {
		return err
	}
	// Whatever ends the read, the stream's goroutines end once it is drained.
	defer func() {
		cancel()
		for range ch {
		}
	}()
	got := false
	for resp := range ch {
		if err := resp.Err(); err != nil {
			if !got && status.Code(err) == codes.Unimplemented {
				return streamPaged(ctx, kv, prefix, rev, fn, tick)
			}
			return err
		}
		got = true
		for _, item := range resp.Kvs {
			if err := fn(item); err != nil {
				return fmt.Errorf("%s: %w", item.Key, err)
			}
		}
		tick()
	}
	if !got {
		if err := ctx.Err(); err != nil {
			return err
		}
		return errors.New("the stream ended without an answer")
	}
	return nil
}

func streamPaged(ctx context.Context, kv clientv3.KV, prefix string, rev int64, fn func(*mvccpb.KeyValue) error, tick func()) error {
	end := clientv3.GetPrefixRangeEnd(prefix)
	key := prefix
	for {
		resp, err := kv.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(1000), clientv3.WithRev(rev))
		if err != nil {
			return err
		}
		for _, item := range resp.Kvs {
			if err := fn(item); err != nil {
				return fmt.Errorf("%s: %w", item.Key, err)
			}
		}
		tick()
		if !resp.More || len(resp.Kvs) == 0 {
			return nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// metaFormat returns the format version a meta record names (0: a node of
// the layout before FormatVersion 1 wrote it).
func metaFormat(b []byte) int {
	var m struct {
		Format int `json:"format"`
	}
	_ = json.Unmarshal(b, &m)
	return m.Format
}

// noLegacy refuses a model with a snapshot that also holds records of the
// layout before it: an older node wrote them after the model was converted,
// and reading the snapshot alone would lose them.
func noLegacy(ctx context.Context, src source, model string, rev int64) error {
	prefix := coord.ModelPrefix(model)
	var n int64
	for _, dir := range []string{legacyPatterns, legacyVectorDir} {
		c, err := src.count(ctx, prefix+dir, rev)
		if err != nil {
			return err
		}
		n += c
	}
	if n > 0 {
		return fmt.Errorf("%w: model %s: %d records of the layout before format version %d were written after it was converted (a node older than this one wrote them): stop every older node of the model, then export it with that older katoctl and import it again",
			ErrCorrupt, model, n, FormatVersion)
	}
	return nil
}
