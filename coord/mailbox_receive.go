// Receiving from a mailbox: list then watch the inbox (on the resumable
// watch), deliver in revision order, and delete handled messages in batches.

package coord

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

const (
	// inboxListPage is how many inbox keys one range request of the listing returns.
	inboxListPage = 1000
	// inboxFetchBatch is how many listed messages one transaction reads.
	inboxFetchBatch = 64
	// inboxAckBatch is how many handled messages one transaction deletes (etcd's
	// default --max-txn-ops is 128).
	inboxAckBatch = 128
	// inboxAckFlushTimeout bounds the deletion of handled messages when Receive ends.
	inboxAckFlushTimeout = 5 * time.Second
	// inboxAckLinger is how long the acker lets handled messages gather (up to
	// a full batch) before deleting them: a busy inbox then costs etcd one
	// delete transaction per inboxAckBatch messages, which keeps Receive's
	// write load close to the senders' own (see the benchmark).
	inboxAckLinger = 50 * time.Millisecond
)

// Receive delivers the messages of this mailbox's instance to fn, one at a
// time, in etcd revision order: first those already waiting, then new ones as
// they arrive, until ctx ends (it returns ctx.Err()) or the session is lost
// (it returns the session's error). A message is deleted only after fn
// returned nil for it, so a message whose handler did not return nil is
// delivered again by the next Receive. When fn returns an error, Receive
// returns it wrapped and keeps the message. The ctx passed to fn ends when
// Receive's ctx ends or the session is lost.
//
// Handled messages are deleted in the background, in batches (up to
// inboxAckBatch, or after inboxAckLinger); Receive returns only after they are
// deleted, waiting at most inboxAckFlushTimeout for etcd (what it could not
// delete by then is delivered again, as at-least-once allows). Only one
// Receive of a Mailbox runs at a time (ErrReceiving).
//
// Transient etcd failures (leader loss, a member going away, a compacted
// watch revision) are handled inside: the inbox is watched from the revision
// after the last one seen, and listed again when that revision was compacted,
// so no message is skipped and none handled successfully is delivered twice.
func (m *Mailbox) Receive(ctx context.Context, fn func(context.Context, Message) error) error {
	return m.run(ctx, fn, true)
}

// ReceivePending is Receive for the messages waiting now: it delivers them
// with the same guarantees, and returns how many fn handled once they are
// handled and deleted, without waiting for new ones.
func (m *Mailbox) ReceivePending(ctx context.Context, fn func(context.Context, Message) error) (int, error) {
	if fn == nil {
		return 0, errors.New("coord: ReceivePending needs a handler")
	}
	n := 0
	err := m.run(ctx, func(ctx context.Context, msg Message) error {
		if err := fn(ctx, msg); err != nil {
			return err
		}
		n++
		return nil
	}, false)
	return n, err
}

// run is Receive; with follow false it returns after the listing.
func (m *Mailbox) run(ctx context.Context, fn func(context.Context, Message) error, follow bool) error {
	if m.idErr != nil {
		return m.idErr
	}
	if fn == nil {
		return errors.New("coord: Receive needs a handler")
	}
	if !m.receiving.CompareAndSwap(false, true) {
		return fmt.Errorf("%w: %s", ErrReceiving, m.nodeID)
	}
	defer m.receiving.Store(false)
	select {
	case <-m.s.Done():
		return m.s.Err()
	default:
	}

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sessionWatch := make(chan struct{})
	go func() {
		defer close(sessionWatch)
		select {
		case <-m.s.Done():
			cancel()
		case <-rctx.Done():
		}
	}()
	a := newAcker(m.kv, m.lg)
	a.beforeDelete = m.beforeDelete
	err := m.receive(rctx, fn, a, follow)
	cancel()
	<-sessionWatch
	a.close()
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case m.s.Err() != nil:
		return m.s.Err()
	}
	return err
}

