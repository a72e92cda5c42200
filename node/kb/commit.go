package kb

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kato-coord/kato/coord"
)

// Limits of one transaction, below etcd's defaults (--max-txn-ops 128,
// --max-request-bytes 1.5 MiB).
const (
	maxTxnOps   = 120
	maxTxnBytes = 1 << 20
)

// MaxRecordBytes is the largest record (key and value) a Committer writes:
// one record always fits a transaction together with the meta key. A writer
// bounds what it produces by it (processor.SetMaxRecordBytes) so that a
// change too large is refused before it is made.
const MaxRecordBytes = maxTxnBytes - 4<<10

// Change is one write to a model: a record put, or (Clear) the deletion of
// every record of the model. Keys are relative to models/<model>/.
type Change struct {
	Put   Record
	Clear bool
}

// FenceFunc starts a transaction fenced by the current lock hold.
type FenceFunc func(ctx context.Context) *coord.FencedTxn

// Committer writes model changes to etcd, fenced, in group commits: while one
// transaction is in flight, changes submitted by other callers gather, and go
// out together in the next one. A caller's Submit returns only after the
// transaction holding its changes was accepted by etcd (or failed).
//
// One transaction is in flight at a time, so changes reach etcd in
// submission order, across keys too (a pattern never lands before the vector
// it uses). Within one transaction only the last put of a key is sent
// (records are whole values, so the last wins). A Clear is a transaction of
// its own. A submission larger than one transaction (more than 120 writes,
// or more than 1 MiB) is split over consecutive fenced transactions, in its
// own order: a reader between them sees its first records without the last
// (a learn's new vectors without its pattern, which is a model state a learn
// can leave too).
//
// The first failure ends the committer: the failed submission gets the
// error (wrapping ErrOutcomeUnknown when etcd may hold it), everything queued
// behind it gets ErrAborted, and Run returns it. The writer's memory then
// holds changes etcd may not: it reloads the model before it writes again.
type Committer struct {
	model   string
	prefix  string
	fenced  FenceFunc
	lg      *zap.Logger
	onBatch func(changes int, took time.Duration)

	meta func() []byte // the value of models/<model>/meta in every transaction, or nil

	mu      sync.Mutex
	queue   []*request
	wake    chan struct{}
	stopped error
}

type request struct {
	changes []Change
	done    chan error
}

// NewCommitter returns a committer for model whose transactions are fenced by
// fenced (coord.ModelLock.Txn). onBatch, if not nil, is told the size and
// duration of every transaction. Run must be running for Submit to progress.
func NewCommitter(model string, fenced FenceFunc, lg *zap.Logger, onBatch func(int, time.Duration), opts ...CommitterOption) *Committer {
	c := &Committer{model: model, prefix: coord.ModelPrefix(model), fenced: fenced, lg: lg.Named("kb"),
		onBatch: onBatch, wake: make(chan struct{}, 1)}
	for _, o := range opts {
		o(c)
	}
	return c
}

// MetaKey is the model record, relative to models/<model>/.
const MetaKey = "meta"

// CommitterOption configures a Committer.
type CommitterOption func(*Committer)

// WithMeta makes every transaction also put models/<model>/meta with the
// value meta returns (the writer and its fence), so the model's history in
// etcd tells who wrote each change under which lock. A Clear then keeps the
// meta key: it deletes everything else of the model.
func WithMeta(meta func() []byte) CommitterOption {
	return func(c *Committer) { c.meta = meta }
}

