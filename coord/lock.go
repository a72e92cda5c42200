package coord

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
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
	// TryLock reads (our key, the holder and lockinfo), and the JSON values up
	// to their time field.
	absent, emptyQueue  clientv3.Cmp
	predRead, keyRead   clientv3.Op
	holderReads         []clientv3.Op
	entryHead, infoHead []byte

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
	l.entryHead = jsonHead(queueEntry{V: SchemaVersion, ID: l.id, Host: l.host, Token: l.token})
	l.infoHead = jsonHead(holderRecord{V: SchemaVersion, ID: l.id, Host: l.host, Key: l.key})
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

// lockHold is one acquisition, from Lock until Unlock or loss.
type lockHold struct {
	fence Fence
	at    int64         // revision the hold was confirmed at
	next  *successor    // the waiter Unlock hands over to; nil if none is known
	lost  chan struct{} // closed when the hold ends
	once  sync.Once

	mu        sync.Mutex
	err       error              // why the hold ended
	releasing bool               // Unlock under way: start no monitor
	cancel    context.CancelFunc // stops the monitor; nil until Lost starts it
	stopped   chan struct{}      // closed when the monitor returns
}

func (h *lockHold) end(err error) {
	h.once.Do(func() {
		h.mu.Lock()
		h.err = err
		h.mu.Unlock()
		close(h.lost)
	})
}

func (h *lockHold) ended() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.err
}

// closedChan is returned by Lost when nothing was ever held.
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// Lost returns a channel that is closed when the current hold ends: the lock
// was lost (session lost, or lock key deleted) or released by Unlock. Call it
// after Lock or TryLock succeeded; the channel belongs to that acquisition.
// Before the first acquisition the channel is already closed.
//
// The first call for a hold starts watching the lock key, from the revision
// the lock was taken at, so no deletion is missed however late Lost is called;
// a hold nobody asks about costs no watch.
func (l *ModelLock) Lost() <-chan struct{} {
	l.mu.Lock()
	h, cur := l.last, l.cur
	l.mu.Unlock()
	if h == nil {
		return closedChan
	}
	if h == cur {
		l.checkSession(h)
		l.startMonitor(h)
	}
	return h.lost
}

// Err returns nil while the lock is held. Once the last hold ended it returns
// why: ErrLockLost wrapped with the cause, or ErrNotLocked after Unlock (or
// before the first acquisition).
func (l *ModelLock) Err() error {
	l.mu.Lock()
	h := l.last
	l.mu.Unlock()
	if h == nil {
		return fmt.Errorf("%w: model %q was never locked here", ErrNotLocked, l.model)
	}
	l.checkSession(h)
	return h.ended()
}

// Fence returns the fence of the current hold and whether the lock is held
// (as far as this process knows: writes still have to be fenced).
func (l *ModelLock) Fence() (Fence, bool) {
	l.mu.Lock()
	h := l.cur
	l.mu.Unlock()
	if h == nil {
		return Fence{}, false
	}
	l.checkSession(h)
	if h.ended() != nil {
		return Fence{}, false
	}
	return h.fence, true
}

// checkSession ends hold h when the session is lost, whether or not a monitor
// runs.
func (l *ModelLock) checkSession(h *lockHold) {
	if serr := l.s.Err(); serr != nil {
		h.end(fmt.Errorf("%w: model %q: %w", ErrLockLost, l.model, serr))
	}
}

// queueEntry is the value of a queue key written by a ModelLock. A plain
// concurrency.Mutex writes an empty value.
type queueEntry struct {
	V     int       `json:"v"`
	ID    string    `json:"id"`
	Host  string    `json:"host"`
	Token string    `json:"token"`
	Since time.Time `json:"since,omitzero"` // when the key was created (queued)
}

// holderRecord is the value of lockinfo/<model>.
type holderRecord struct {
	V    int    `json:"v"`
	ID   string `json:"id"`
	Host string `json:"host"`
	Key  string `json:"key"`
	// Rev is the fencing revision. It is left out when the record was written
	// in the same transaction that created the lock key (uncontended Lock):
	// then it is the record's mod revision.
	Rev   int64     `json:"rev,omitempty"`
	Since time.Time `json:"since,omitzero"` // when the lock was taken
}

