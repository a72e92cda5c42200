// The model lock: its type and options, taking it (Lock, TryLock) and
// releasing it (Unlock), with the hand-over to the next waiter.

package coord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"sync"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// ModelLock is the lock on one model, on the process Session. A model may be
// written by one holder at a time.
//
// The keys follow etcd's concurrency.Mutex protocol: each contender puts
// locks/models/<model>/<lease-hex> under its session lease, and the key with
// the smallest create revision holds the lock. A concurrency.Mutex (or
// `etcdctl lock`) on prefix "locks/models/<model>" below the same root excludes
// a ModelLock and the other way round. Waiters queue in the order their keys
// were created and each waits for the deletion of its direct predecessor only.
//
// A lease-based lock alone is not safe: a holder that is paused or cut off can
// outlive its lease and go on writing. Writes made under the lock must
// therefore go through Txn (or Fence.Txn), whose transaction only applies while
// the lock key still exists with the create revision it had when the lock was
// taken (the fencing token, Fence.Rev).
//
// lockinfo/<model> (holder id, host, since, fencing revision) is written in
// the transaction that confirms ownership, under the holder's session lease:
// the holder's own, or the previous holder's Unlock. A holder that knows the
// ModelLock waiting right after it (it read it when it took the lock) hands
// the lock over: one transaction deletes its key and writes the successor's
// lockinfo under the successor's lease, and the successor finds itself the
// holder with a read. A contended hand-off thus costs one write, as it does
// for concurrency.Mutex. Otherwise Unlock deletes lockinfo with the key.
//
// Lock, TryLock and Unlock must not be called concurrently on one ModelLock;
// Lost, Err, Fence and Txn may be called from any goroutine.
type ModelLock struct {
	s       *Session
	model   string
	pfx     string // LockPrefix(model)
	key     string // pfx + lease hex
	infoKey string
	id      string
	host    string
	token   string // marks queue keys written by this ModelLock
	lg      *zap.Logger
	err     error // invalid model name

	// Parts of the enqueue transactions that never change: what Lock reads
	// to join the queue (the predecessor, or our key if it exists), what
	// TryLock reads (our key, the holder and lockinfo).
	absent, emptyQueue clientv3.Cmp
	predRead, keyRead  clientv3.Op
	holderReads        []clientv3.Op

	// busy is whether the last Lock or TryLock found the queue taken (see
	// enqueue); only they use it.
	busy bool

	mu        sync.Mutex
	acquiring bool
	cur       *lockHold // the current hold, nil when not held
	last      *lockHold // the most recent hold, ended or not
}

type lockOptions struct {
	id, host string
	lg       *zap.Logger
}

// LockOption configures a ModelLock.
type LockOption func(*lockOptions)

// WithHolder sets the holder id and host recorded in lockinfo/<model> and in
// the queue key (defaults: "pid-<pid>" and the host name).
func WithHolder(id, host string) LockOption {
	return func(o *lockOptions) {
		if id != "" {
			o.id = id
		}
		if host != "" {
			o.host = host
		}
	}
}

// WithLockLogger sets the logger (default: the session's logger).
func WithLockLogger(lg *zap.Logger) LockOption {
	return func(o *lockOptions) { o.lg = lg }
}