// Submit queues changes and waits until etcd has accepted them. Call it in the
// order the changes were made (the order of Submit calls is the write order);
// it may be called from many goroutines. ctx only bounds the wait: once
// queued, changes may still be written after ctx ends.
func (c *Committer) Submit(ctx context.Context, changes ...Change) error {
	done, err := c.Enqueue(changes...)
	if err != nil {
		return err
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Enqueue queues changes without waiting; the channel yields the result. It
// lets a caller fix the write order while holding its own lock and wait
// after releasing it. It refuses, queueing nothing, a clear mixed with puts,
// a put without a key, a record above MaxRecordBytes (ErrTooLarge), and
// anything after the committer stopped or failed.
func (c *Committer) Enqueue(changes ...Change) (<-chan error, error) {
	for _, ch := range changes {
		if ch.Clear && len(changes) > 1 {
			return nil, fmt.Errorf("kb: model %s: a clear must be submitted alone", c.model)
		}
		if !ch.Clear && ch.Put.Key == "" {
			return nil, fmt.Errorf("kb: model %s: change without a key", c.model)
		}
		if n := len(ch.Put.Key) + len(ch.Put.Value); n > MaxRecordBytes {
			return nil, fmt.Errorf("%w: model %s: record %s is %d bytes, at most %d fit", ErrTooLarge, c.model, ch.Put.Key, n, MaxRecordBytes)
		}
	}
	r := &request{changes: changes, done: make(chan error, 1)}
	c.mu.Lock()
	if c.stopped != nil {
		c.mu.Unlock()
		return nil, c.stopped
	}
	c.queue = append(c.queue, r)
	c.mu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
	return r.done, nil
}

// Run writes queued changes until ctx ends or a write fails. When ctx ends
// it finishes the transaction in flight (cancelled: its submissions get
// ErrOutcomeUnknown), fails what is still queued with ErrStopped and returns
// ctx.Err(). When a write fails it returns that error (see Committer).
func (c *Committer) Run(ctx context.Context) error {
	for {
		batch := c.take()
		if batch == nil {
			select {
			case <-ctx.Done():
				c.stop(ErrStopped)
				return ctx.Err()
			case <-c.wake:
			}
			continue
		}
		err := c.write(ctx, batch)
		for _, r := range batch {
			r.done <- err
		}
		switch {
		case ctx.Err() != nil:
			c.stop(ErrStopped)
			return ctx.Err()
		case err != nil:
			c.stop(fmt.Errorf("%w (%v)", ErrAborted, err))
			return err
		}
	}
}

// stop fails every queued submission, and every later Enqueue, with err.
func (c *Committer) stop(err error) {
	c.mu.Lock()
	c.stopped = err
	q := c.queue
	c.queue = nil
	c.mu.Unlock()
	for _, r := range q {
		r.done <- err
	}
}

// cost is what a submission adds to a transaction.
func (r *request) cost() (ops, size int, clear bool) {
	for _, ch := range r.changes {
		ops++
		size += len(ch.Put.Key) + len(ch.Put.Value)
		clear = clear || ch.Clear
	}
	return ops, size, clear
}

// take removes the next batch from the head of the queue: consecutive
// submissions that fit one transaction together, or one submission alone (a
// Clear, or one larger than a transaction). It returns nil for an empty
// queue.
func (c *Committer) take() []*request {
	c.mu.Lock()
	defer c.mu.Unlock()
	var batch []*request
	ops, size := 0, 0
	for len(c.queue) > 0 {
		r := c.queue[0]
		rops, rsize, clear := r.cost()
		if len(batch) > 0 && (clear || ops+rops > maxTxnOps || size+rsize > maxTxnBytes) {
			break
		}
		batch = append(batch, r)
		c.queue = c.queue[1:]
		ops += rops
		size += rsize
		if clear {
			break
		}
	}
	return batch
}

// write sends the changes of batch: one fenced transaction, or several in
// order when one submission is larger than a transaction.
func (c *Committer) write(ctx context.Context, batch []*request) error {
	var ops []clientv3.Op
	var sizes []int
	index := map[string]int{} // key -> position in ops, so the last put wins
	n := 0
	for _, r := range batch {
		for _, ch := range r.changes {
			n++
			if ch.Clear {
				ops = append(ops, c.clearOps()...)
				sizes = append(sizes, 0, 0)
				continue
			}
			if c.meta != nil && ch.Put.Key == MetaKey {
				continue // the committer's own meta wins
			}
			op := clientv3.OpPut(c.prefix+ch.Put.Key, string(ch.Put.Value))
			if i, ok := index[ch.Put.Key]; ok {
				ops[i] = op
				sizes[i] = len(ch.Put.Key) + len(ch.Put.Value)
				continue
			}
			index[ch.Put.Key] = len(ops)
			ops = append(ops, op)
			sizes = append(sizes, len(ch.Put.Key)+len(ch.Put.Value))
		}
	}
	parts := split(ops, sizes)
	for i, part := range parts {
		if c.meta != nil {
			part = append(part, clientv3.OpPut(c.prefix+MetaKey, string(c.meta())))
		}
		start := time.Now()
		_, err := c.fenced(ctx).Then(part...).Commit()
		if err != nil {
			err = classify(ctx, err)
			if i > 0 && !errors.Is(err, ErrOutcomeUnknown) {
				err = fmt.Errorf("%w: %d of %d transactions of one change set committed: %w", ErrOutcomeUnknown, i, len(parts), err)
			}
			c.lg.Warn("model write failed", zap.String("model", c.model), zap.Int("changes", n), zap.Int("part", i+1), zap.Int("parts", len(parts)), zap.Error(err))
			return err
		}
		if c.onBatch != nil {
			c.onBatch(len(part), time.Since(start))
		}
	}
	return nil
}

// clearOps deletes every record of the model; with WithMeta, all but the
// meta key, which the transaction rewrites.
func (c *Committer) clearOps() []clientv3.Op {
	if c.meta == nil {
		return []clientv3.Op{clientv3.OpDelete(c.prefix, clientv3.WithPrefix())}
	}
	metaKey := c.prefix + MetaKey
	return []clientv3.Op{clientv3.OpDelete(c.prefix, clientv3.WithRange(metaKey)),
		clientv3.OpDelete(metaKey+"\x00", clientv3.WithRange(clientv3.GetPrefixRangeEnd(c.prefix)))}
}

// split cuts ops into consecutive parts of at most maxTxnOps operations and
// maxTxnBytes bytes each (every single op fits: Enqueue checked it).
func split(ops []clientv3.Op, sizes []int) [][]clientv3.Op {
	var parts [][]clientv3.Op
	from, size := 0, 0
	for i := range ops {
		if i > from && (i-from >= maxTxnOps || size+sizes[i] > maxTxnBytes) {
			parts = append(parts, ops[from:i:i])
			from, size = i, 0
		}
		size += sizes[i]
	}
	return append(parts, ops[from:len(ops):len(ops)])
}

// classify says what a failed transaction means for its changes: a lost
// fence stays coord.ErrLockLost; errors etcd returns before it applies
// anything (too large, too many operations, no space, a throttled proposal)
// are returned as they are; anything else may have been applied and wraps
// ErrOutcomeUnknown.
func classify(ctx context.Context, err error) error {
	switch {
	case errors.Is(err, coord.ErrLockLost), errors.Is(err, coord.ErrNotLocked), errors.Is(err, coord.ErrOutsideModel):
		return err
	case ctx.Err() != nil:
		return fmt.Errorf("%w: cancelled in flight: %w", ErrOutcomeUnknown, err)
	}
	for _, known := range []error{rpctypes.ErrRequestTooLarge, rpctypes.ErrTooManyOps, rpctypes.ErrNoSpace,
		rpctypes.ErrTooManyRequests} {
		if errors.Is(err, known) {
			return err
		}
	}
	if status.Code(err) == codes.ResourceExhausted { // a message over gRPC's limit, either side
		return err
	}
	return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
}