// jsonHead encodes v, whose last fields are zero and left out, without its
// closing brace: the values are written by appending the fields that change
// (cheaper than encoding them whole on every Lock).
func jsonHead(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // strings and numbers only
	}
	return b[:len(b)-1]
}

// appendSince closes a value begun by jsonHead with its "since" field.
func appendSince(b []byte, t time.Time) string {
	b = append(b, `,"since":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return string(append(b, `"}`...))
}

func (l *ModelLock) queueValue() string {
	return appendSince(slices.Clip(l.entryHead), time.Now())
}

func (l *ModelLock) holderValue(rev int64) string {
	b := slices.Clip(l.infoHead)
	if rev != 0 {
		b = append(b, `,"rev":`...)
		b = strconv.AppendInt(b, rev, 10)
	}
	return appendSince(b, time.Now())
}

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
		retry msgBackoff
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
		return retry.wait(ctx)
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
				if err := retry.wait(ctx); err != nil {
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
	var r holderRecord
	return json.Unmarshal(info.Value, &r) == nil && r.Key == l.key && r.Rev == rev
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

// info is the lockinfo record of the successor as the holder it becomes.
func (n *successor) info() string {
	b, err := json.Marshal(holderRecord{V: SchemaVersion, ID: n.entry.ID, Host: n.entry.Host, Key: n.key, Rev: n.rev, Since: time.Now().UTC()})
	if err != nil {
		panic(err) // strings and numbers only
	}
	return string(b)
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

// acquired records a new hold, confirmed at revision at.
func (l *ModelLock) acquired(rev, at int64, next *successor) Fence {
	h := &lockHold{fence: Fence{Key: l.key, Rev: rev}, at: at, next: next, lost: make(chan struct{})}
	l.mu.Lock()
	l.cur, l.last = h, h
	l.mu.Unlock()
	l.lg.Debug("model lock taken", zap.String("key", l.key), zap.Int64("fence", rev))
	return h.fence
}

// startMonitor starts watching hold h unless a monitor runs, Unlock is under
// way or the hold ended.
func (l *ModelLock) startMonitor(h *lockHold) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel != nil || h.releasing || h.err != nil {
		return
	}
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	h.cancel = cancel
	h.stopped = make(chan struct{})
	go l.monitor(ctx, h)
}

// stopMonitor marks h as being released and stops its monitor, if any. It
// reports whether a monitor ran.
func (l *ModelLock) stopMonitor(h *lockHold) bool {
	h.mu.Lock()
	h.releasing = true
	cancel, stopped := h.cancel, h.stopped
	h.cancel = nil
	h.mu.Unlock()
	if cancel == nil {
		return false
	}
	cancel()
	<-stopped
	return true
}

// monitor ends the hold when the session is lost or the lock key deleted. It
// watches the key from the revision after the lock was taken and, when the
// watch breaks, checks the key and watches again. It returns when ctx is
// cancelled (Unlock) or the hold ended.
func (l *ModelLock) monitor(ctx context.Context, h *lockHold) {
	defer close(h.stopped)
	ctx, cancel := l.withSession(ctx)
	defer cancel()
	next := h.at + 1
	var retry msgBackoff
	for {
		lost := l.follow(ctx, h, &next)
		if serr := l.s.Err(); lost == nil && serr != nil {
			lost = fmt.Errorf("%w: model %q: %w", ErrLockLost, l.model, serr)
		}
		if lost != nil {
			h.end(lost)
			l.lg.Warn("model lock lost", zap.String("key", h.fence.Key), zap.Int64("fence", h.fence.Rev), zap.Error(lost))
			if errors.Is(lost, errKeyDeleted) {
				l.dropStaleInfo()
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		if retry.wait(ctx) != nil {
			continue // ctx or session ended: the next round reports which
		}
		gctx, gcancel := context.WithTimeout(ctx, l.s.TTL())
		resp, err := l.s.cli.Get(gctx, h.fence.Key)
		gcancel()
		if err != nil {
			continue
		}
		if kv := firstKV(resp.Kvs); kv == nil || kv.CreateRevision != h.fence.Rev {
			h.end(fmt.Errorf("%w: model %q: %w (found missing after a watch error)", ErrLockLost, l.model, errKeyDeleted))
			l.dropStaleInfo()
			return
		}
		next = resp.Header.Revision + 1
		retry.reset()
	}
}

var errReleased = fmt.Errorf("%w: released by Unlock", ErrNotLocked)

var errKeyDeleted = errors.New("lock key deleted (broken by an admin, or the lease revoked)")

// follow watches the lock key from *next until the hold is lost (returned), or
// the watch breaks or ctx ends (nil).
func (l *ModelLock) follow(ctx context.Context, h *lockHold, next *int64) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := l.s.cli.Watch(wctx, h.fence.Key, clientv3.WithRev(*next))
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-l.s.Done():
			return fmt.Errorf("%w: model %q: %w", ErrLockLost, l.model, l.s.Err())
		case wr, ok := <-wch:
			if !ok || wr.Err() != nil {
				return nil
			}
			for _, ev := range wr.Events {
				if ev.Type == mvccpb.DELETE || ev.Kv.CreateRevision != h.fence.Rev {
					return fmt.Errorf("%w: model %q: %w", ErrLockLost, l.model, errKeyDeleted)
				}
				*next = ev.Kv.ModRevision + 1
			}
		}
	}
}

// dropStaleInfo deletes lockinfo/<model> when it is still ours after our key
// was deleted by someone else, so that nobody is sent to a holder that lost
// the lock. Our key being absent means this session holds nothing of the
// model, so a record under our lease is stale.
func (l *ModelLock) dropStaleInfo() {
	l.cleanup(context.Background(), "remove stale lock info", []clientv3.Cmp{
		clientv3.Compare(clientv3.LeaseValue(l.infoKey), "=", l.s.Lease()),
		clientv3.Compare(clientv3.CreateRevision(l.key), "=", 0),
	}, clientv3.OpDelete(l.infoKey))
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
	watched := l.stopMonitor(h)
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
		if watched {
			l.startMonitor(h)
		}
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

// LockEntry is one key of a model's lock queue.
type LockEntry struct {
	Key   string `json:"key"`
	Rev   int64  `json:"rev"`   // create revision: the holder's fencing token
	Lease string `json:"lease"` // hex, as in the key
	// ID and Host name the process (empty for a plain concurrency.Mutex or
	// etcdctl lock). Since is when the holder took the lock (from lockinfo),
	// or when a waiter queued.
	ID    string    `json:"id,omitempty"`
	Host  string    `json:"host,omitempty"`
	Since time.Time `json:"since,omitzero"`
}

// LockState is one model lock as stored in etcd: the holder and the waiters in
// queue order.
type LockState struct {
	Model   string      `json:"model"`
	Holder  LockEntry   `json:"holder"`
	Waiters []LockEntry `json:"waiters"`
}

// lockEntryOf describes queue key kv, with the holder record info when it
// belongs to kv.
func lockEntryOf(kv, info *mvccpb.KeyValue) LockEntry {
	e := LockEntry{Key: string(kv.Key), Rev: kv.CreateRevision, Lease: LeaseHex(clientv3.LeaseID(kv.Lease))}
	var q queueEntry
	if json.Unmarshal(kv.Value, &q) == nil {
		e.ID, e.Host, e.Since = q.ID, q.Host, q.Since
	}
	if info == nil {
		return e
	}
	var r holderRecord
	if json.Unmarshal(info.Value, &r) != nil {
		return e
	}
	if r.Rev == 0 {
		r.Rev = info.ModRevision
	}
	if r.Key == e.Key && r.Rev == e.Rev {
		e.ID, e.Host, e.Since = r.ID, r.Host, r.Since
	}
	return e
}

// ListLocks returns every model lock that has a holder, by model name, and
// the revision it was read at.
func ListLocks(ctx context.Context, kv clientv3.KV) ([]LockState, int64, error) {
	return readLocks(ctx, kv, LocksPrefix(), LockInfoPrefix())
}

// GetLock returns the lock of one model, or ErrNotLocked when nobody holds it.
func GetLock(ctx context.Context, kv clientv3.KV, model string) (LockState, int64, error) {
	if err := CheckID(model); err != nil {
		return LockState{}, 0, fmt.Errorf("coord: model name: %w", err)
	}
	locks, rev, err := readLocks(ctx, kv, LockPrefix(model), LockInfoKey(model))
	if err != nil {
		return LockState{}, rev, err
	}
	if len(locks) == 0 {
		return LockState{}, rev, fmt.Errorf("%w: model %q has no lock key", ErrNotLocked, model)
	}
	return locks[0], rev, nil
}

// readLocks reads the queue keys under pfx and the holder records under
// infoPfx in one transaction.
func readLocks(ctx context.Context, kv clientv3.KV, pfx, infoPfx string) ([]LockState, int64, error) {
	resp, err := kv.Txn(ctx).Then(
		clientv3.OpGet(pfx, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)),
		clientv3.OpGet(infoPfx, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("coord: read locks under %s: %w", pfx, err)
	}
	infos := map[string]*mvccpb.KeyValue{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		infos[string(kv.Key)[len(lockInfoDir):]] = kv
	}
	var (
		locks []LockState
		index = map[string]int{}
	)
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		model, ok := lockModel(string(kv.Key))
		if !ok {
			continue
		}
		i, seen := index[model]
		if !seen {
			index[model] = len(locks)
			locks = append(locks, LockState{Model: model, Holder: lockEntryOf(kv, infos[model]), Waiters: []LockEntry{}})
			continue
		}
		locks[i].Waiters = append(locks[i].Waiters, lockEntryOf(kv, nil))
	}
	sort.Slice(locks, func(a, b int) bool { return locks[a].Model < locks[b].Model })
	return locks, resp.Header.Revision, nil
}

// lockModel returns the model of queue key locks/models/<model>/<lease-hex>.
func lockModel(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, locksDir)
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 || i == len(rest)-1 {
		return "", false
	}
	return rest[:i], true
}

