package kb

// This file is the Committer: model changes appended to the model's log in
// fenced group commits.

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
	"github.com/kato-coord/kato/node/processor"
)

// MaxRecordBytes bounds the stored size of one pattern or vector (its JSON
// form, which is larger than the stored one): a writer bounds what it
// produces by it (processor.SetMaxRecordBytes), so that a change too large
// is refused before it is made. Any change set of such records fits the log.
const MaxRecordBytes = maxPartBytes - 4<<10

// maxChangeSetBytes bounds the encoded records of one submission; a larger
// one is refused by Enqueue with ErrTooLarge before anything is written.
const maxChangeSetBytes = 32 << 20

// FenceFunc starts a transaction fenced by the current lock hold.
type FenceFunc func(ctx context.Context) *coord.FencedTxn

// Committer appends model changes to the model's log, fenced, in group
// commits: while one transaction is in flight, changes submitted by other
// callers gather, and go out together as the next log entry. A caller's
// Submit returns only after the entry holding its changes is durable (or
// failed).
//
// One transaction is in flight at a time, so the log holds changes in
// submission order. A group larger than one etcd request (1 MiB of records,
// after compression) is written as several log entries, one transaction
// each; only its last entry makes it visible, so a reader never sees a part
// of a group, and a group whose last entry failed was never stored.
//
// Every transaction also rewrites models/<model>/meta (WithMeta), so the
// model's etcd history says which writer made each change under which
// fence.
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
	meta    func() []byte

	mu      sync.Mutex
	queue   []*request
	wake    chan struct{}
	stopped error
	next    uint64 // the log sequence number of the next entry
	written int64  // log bytes written by this committer
}

type request struct {
	body    []byte // encoded records
	changes int
	mark    bool
	at      LogPosition // a mark's answer
	done    chan error
}

// LogPosition is a point of the log: the next sequence number, and the log
// bytes a committer wrote before it.
type LogPosition struct {
	Seq     uint64
	Written int64
}

// CommitterOption configures a Committer.
type CommitterOption func(*Committer)

// WithMeta makes every transaction also put models/<model>/meta with the
// value meta returns (the writer and its fence).
func WithMeta(meta func() []byte) CommitterOption {
	return func(c *Committer) { c.meta = meta }
}

// NewCommitter returns a committer for model whose transactions are fenced by
// fenced (coord.ModelLock.Txn), appending from log sequence number next (the
// State.NextSeq of the load the writer's memory came from). onBatch, if not
// nil, is told the number of changes and the duration of every
// transaction. Run must be running for Submit to progress.
func NewCommitter(model string, fenced FenceFunc, lg *zap.Logger, next uint64, onBatch func(int, time.Duration), opts ...CommitterOption) *Committer {
	c := &Committer{model: model, prefix: coord.ModelPrefix(model), fenced: fenced, lg: lg.Named("kb"),
		onBatch: onBatch, wake: make(chan struct{}, 1), next: next}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Submit queues changes and waits until etcd holds them. ctx only bounds the
// wait: once queued, changes may still be written after ctx ends.
func (c *Committer) Submit(ctx context.Context, changes ...processor.Change) error {
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

// Enqueue encodes changes and queues them without waiting; the channel
// yields the result. It lets a caller fix the write order while holding its
// own lock and wait after releasing it (the order of Enqueue calls is the
// write order). It refuses, queueing nothing, a change that does not encode,
// a change set above 32 MiB encoded (ErrTooLarge), and anything after the
// committer stopped or failed.
func (c *Committer) Enqueue(changes ...processor.Change) (<-chan error, error) {
	var body []byte
	for _, ch := range changes {
		var err error
		if body, err = appendChange(body, ch); err != nil {
			return nil, fmt.Errorf("kb: model %s: %w", c.model, err)
		}
		if len(body) > maxChangeSetBytes {
			return nil, fmt.Errorf("%w: model %s: one change set of more than %d bytes", ErrTooLarge, c.model, maxChangeSetBytes)
		}
	}
	if len(body) == 0 {
		done := make(chan error, 1)
		done <- nil
		return done, nil
	}
	return c.push(&request{body: body, changes: len(changes), done: make(chan error, 1)})
}

// Mark returns the log position once every change enqueued before it is
// durable: a checkpoint that froze the writer's memory at the time of the
// Mark covers the log up to that position.
func (c *Committer) Mark() (<-chan error, func() LogPosition, error) {
	r := &request{mark: true, done: make(chan error, 1)}
	done, err := c.push(r)
	return done, func() LogPosition { return r.at }, err
}

func (c *Committer) push(r *request) (<-chan error, error) {
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

// Position returns where the log is now.
func (c *Committer) Position() LogPosition {
	c.mu.Lock()
	defer c.mu.Unlock()
	return LogPosition{Seq: c.next, Written: c.written}
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
		var err error
		if batch[0].mark {
			batch[0].at = c.Position()
		} else {
			err = c.write(ctx, batch)
		}
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

// take removes the next batch from the head of the queue: consecutive
// submissions whose records fit one log entry together, one larger
// submission alone, or a mark alone. It returns nil for an empty queue.
func (c *Committer) take() []*request {
	c.mu.Lock()
	defer c.mu.Unlock()
	var batch []*request
	size := 0
	for len(c.queue) > 0 {
		r := c.queue[0]
		if len(batch) > 0 && (r.mark || size+len(r.body) > maxPartBytes) {
			break
		}
		batch = append(batch, r)
		c.queue = c.queue[1:]
		size += len(r.body)
		if r.mark {
			break
		}
	}
	return batch
}

// write appends the records of batch to the log as one group: one entry, or
// several when it is larger than one etcd request.
func (c *Committer) write(ctx context.Context, batch []*request) error {
	var body []byte
	n := 0
	for _, r := range batch {
		body = append(body, r.body...)
		n += r.changes
	}
	z, codec := compress(body)
	parts := (len(z) + maxPartBytes - 1) / maxPartBytes
	first := c.Position().Seq
	for i := range parts {
		part := z[i*maxPartBytes : min((i+1)*maxPartBytes, len(z))]
		last := i == parts-1
		ops := []clientv3.Op{clientv3.OpPut(c.prefix+logKey(first+uint64(i)), string(frameLogEntry(codec, first, last, part)))}
		if c.meta != nil {
			ops = append(ops, clientv3.OpPut(c.prefix+MetaKey, string(c.meta())))
		}
		start := time.Now()
		_, err := c.fenced(ctx).Then(ops...).Commit()
		c.mu.Lock()
		c.next = first + uint64(i) + 1 // even a failed entry's number is not reused
		if err == nil {
			c.written += int64(len(part))
		}
		c.mu.Unlock()
		if err != nil {
			if last {
				err = classify(ctx, err)
			} else if !errors.Is(err, coord.ErrLockLost) && !errors.Is(err, coord.ErrNotLocked) {
				// The group's last entry was never sent: nothing of it is visible.
				err = fmt.Errorf("entry %d of %d of one change set: %w", i+1, parts, err)
			}
			c.lg.Warn("model write failed", zap.String("model", c.model), zap.Int("changes", n), zap.Int("part", i+1), zap.Int("parts", parts), zap.Error(err))
			return err
		}
		if c.onBatch != nil && last {
			c.onBatch(n, time.Since(start))
		}
	}
	return nil
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
