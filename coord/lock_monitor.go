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
// watches the key from the revision after the lock was taken and, when the
// watch breaks, checks the key and watches again. It returns when ctx is
// cancelled (Unlock) or the hold ended.
func (l *ModelLock) monitor(ctx context.Context, h *lockHold, stopped chan struct{}) {
	defer close(stopped)
	ctx, cancel := l.withSession(ctx)
	defer cancel()
	next := h.at + 1
	var retry Backoff
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
		if retry.Wait(ctx) != nil {
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
		retry.Reset()
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
