// The lock queue: joining it, waiting for our turn (the predecessor's
// deletion), the hand-over, and leaving it after a failed attempt.

package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// queued is where enqueue put us.
type queued struct {
	rev   int64 // create revision of our key; 0 when TryLock found the lock held
	at    int64 // revision of the enqueue transaction
	owned bool
	// When not owned: our direct predecessor, read just before our key was
	// created (Lock), or the holder's key and lockinfo (TryLock).
	pred, owner, info *mvccpb.KeyValue
}

// enqueue takes the lock at once when the queue is empty, in one flat
// transaction that creates our key and writes lockinfo (so an uncontended
// Lock is one round trip of two puts). Otherwise TryLock (wait false) returns
// the holder and queues nothing, and Lock joins the end of the queue: it
// reads the key it comes after just before creating its own, so that it
// starts watching that key without another round trip.
//
// Where Lock joins depends on what the previous Lock found. After an empty
// queue it joins in a second transaction, keeping the first one flat: a
// nested transaction costs etcd noticeably more to decode and apply, and an
// uncontended Lock would pay for it every time. After a busy queue it joins
// in the Else of the first transaction (nested), saving a round trip on each
// contended Lock.
//
// A key of this ModelLock left by a failed earlier attempt is removed first;
// a key of anyone else on this session is ErrLockInUse.
func (l *ModelLock) enqueue(ctx context.Context, wait bool) (queued, error) {
	for attempt := 0; ; attempt++ {
		kv := l.s.cli.KV
		info, entry := l.holderValue(0), l.queueValue()
		put := clientv3.OpPut(l.key, entry, clientv3.WithLease(l.s.Lease()))
		join := []clientv3.Op{l.predRead, put}
		nested := wait && l.busy
		var elseOps []clientv3.Op
		switch {
		case !wait:
			elseOps = l.holderReads
		case nested:
			elseOps = []clientv3.Op{clientv3.OpTxn([]clientv3.Cmp{l.absent}, join, []clientv3.Op{l.keyRead})}
		}
		// An empty queue means our key is absent too: take the lock.
		resp, err := kv.Txn(ctx).
			If(l.emptyQueue).
			Then(clientv3.OpPut(l.infoKey, info, clientv3.WithLease(l.s.Lease())), put).
			Else(elseOps...).
			Commit()
		if err != nil {
			l.undoEnqueue(ctx, entry, info)
			return queued{}, fmt.Errorf("coord: model lock %q: queue %s: %w", l.model, l.key, err)
		}
		l.busy = !resp.Succeeded
		if resp.Succeeded {
			return queued{rev: resp.Header.Revision, at: resp.Header.Revision, owned: true}, nil
		}
		if !wait {
			rs := resp.Responses
			if mine := firstKV(rs[0].GetResponseRange().Kvs); mine != nil {
				if err := l.removeLeftover(ctx, mine, attempt); err != nil {
					return queued{}, err
				}
				continue
			}
			return queued{owner: firstKV(rs[1].GetResponseRange().Kvs), info: firstKV(rs[2].GetResponseRange().Kvs)}, nil
		}
		var joined *pb.TxnResponse
		if nested {
			joined = resp.Responses[0].GetResponseTxn()
		} else {
			resp, err = kv.Txn(ctx).If(l.absent).Then(join...).Else(l.keyRead).Commit()
			if err != nil {
				l.undoEnqueue(ctx, entry, info)
				return queued{}, fmt.Errorf("coord: model lock %q: queue %s: %w", l.model, l.key, err)
			}
			joined = (*pb.TxnResponse)(resp)
		}
		first := firstKV(joined.Responses[0].GetResponseRange().Kvs)
		if !joined.Succeeded {
			if err := l.removeLeftover(ctx, first, attempt); err != nil {
				return queued{}, err
			}
			continue
		}
		return queued{rev: resp.Header.Revision, at: resp.Header.Revision, pred: first}, nil
	}
}