// receive lists and then (with follow) watches the inbox until ctx ends or fn
// fails. A key handled but not yet deleted is skipped, so a re-list never
// delivers a handled message again.
func (m *Mailbox) receive(ctx context.Context, fn func(context.Context, Message) error, a *acker, follow bool) error {
	w := &resumableWatch{
		cli: m.s.cli, lg: m.lg, what: "inbox", key: InboxPrefix(m.nodeID),
		opts: []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithFilterDelete()},
		list: func(ctx context.Context) (int64, error) {
			return listInbox(ctx, m.kv, m.lg, m.nodeID, a.has, func(msg Message) error { return m.deliver(ctx, fn, a, msg) })
		},
		events: func(evs []*clientv3.Event) error {
			for _, ev := range evs {
				if ev.Type != clientv3.EventTypePut {
					continue
				}
				msg, err := decodeMessage(string(ev.Kv.Key), ev.Kv.Value, ev.Kv.ModRevision, ev.Kv.Lease)
				if err != nil {
					m.lg.Warn("skipping a message that does not decode", zap.Error(err))
					continue
				}
				if err := m.deliver(ctx, fn, a, msg); err != nil {
					return err
				}
			}
			return nil
		},
		retryable: func(err error) bool {
			var herr *msgHandlerError
			return !errors.As(err, &herr) && msgRetryable(ctx, err)
		},
	}
	if !follow {
		_, err := w.listed(ctx)
		return err
	}
	return w.run(ctx, 0)
}

// msgHandlerError is a non-nil return of the handler.
type msgHandlerError struct {
	msg Message
	err error
}

func (e *msgHandlerError) Error() string {
	return fmt.Sprintf("coord: handler of message %s from %s: %v", e.msg.ID, e.msg.From, e.err)
}

func (e *msgHandlerError) Unwrap() error { return e.err }

// deliver calls fn for msg and queues its deletion when fn returns nil.
func (m *Mailbox) deliver(ctx context.Context, fn func(context.Context, Message) error, a *acker, msg Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := fn(ctx, msg); err != nil {
		return &msgHandlerError{msg: msg, err: err}
	}
	a.ack(InboxPrefix(m.nodeID) + msg.ID)
	return nil
}

type inboxKey struct {
	key string
	rev int64
}

// listInbox calls fn for every message waiting in inbox id, in mod-revision order,
// and returns the revision the listing is consistent with: a watch from the
// next revision sees exactly the messages written after it. Keys are listed
// without values, in pages; values are then read in revision order in small
// batches, so a long inbox never has to fit in one response. A message that
// is gone or was replaced by the time its value is read is skipped (the watch
// delivers a replacement), and so is a key for which skip (if not nil) returns
// true before its value is read.
func listInbox(ctx context.Context, kv clientv3.KV, lg *zap.Logger, id string, skip func(key string) bool, fn func(Message) error) (int64, error) {
	keys, rev, err := listInboxKeys(ctx, kv, InboxPrefix(id))
	if err != nil {
		return 0, err
	}
	for len(keys) > 0 {
		batch := keys[:min(inboxFetchBatch, len(keys))]
		keys = keys[len(batch):]
		if skip != nil {
			batch = slices.DeleteFunc(slices.Clone(batch), func(k inboxKey) bool { return skip(k.key) })
			if len(batch) == 0 {
				continue
			}
		}
		ops := make([]clientv3.Op, len(batch))
		for i, k := range batch {
			ops[i] = clientv3.OpGet(k.key)
		}
		resp, err := kv.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return 0, fmt.Errorf("coord: read inbox %s: %w", id, err)
		}
		for i, r := range resp.Responses {
			kvs := r.GetResponseRange().Kvs
			if len(kvs) == 0 || kvs[0].ModRevision != batch[i].rev {
				continue
			}
			msg, err := decodeMessage(string(kvs[0].Key), kvs[0].Value, kvs[0].ModRevision, kvs[0].Lease)
			if err != nil {
				lg.Warn("skipping a message that does not decode", zap.Error(err))
				continue
			}
			if err := fn(msg); err != nil {
				return 0, err
			}
		}
	}
	return rev, nil
}

// listInboxKeys returns the keys under prefix with their mod revisions, sorted by
// revision, all read at one revision, which it returns.
func listInboxKeys(ctx context.Context, kv clientv3.KV, prefix string) ([]inboxKey, int64, error) {
	end := clientv3.GetPrefixRangeEnd(prefix)
	var (
		keys []inboxKey
		rev  int64
		from = prefix
	)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithKeysOnly(),
			clientv3.WithLimit(inboxListPage), clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := kv.Get(ctx, from, opts...)
		if rev != 0 && errors.Is(err, rpctypes.ErrCompacted) {
			// Compacted between two pages: start over at a newer revision.
			keys, rev, from = keys[:0], 0, prefix
			continue
		}
		if err != nil {
			return nil, 0, fmt.Errorf("coord: list %s: %w", prefix, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, k := range resp.Kvs {
			keys = append(keys, inboxKey{key: string(k.Key), rev: k.ModRevision})
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].rev < keys[j].rev })
	return keys, rev, nil
}