// NewModelLock returns the lock of model on session s. An invalid model name
// is reported by Lock and TryLock.
func NewModelLock(s *Session, model string, opts ...LockOption) *ModelLock {
	o := lockOptions{id: fmt.Sprintf("pid-%d", os.Getpid()), host: Hostname(), lg: s.lg}
	for _, opt := range opts {
		opt(&o)
	}
	if o.lg == nil {
		o.lg = zap.NewNop()
	}
	var tok [8]byte
	_, _ = rand.Read(tok[:])
	l := &ModelLock{
		s:       s,
		model:   model,
		pfx:     LockPrefix(model),
		key:     LockPrefix(model) + LeaseHex(s.Lease()),
		infoKey: LockInfoKey(model),
		id:      o.id,
		host:    o.host,
		token:   hex.EncodeToString(tok[:]),
		lg:      o.lg.Named("lock").With(zap.String("model", model)),
	}
	l.absent = clientv3.Compare(clientv3.CreateRevision(l.key), "=", 0)
	l.emptyQueue = clientv3.Compare(clientv3.CreateRevision(l.pfx), "=", 0).WithPrefix()
	l.predRead = clientv3.OpGet(l.pfx, clientv3.WithLastCreate()...)
	l.keyRead = clientv3.OpGet(l.key)
	l.holderReads = []clientv3.Op{l.keyRead, clientv3.OpGet(l.pfx, clientv3.WithFirstCreate()...), clientv3.OpGet(l.infoKey)}
	if err := CheckID(model); err != nil {
		l.err = fmt.Errorf("coord: model name: %w", err)
	}
	return l
}

// Model returns the model name.
func (l *ModelLock) Model() string { return l.model }

// Key returns the lock key this ModelLock queues with.
func (l *ModelLock) Key() string { return l.key }

// Fence is a held lock: the lock key and its create revision, which is the
// fencing token. Tokens of successive holders of one model increase.
type Fence struct {
	Key string
	Rev int64
}

// Cmp is true while the lock key still exists with the create revision it had
// when the lock was taken; put it in the If of every write made under the lock.
func (f Fence) Cmp() clientv3.Cmp {
	return clientv3.Compare(clientv3.CreateRevision(f.Key), "=", f.Rev)
}

// IsZero reports whether f is the zero Fence (no lock).
func (f Fence) IsZero() bool { return f.Key == "" && f.Rev == 0 }