// removeLeftover deletes mine, the key enqueue found in our place, when it is
// this ModelLock's own leftover (an earlier attempt failed before it could
// remove it), so that the next attempt takes a fresh place at the end of the
// queue. A key of anyone else on this session, or one still there after a
// removal, is ErrLockInUse.
func (l *ModelLock) removeLeftover(ctx context.Context, mine *mvccpb.KeyValue, attempt int) error {
	if mine == nil || attempt > 0 || !l.ownsEntry(mine.Value) {
		return fmt.Errorf("%w: model %q: key %s exists (another ModelLock or concurrency.Mutex on this session)", ErrLockInUse, l.model, l.key)
	}
	if _, err := l.s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", mine.CreateRevision)).
		Then(clientv3.OpDelete(l.key)).Commit(); err != nil {
		return fmt.Errorf("coord: model lock %q: remove leftover key %s: %w", l.model, l.key, err)
	}
	return nil
}

// undoEnqueue removes what a failed enqueue may still have written (an error
// does not tell whether etcd applied the transaction, as when ctx ends while
// it is in flight): our key and lockinfo, each only if it holds the exact
// value that transaction wrote.
func (l *ModelLock) undoEnqueue(ctx context.Context, entry, info string) {
	l.cleanup(ctx, "remove the queue key of a failed attempt",
		[]clientv3.Cmp{clientv3.Compare(clientv3.Value(l.key), "=", entry)},
		clientv3.OpDelete(l.key), clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.Value(l.infoKey), "=", info)},
			[]clientv3.Op{clientv3.OpDelete(l.infoKey)}, nil))
}

// cleanup runs a clean-up transaction after a failed or abandoned attempt or
// a loss. It uses a fresh timeout (the session TTL: after that the lease and
// what hangs on it are gone anyway), as ctx may have ended, and does nothing
// once the session is lost. A failure is logged; the next Lock removes a
// leftover queue key.
func (l *ModelLock) cleanup(ctx context.Context, what string, cmps []clientv3.Cmp, ops ...clientv3.Op) {
	select {
	case <-l.s.Done():
		return
	default:
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.s.TTL())
	defer cancel()
	if _, err := l.s.cli.Txn(cctx).If(cmps...).Then(ops...).Commit(); err != nil {
		l.lg.Warn("could not "+what, zap.String("key", l.key), zap.Error(err))
	}
}

func (l *ModelLock) ownsEntry(v []byte) bool {
	var e queueEntry
	return json.Unmarshal(v, &e) == nil && e.Token == l.token
}

func firstKV(kvs []*mvccpb.KeyValue) *mvccpb.KeyValue {
	if len(kvs) == 0 {
		return nil
	}
	return kvs[0]
}