// acker deletes handled messages in the background of one Receive, in
// batches, so that handlers never wait for a delete. Keys stay queued until
// etcd confirmed their deletion.
type acker struct {
	kv        clientv3.KV
	lg        *zap.Logger
	ctx       context.Context // for the deletes; cancelled by close at the latest after inboxAckFlushTimeout
	cancelOps context.CancelFunc

	mu      sync.Mutex
	pending []string            // handled, not yet deleted, in handling order
	queued  map[string]struct{} // the keys in pending

	kick chan struct{} // capacity 1: there is work
	full chan struct{} // capacity 1: there is a full batch
	stop chan struct{}
	done chan struct{}

	beforeDelete func() // test hook, called before each delete transaction
}

func newAcker(kv clientv3.KV, lg *zap.Logger) *acker {
	ctx, cancel := context.WithCancel(context.Background())
	a := &acker{kv: kv, lg: lg, ctx: ctx, cancelOps: cancel, queued: map[string]struct{}{},
		kick: make(chan struct{}, 1), full: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go a.run()
	return a
}

// ack queues the deletion of a handled message's key.
func (a *acker) ack(key string) {
	a.mu.Lock()
	a.pending = append(a.pending, key)
	a.queued[key] = struct{}{}
	full := len(a.pending) == inboxAckBatch
	a.mu.Unlock()
	if full {
		select {
		case a.full <- struct{}{}:
		default:
		}
	}
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// has reports whether key is handled and waiting to be deleted.
func (a *acker) has(key string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.queued[key]
	return ok
}

// close deletes what is still queued, waiting at most inboxAckFlushTimeout, and
// stops the background goroutine.
func (a *acker) close() {
	t := time.AfterFunc(inboxAckFlushTimeout, a.cancelOps)
	close(a.stop)
	<-a.done
	t.Stop()
	a.cancelOps()
}

func (a *acker) run() {
	defer close(a.done)
	for {
		select {
		case <-a.stop:
			if err := a.drain(); err != nil {
				a.mu.Lock()
				n := len(a.pending)
				a.mu.Unlock()
				a.lg.Warn("handled messages could not be deleted; they will be delivered again",
					zap.Int("count", n), zap.Error(err))
			}
			return
		case <-a.kick:
			if !a.linger() {
				continue // stopping: the next round drains
			}
			a.drain() // fails only once close gave up; the stop case reports it
		}
	}
}

// linger waits up to inboxAckLinger for a full batch; false if stopped meanwhile.
func (a *acker) linger() bool {
	a.mu.Lock()
	full := len(a.pending) >= inboxAckBatch
	a.mu.Unlock()
	if full {
		return true
	}
	t := time.NewTimer(inboxAckLinger)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-a.full:
		return true
	case <-a.stop:
		return false
	}
}

// drain deletes queued keys until none is left, retrying failures until the
// acker's ctx ends.
func (a *acker) drain() error {
	var bo Backoff
	for failures := 0; ; {
		a.mu.Lock()
		n := min(len(a.pending), inboxAckBatch)
		if n == 0 {
			a.mu.Unlock()
			return nil
		}
		batch := slices.Clone(a.pending[:n])
		a.mu.Unlock()

		if a.beforeDelete != nil {
			a.beforeDelete()
		}
		ops := make([]clientv3.Op, len(batch))
		for i, k := range batch {
			ops[i] = clientv3.OpDelete(k)
		}
		if _, err := a.kv.Txn(a.ctx).Then(ops...).Commit(); err != nil {
			if failures++; failures == 1 && a.ctx.Err() == nil {
				a.lg.Warn("deleting handled messages failed, retrying", zap.Int("count", n), zap.Error(err))
			}
			if werr := bo.Wait(a.ctx); werr != nil {
				return err
			}
			continue
		}
		bo.Reset()
		failures = 0
		a.mu.Lock()
		a.pending = a.pending[n:]
		for _, k := range batch {
			delete(a.queued, k)
		}
		a.mu.Unlock()
	}
}