// begin checks that an acquisition may start and marks it in progress.
func (l *ModelLock) begin() error {
	if l.err != nil {
		return l.err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.acquiring {
		return fmt.Errorf("coord: model lock %q: Lock or TryLock already in progress", l.model)
	}
	if h := l.cur; h != nil {
		l.checkSession(h)
		if h.ended() == nil {
			return fmt.Errorf("coord: model lock %q: already held by this ModelLock (fence %d)", l.model, h.fence.Rev)
		}
		// The hold was lost: a new one may start without Unlock.
		l.stopMonitor(h)
		l.cur = nil
	}
	select {
	case <-l.s.Done():
		return fmt.Errorf("coord: model lock %q: %w", l.model, l.s.Err())
	default:
	}
	l.acquiring = true
	return nil
}

func (l *ModelLock) done() {
	l.mu.Lock()
	l.acquiring = false
	l.mu.Unlock()
}

// Lock waits until the lock is held and returns its fence. ctx bounds the
// wait: when it ends first, the error wraps both ErrLocked (naming the holder)
// and ctx.Err(), and this process's queue key is removed. Lock fails at once
// when the session is lost, and with ErrLockLost when the queue key is deleted
// while waiting.
func (l *ModelLock) Lock(ctx context.Context) (Fence, error) { return l.acquire(ctx, true) }

// TryLock takes the lock if nobody holds it and returns ErrLocked, naming the
// holder, at once otherwise.
func (l *ModelLock) TryLock(ctx context.Context) (Fence, error) { return l.acquire(ctx, false) }

func (l *ModelLock) acquire(ctx context.Context, wait bool) (Fence, error) {
	if err := l.begin(); err != nil {
		return Fence{}, err
	}
	defer l.done()
	q, err := l.enqueue(ctx, wait)
	if err != nil {
		return Fence{}, err
	}
	if q.owned {
		return l.acquired(q.rev, q.at, nil), nil
	}
	if !wait {
		return Fence{}, fmt.Errorf("%w: model %q: %s", ErrLocked, l.model, describeHolder(q.owner, q.info))
	}
	at, next, err := l.waitTurn(ctx, q)
	if err != nil {
		l.dequeue(ctx, q.rev)
		if ctx.Err() != nil {
			return Fence{}, fmt.Errorf("%w: model %q: %s; gave up waiting: %w", ErrLocked, l.model, l.describeHolder(ctx), err)
		}
		return Fence{}, err
	}
	return l.acquired(q.rev, at, next), nil
}

// acquired records a new hold, confirmed at revision at.
func (l *ModelLock) acquired(rev, at int64, next *successor) Fence {
	h := &lockHold{fence: Fence{Key: l.key, Rev: rev}, at: at, next: next, lost: make(chan struct{})}
	l.mu.Lock()
	l.cur, l.last = h, h
	l.mu.Unlock()
	l.startMonitor(h)
	l.lg.Debug("model lock taken", zap.String("key", l.key), zap.Int64("fence", rev))
	return h.fence
}

// Unlock releases the lock: it deletes the lock key and lockinfo/<model> in
// one transaction fenced by the lock. It returns ErrLockLost when the lock had
// been lost before (the hold ends either way), and ErrNotLocked when nothing
// is held. When etcd cannot be reached the hold is kept and the error
// returned; call Unlock again or close the session.
func (l *ModelLock) Unlock(ctx context.Context) error {
	l.mu.Lock()
	h := l.cur
	l.mu.Unlock()
	if h == nil {
		return fmt.Errorf("%w: model %q", ErrNotLocked, l.model)
	}
	// Stop the monitor first so that it does not take our own delete for a loss.
	l.stopMonitor(h)
	end := func(err error) error {
		h.end(err)
		l.mu.Lock()
		l.cur = nil
		l.mu.Unlock()
		return err
	}
	l.checkSession(h)
	if lost := h.ended(); lost != nil {
		return end(lost)
	}
	released, err := l.release(ctx, h)
	switch {
	case err != nil:
		if serr := l.s.Err(); serr != nil {
			return end(fmt.Errorf("%w: model %q: %w", ErrLockLost, l.model, serr))
		}
		h.mu.Lock()
		h.releasing = false
		h.mu.Unlock()
		l.startMonitor(h)
		return fmt.Errorf("coord: model lock %q: release %s: %w", l.model, h.fence.Key, err)
	case !released:
		return end(fmt.Errorf("%w: model %q: %w", ErrLockLost, l.model, errKeyDeleted))
	}
	end(errReleased)
	l.lg.Debug("model lock released", zap.String("key", h.fence.Key), zap.Int64("fence", h.fence.Rev))
	return nil
}

// release deletes the lock key of hold h in a transaction fenced by it, and
// reports false when the key was gone. When the waiter after us is a ModelLock
// known since the hold began, the same transaction hands the lock over: it
// writes lockinfo for that waiter, under its lease, so that the waiter finds
// itself the holder with a read and writes nothing (see waitTurn). Otherwise,
// or when that waiter has left the queue, lockinfo is deleted with the key.
func (l *ModelLock) release(ctx context.Context, h *lockHold) (bool, error) {
	if n := h.next; n != nil {
		resp, err := l.s.cli.Txn(ctx).
			If(h.fence.Cmp(), clientv3.Compare(clientv3.CreateRevision(n.key), "=", n.rev)).
			Then(clientv3.OpDelete(h.fence.Key), clientv3.OpPut(l.infoKey, n.info(), clientv3.WithLease(n.lease))).
			Else(clientv3.OpGet(h.fence.Key)).
			Commit()
		if err != nil || resp.Succeeded {
			return err == nil, err
		}
		if kv := firstKV(resp.Responses[0].GetResponseRange().Kvs); kv == nil || kv.CreateRevision != h.fence.Rev {
			return false, nil
		}
		// The waiter left: release without handing over.
	}
	resp, err := l.s.cli.Txn(ctx).If(h.fence.Cmp()).Then(clientv3.OpDelete(h.fence.Key), clientv3.OpDelete(l.infoKey)).Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}