// waitTurn waits until our key is the first of the queue and returns the
// revision ownership was confirmed at, and the waiter after us that Unlock may
// hand the lock over to (nil if none is known).
//
// It waits for the deletion of the direct predecessor only (no herd), then
// reads: when our key is the first and lockinfo names it, the previous holder
// handed the lock over in its Unlock, and the read is all it takes (a
// contended hand-off costs one write, the holder's). When our key is the first
// and nobody handed over (the holder did not know us, or was a plain
// concurrency.Mutex, or the predecessor gave up), a transaction confirms
// ownership and writes lockinfo; it succeeds when our key still has its
// revision and no key of the queue is older. The predecessor is watched from
// the current revision, because a watch that starts in the future is "synced"
// in etcd and gets events at once, while one that starts at a past revision is
// caught up by a loop that runs every 100 ms (the wait concurrency.Mutex pays
// at each hand-off). The watch's created response carries the revision it
// starts after; if that is past g (a write came in between), the predecessor
// may have gone unseen, so it is read once more before waiting.
func (l *ModelLock) waitTurn(ctx context.Context, q queued) (int64, *successor, error) {
	ctx, cancel := l.withSession(ctx)
	defer cancel()
	var (
		w     *predWatch
		retry Backoff
	)
	defer func() { w.stop() }()
	older := clientv3.Compare(clientv3.CreateRevision(l.pfx), ">", q.rev-1).WithPrefix()
	getMine := clientv3.OpGet(l.key)
	getPred := clientv3.OpGet(l.pfx, append(clientv3.WithLastCreate(), clientv3.WithMaxCreateRev(q.rev-1))...)
	getNext := clientv3.OpGet(l.pfx, append(clientv3.WithFirstCreate(), clientv3.WithMinCreateRev(q.rev+1))...)
	fail := func(err error) (int64, *successor, error) { return 0, nil, l.waitErr(err) }
	// again waits before a retry after a failed read or confirm, or says why
	// not to retry.
	again := func(what string, err error) error {
		if !msgRetryable(ctx, err) {
			return fmt.Errorf("coord: model lock %q: %s: %w", l.model, what, err)
		}
		return retry.Wait(ctx)
	}
	gone := func() (int64, *successor, error) {
		return fail(fmt.Errorf("%w: model %q: queue key %s was deleted while waiting", ErrLockLost, l.model, l.key))
	}
	pred, g := q.pred, q.at
	for {
		if pred != nil {
			if w == nil || w.key != string(pred.Key) || w.rev != pred.CreateRevision {
				w.stop()
				w = l.watchPred(ctx, pred)
			}
			deleted, err := w.waitDelete(ctx, l.s.Done(), g)
			switch {
			case err != nil:
				if ctx.Err() != nil || l.s.Err() != nil {
					return fail(err)
				}
				// The watch broke (leader lost, stream error): read, then
				// watch again.
				w.stop()
				w = nil
				if err := retry.Wait(ctx); err != nil {
					return fail(err)
				}
			case !deleted:
				// The watch started after g: look whether the predecessor went
				// in between. A serializable read will do if its member is at
				// w.created or later: the watch covers what comes after.
				resp, err := l.s.cli.Get(ctx, w.key, clientv3.WithSerializable())
				if err == nil && resp.Header.Revision < w.created {
					resp, err = l.s.cli.Get(ctx, w.key)
				}
				if err == nil {
					if kv := firstKV(resp.Kvs); kv != nil && kv.CreateRevision == w.rev {
						g = resp.Header.Revision // >= w.created: the watch covers the rest
						continue
					}
				}
			}
		}
		// Read (no raft entry) whether our turn came, and how.
		resp, err := l.s.cli.Txn(ctx).Then(getMine, getPred, clientv3.OpGet(l.infoKey), getNext).Commit()
		if err != nil {
			if err := again("read queue "+l.pfx, err); err != nil {
				return fail(err)
			}
			pred = nil
			continue
		}
		rs := resp.Responses
		if mine := firstKV(rs[0].GetResponseRange().Kvs); mine == nil || mine.CreateRevision != q.rev {
			return gone()
		}
		if pred = firstKV(rs[1].GetResponseRange().Kvs); pred != nil {
			g = resp.Header.Revision
			continue
		}
		if l.handedOver(firstKV(rs[2].GetResponseRange().Kvs), q.rev) {
			return resp.Header.Revision, successorOf(firstKV(rs[3].GetResponseRange().Kvs)), nil
		}
		// Our key was the first: confirm. No older key can appear (keys are
		// created at new revisions), so the confirm fails only when our key
		// went.
		resp, err = l.s.cli.Txn(ctx).
			If(clientv3.Compare(clientv3.CreateRevision(l.key), "=", q.rev), older).
			Then(clientv3.OpPut(l.infoKey, l.holderValue(q.rev), clientv3.WithLease(l.s.Lease())), getNext).
			Commit()
		if err != nil {
			if err := again("confirm "+l.key, err); err != nil {
				return fail(err)
			}
			pred = nil
			continue
		}
		if !resp.Succeeded {
			return gone()
		}
		return resp.Header.Revision, successorOf(firstKV(resp.Responses[1].GetResponseRange().Kvs)), nil
	}
}

// handedOver reports whether lockinfo record info was written for our key
// with create revision rev: by the previous holder's Unlock, handing the lock
// over to us.
func (l *ModelLock) handedOver(info *mvccpb.KeyValue, rev int64) bool {
	if info == nil || clientv3.LeaseID(info.Lease) != l.s.Lease() {
		return false
	}
	r, err := ParseLockInfo(info)
	return err == nil && r.Key == l.key && r.Rev == rev
}

// successor is the waiter right after a holder, to which Unlock hands the
// lock over.
type successor struct {
	key   string
	rev   int64 // create revision
	lease clientv3.LeaseID
	entry queueEntry
}