// BreakLock removes the lock key of a model's holder, as an admin does when a
// holder is stuck: its fenced writes fail from then on, its Lost channel is
// closed, and the next waiter takes the lock. lockinfo/<model> goes in the same
// transaction when it belongs to that holder. It returns the lock as it was
// read (Holder is the entry removed, Waiters[0] the next holder, if any), and
// ErrNotLocked when nobody holds the model. It never removes a holder other
// than the one it read: if the lock changed hands in between, it fails.
func BreakLock(ctx context.Context, kv clientv3.KV, model string) (LockState, error) {
	st, _, err := GetLock(ctx, kv, model)
	if err != nil {
		return st, err
	}
	h := st.Holder
	lease, err := strconv.ParseInt(h.Lease, 16, 64)
	if err != nil {
		return st, fmt.Errorf("coord: model %q: lock key %s: lease %q: %w", model, h.Key, h.Lease, err)
	}
	info := LockInfoKey(model)
	resp, err := kv.Txn(ctx).
		If(Fence{Key: h.Key, Rev: h.Rev}.Cmp()).
		Then(clientv3.OpDelete(h.Key), clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(info), "=", lease)},
			[]clientv3.Op{clientv3.OpDelete(info)}, nil)).
		Commit()
	if err != nil {
		return st, fmt.Errorf("coord: model %q: break lock key %s: %w", model, h.Key, err)
	}
	if !resp.Succeeded {
		return st, fmt.Errorf("coord: model %q: lock key %s (fence %d) went away before it could be broken; nothing removed", model, h.Key, h.Rev)
	}
	return st, nil
}
