// The monitor of a hold: a goroutine that watches the lock key and ends the
// hold when the key is deleted or the session lost.

package coord

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// monitorGroup is the lock monitors of one session: Session.Close returns
// only after every one has stopped, so that no monitor outlives the session
// (or reads a client that is being closed), whatever the order in which the
// holder unlocks and closes.
type monitorGroup struct {
	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup
}

// start runs f in a goroutine of the group; false once the group is closed.
func (g *monitorGroup) start(f func()) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		f()
	}()
	return true
}

// closeAndWait starts no more monitors and waits for those running; the
// session's Done must be closed first, which ends them.
func (g *monitorGroup) closeAndWait() {
	g.mu.Lock()
	g.closed = true
	g.mu.Unlock()
	g.wg.Wait()
}

// startMonitor starts watching hold h unless a monitor runs, Unlock is under
// way or the hold ended. The monitor belongs to the hold: it ends with it
// (Unlock stops it, a loss ends it) and with the session (Close waits for it).
func (l *ModelLock) startMonitor(h *lockHold) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.cancel != nil || h.releasing || h.err != nil {
		return
	}
	ctx, cancel := context.WithCancel(clientv3.WithRequireLeader(context.Background()))
	stopped := make(chan struct{})
	if !l.s.monitors.start(func() { l.monitor(ctx, h, stopped) }) {
		cancel() // the session is closed: checkSession ends the hold
		return
	}
	h.cancel, h.stopped = cancel, stopped
}

// stopMonitor marks h as being released and stops its monitor, if any.
func (l *ModelLock) stopMonitor(h *lockHold) {
	h.mu.Lock()
	h.releasing = true
	cancel, stopped := h.cancel, h.stopped
	h.cancel = nil
	h.mu.Unlock()
	if cancel == nil {
		return
	}
	cancel()
	<-stopped
}

// monitor ends the hold when the session is lost or the lock key deleted. It
// watches the key from the revision after the lock was taken (a watch that
// breaks resumes where it stopped; one whose revision was compacted reads the
// key first). It returns when ctx is cancelled (Unlock), the session ends or
// the hold ended.
func (l *ModelLock) monitor(ctx context.Context, h *lockHold, stopped chan struct{}) {
	defer close(stopped)
	ctx, cancel := l.withSession(ctx)
	defer cancel()
	lost := func(err error) error { return fmt.Errorf("%w: model %q: %w", ErrLockLost, l.model, err) }
	w := &resumableWatch{
		cli: l.s.cli, lg: l.lg, what: "lock key", key: h.fence.Key,
		list: func(ctx context.Context) (int64, error) {
			gctx, gcancel := context.WithTimeout(ctx, l.s.TTL())
			defer gcancel()
			resp, err := l.s.cli.Get(gctx, h.fence.Key)
			if err != nil {
				return 0, err
			}
			if kv := firstKV(resp.Kvs); kv == nil || kv.CreateRevision != h.fence.Rev {
				return 0, &watchHandlerError{lost(fmt.Errorf("%w (found missing after a watch error)", errKeyDeleted))}
			}
			return resp.Header.Revision, nil
		},
		events: func(evs []*clientv3.Event) error {
			for _, ev := range evs {
				if ev.Type == mvccpb.DELETE || ev.Kv.CreateRevision != h.fence.Rev {
					return lost(errKeyDeleted)
				}
			}
			return nil
		},
	}
	err := w.run(ctx, h.at+1)
	if serr := l.s.Err(); serr != nil && !errors.Is(err, errKeyDeleted) {
		err = lost(serr)
	} else if !errors.Is(err, ErrLockLost) {
		return // stopped by Unlock
	}
	h.end(err)
	l.lg.Warn("model lock lost", zap.String("key", h.fence.Key), zap.Int64("fence", h.fence.Rev), zap.Error(err))
	if errors.Is(err, errKeyDeleted) {
		l.dropStaleInfo()
	}
}

var errReleased = fmt.Errorf("%w: released by Unlock", ErrNotLocked)

var errKeyDeleted = errors.New("lock key deleted (broken by an admin, or the lease revoked)")

// dropStaleInfo deletes lockinfo/<model> when it is still ours after our key
// was deleted by someone else, so that nobody is sent to a holder that lost
// the lock. Our key being absent means this session holds nothing of the
// model, so a record under our lease is stale. The monitor calls it as it
// returns: Unlock stopping the monitor does not cut it short, and the end of
// the session does (Session.Close waits for the monitor).
func (l *ModelLock) dropStaleInfo() {
	ctx, cancel := l.withSession(context.Background())
	defer cancel()
	ctx, tcancel := context.WithTimeout(ctx, l.s.TTL())
	defer tcancel()
	_, err := l.s.cli.Txn(ctx).If(
		clientv3.Compare(clientv3.LeaseValue(l.infoKey), "=", l.s.Lease()),
		clientv3.Compare(clientv3.CreateRevision(l.key), "=", 0),
	).Then(clientv3.OpDelete(l.infoKey)).Commit()
	if err != nil && l.s.Err() == nil {
		l.lg.Warn("could not remove stale lock info", zap.String("key", l.key), zap.Error(err))
	}
}