// successorOf returns queue key kv as a successor when a ModelLock wrote it
// (a plain concurrency.Mutex waiter writes no holder id, and finds out by
// itself that it holds the lock), and nil otherwise.
func successorOf(kv *mvccpb.KeyValue) *successor {
	if kv == nil {
		return nil
	}
	var e queueEntry
	if json.Unmarshal(kv.Value, &e) != nil || e.ID == "" || e.Token == "" {
		return nil
	}
	return &successor{key: string(kv.Key), rev: kv.CreateRevision, lease: clientv3.LeaseID(kv.Lease), entry: e}
}

// withSession returns a ctx that also ends when the session does. Calls that
// may block on an unreachable etcd (Watch itself waits for its stream) use it,
// so that a lost session ends them.
func (l *ModelLock) withSession(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-l.s.Done():
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// waitErr turns the end of a wait into the error Lock returns.
func (l *ModelLock) waitErr(err error) error {
	if serr := l.s.Err(); serr != nil {
		return fmt.Errorf("coord: model lock %q: %w", l.model, serr)
	}
	return err
}

// predWatch watches the deletion of one queue key.
type predWatch struct {
	key     string
	rev     int64 // its create revision
	ch      clientv3.WatchChan
	cancel  context.CancelFunc
	created int64 // revision the watch starts after; 0 until created
}

func (l *ModelLock) watchPred(ctx context.Context, pred *mvccpb.KeyValue) *predWatch {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	return &predWatch{
		key:    string(pred.Key),
		rev:    pred.CreateRevision,
		ch:     l.s.cli.Watch(wctx, string(pred.Key), clientv3.WithCreatedNotify()),
		cancel: cancel,
	}
}

func (w *predWatch) stop() {
	if w != nil {
		w.cancel()
	}
}

// waitDelete returns true when the key was deleted, false when the watch
// started after revision g (where the key was last seen), so that a deletion
// in between could have been missed, and an error when the watch, ctx or the
// session ended.
func (w *predWatch) waitDelete(ctx context.Context, sessionDone <-chan struct{}, g int64) (bool, error) {
	if w.created > g {
		return false, nil
	}
	for {
		select {
		case <-ctx.Done():
			return false, ctx.Err()
		case <-sessionDone:
			return false, ErrSessionLost
		case wr, ok := <-w.ch:
			if !ok {
				if err := ctx.Err(); err != nil {
					return false, err
				}
				return false, errors.New("watch closed")
			}
			if err := wr.Err(); err != nil {
				return false, err
			}
			if wr.Created {
				w.created = wr.Header.Revision
				if w.created > g {
					return false, nil
				}
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE {
					return true, nil
				}
			}
		}
	}
}

// dequeue removes our queue key after a failed or abandoned attempt, and
// lockinfo when it is under our lease: a holder may have handed the lock over
// to us just before we gave up.
func (l *ModelLock) dequeue(ctx context.Context, rev int64) {
	l.cleanup(ctx, "remove queue key", []clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(l.key), "=", rev)},
		clientv3.OpDelete(l.key), clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(l.infoKey), "=", l.s.Lease())},
			[]clientv3.Op{clientv3.OpDelete(l.infoKey)}, nil))
}

// describeHolder reads who holds the lock, for an error message.
func (l *ModelLock) describeHolder(ctx context.Context) string {
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.s.TTL())
	defer cancel()
	resp, err := l.s.cli.Txn(cctx).Then(clientv3.OpGet(l.pfx, clientv3.WithFirstCreate()...), clientv3.OpGet(l.infoKey)).Commit()
	if err != nil {
		return fmt.Sprintf("holder unknown (%v)", err)
	}
	return describeHolder(firstKV(resp.Responses[0].GetResponseRange().Kvs), firstKV(resp.Responses[1].GetResponseRange().Kvs))
}

// describeHolder names the holder whose queue key is owner, using lockinfo
// when it describes that key.
func describeHolder(owner, info *mvccpb.KeyValue) string {
	if owner == nil {
		return "no holder any more"
	}
	e := lockEntryOf(owner, info)
	if e.ID == "" {
		return fmt.Sprintf("held by key %s (fence %d; no holder record: a plain etcd lock?)", e.Key, e.Rev)
	}
	return fmt.Sprintf("held by %s on %s since %s (key %s, fence %d)", e.ID, e.Host, e.Since.Format(time.RFC3339), e.Key, e.Rev)
}
