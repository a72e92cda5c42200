package kb

// This file writes snapshots: a checkpoint of the holder's model, or an
// import. Chunks are written under a new snapshot id, fenced, and stay
// invisible until one fenced transaction points the head at them and deletes
// what they replace.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/processor"
)

// chunkBytes is the encoded size at which a chunk is written. One record may
// make a chunk larger, up to MaxRecordBytes more (it still fits a request).
const chunkBytes = 512 << 10

// SnapshotWriter writes one snapshot. Add records (patterns and vectors),
// then Publish it.
type SnapshotWriter struct {
	model  string
	prefix string
	fenced FenceFunc
	meta   func() []byte
	id     string
	// OnChunk, if not nil, is called after each chunk is written.
	OnChunk func(n int)

	buf      []byte
	chunks   int
	bytes    int64
	patterns int64
	vectors  int64
	sorted   bool
	lastPat  uint64
	lastVec  uint64
	maxPat   uint64
	maxVec   uint64
	sawVec   bool
}

// NewSnapshot starts a snapshot of model written through fenced. meta, if
// not nil, gives the meta record every transaction of the snapshot puts
// (as a Committer's WithMeta).
func NewSnapshot(model string, fenced FenceFunc, meta func() []byte) *SnapshotWriter {
	var b [8]byte
	_, _ = rand.Read(b[:])
	id := fmt.Sprintf("%016x-%s", time.Now().UnixNano(), hex.EncodeToString(b[:]))
	return &SnapshotWriter{model: model, prefix: coord.ModelPrefix(model), fenced: fenced, meta: meta, id: id, sorted: true}
}

// ID returns the snapshot's id.
func (w *SnapshotWriter) ID() string { return w.id }

// Add appends one record (PutPattern or PutVector), writing a chunk when
// enough records gathered. Records in ascending learn sequence, patterns
// before vectors, make a sorted snapshot, which a node loads without
// sorting.
func (w *SnapshotWriter) Add(ctx context.Context, ch processor.Change) error {
	switch ch.Kind {
	case processor.PutPattern:
		w.sorted = w.sorted && !w.sawVec && (w.patterns == 0 || ch.Pattern.Seq > w.lastPat)
		w.lastPat = ch.Pattern.Seq
		w.maxPat = max(w.maxPat, ch.Pattern.Seq)
		w.patterns++
	case processor.PutVector:
		w.sorted = w.sorted && (w.vectors == 0 || ch.Vector.Seq > w.lastVec)
		w.lastVec, w.sawVec = ch.Vector.Seq, true
		w.maxVec = max(w.maxVec, ch.Vector.Seq)
		w.vectors++
	default:
		return fmt.Errorf("kb: a snapshot holds patterns and vectors, not %v", ch.Kind)
	}
	var err error
	if w.buf, err = appendChange(w.buf, ch); err != nil {
		return err
	}
	if len(w.buf) >= chunkBytes {
		return w.flush(ctx)
	}
	return nil
}

// Records counts the records added.
func (w *SnapshotWriter) Records() int64 { return w.patterns + w.vectors }

func (w *SnapshotWriter) flush(ctx context.Context) error {
	if len(w.buf) == 0 {
		return nil
	}
	v := frameChunk(w.buf)
	if _, err := w.fenced(ctx).Then(w.withMeta(clientv3.OpPut(w.prefix+chunkKey(w.id, w.chunks), string(v)))...).Commit(); err != nil {
		return fmt.Errorf("kb: model %s: write snapshot chunk %d: %w", w.model, w.chunks, err)
	}
	w.chunks++
	w.bytes += int64(len(v))
	w.buf = w.buf[:0]
	if w.OnChunk != nil {
		w.OnChunk(w.chunks)
	}
	return nil
}

// Flush writes the records added so far as a chunk (Publish does too).
func (w *SnapshotWriter) Flush(ctx context.Context) error { return w.flush(ctx) }

func (w *SnapshotWriter) withMeta(ops ...clientv3.Op) []clientv3.Op {
	if w.meta != nil {
		ops = append(ops, clientv3.OpPut(w.prefix+MetaKey, string(w.meta())))
	}
	return ops
}

// Publish writes the last chunk, then in one fenced transaction points the
// model's head at the snapshot, deletes the log before logFrom (the changes
// the snapshot holds), every other snapshot and the records of the layout
// before FormatVersion 1. base is the new head's
// base: the old one for a checkpoint, NewBase() for a model replaced as a
// whole. A crash or a lost lock before this transaction leaves the model as
// it was (the chunks written are deleted by the next Publish). With replace
// (an import) the whole log is deleted and the new log starts at logFrom.
func (w *SnapshotWriter) Publish(ctx context.Context, base string, logFrom uint64, replace bool, by string) (Head, error) {
	if err := w.flush(ctx); err != nil {
		return Head{}, err
	}
	h := Head{Snapshot: w.id, Chunks: w.chunks, LogFrom: logFrom, Base: base, Sorted: w.sorted,
		Patterns: w.patterns, Vectors: w.vectors, MaxPatternSeq: w.maxPat, MaxVectorSeq: w.maxVec, Bytes: w.bytes, WrittenBy: by, WrittenAt: time.Now().UTC()}
	p := w.prefix
	own := p + chunkPrefix(w.id)
	logEnd := p + logKey(logFrom)
	if replace {
		logEnd = clientv3.GetPrefixRangeEnd(p + logDir)
	}
	ops := []clientv3.Op{
		clientv3.OpPut(p+HeadKey, string(h.encode())),
		clientv3.OpDelete(p+logDir, clientv3.WithRange(logEnd)),
		clientv3.OpDelete(p+snapDir, clientv3.WithRange(own)),
		clientv3.OpDelete(clientv3.GetPrefixRangeEnd(own), clientv3.WithRange(clientv3.GetPrefixRangeEnd(p+snapDir))),
		clientv3.OpDelete(p+legacyPatterns, clientv3.WithPrefix()),
		clientv3.OpDelete(p+legacyVectorDir, clientv3.WithPrefix()),
	}
	if _, err := w.fenced(ctx).Then(w.withMeta(ops...)...).Commit(); err != nil {
		return Head{}, fmt.Errorf("kb: model %s: publish snapshot %s: %w", w.model, w.id, classify(ctx, err))
	}
	h.V = FormatVersion
	return h, nil
}

// NewBase returns a new model base, for a model replaced as a whole.
func NewBase() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Policy says when the holder checkpoints: when the log after the snapshot
// holds at least MinEntries entries and at least a quarter as many as the
// snapshot has records, or at least MinBytes bytes and half the snapshot's
// size. Each checkpoint then costs at most a constant times the log it
// folds in, so the cost of keeping the model compact stays linear in the
// changes made; a load reads a log at most about as large as the snapshot.
type Policy struct {
	MinEntries int
	MinBytes   int64
}

// DefaultPolicy checkpoints after 10,000 log entries or 4 MiB of log at
// least.
func DefaultPolicy() Policy { return Policy{MinEntries: 10_000, MinBytes: 4 << 20} }

// Due says whether a model whose snapshot holds records records in bytes
// bytes, with entries log entries of logBytes bytes after it, should be
// checkpointed.
func (p Policy) Due(records, bytes int64, entries int64, logBytes int64) bool {
	return entries >= int64(p.MinEntries) && entries >= records/4 ||
		logBytes >= p.MinBytes && logBytes >= bytes/2
}
