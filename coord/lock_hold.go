// One hold of a model lock, from Lock until Unlock or loss, and what callers
// read of it (Lost, Err, Fence).

package coord

import (
	"context"
	"fmt"
	"sync"
)

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
	cancel    context.CancelFunc // stops the monitor; nil when none runs
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
// The hold's monitor, started when the lock was taken, watches the lock key
// from the revision the lock was taken at, so no deletion is missed however
// late Lost is called.
func (l *ModelLock) Lost() <-chan struct{} {
	l.mu.Lock()
	h, cur := l.last, l.cur
	l.mu.Unlock()
	if h == nil {
		return closedChan
	}
	if h == cur {
		l.checkSession(h)
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
