package node

// This file is an epoch's life around the model lock: standby with a warm
// copy, take the lock, serve while holding it, release it when lost.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// standbyAndRun waits for the model lock while keeping a warm copy of the
// model, then serves until the session or lock is lost or a stop is asked.
// A lock lost while the session lives (broken by an admin) goes back to
// standby within the same session.
func (ep *epoch) standbyAndRun() error {
	n, ctx, s := ep.n, ep.ctx, ep.s
	for {
		if err := ep.setStatus(ctx, coord.StatusStandby); err != nil && s.Err() != nil {
			return s.Err()
		}
		warm := n.engine.follow(ctx)
		fence, err := ep.acquire()
		if err != nil {
			warm.stop()
			if errors.Is(err, errStop) || errors.Is(err, errLockTimeout) || errors.Is(err, coord.ErrLockInUse) || s.Err() != nil {
				return err
			}
			// etcd did not answer (an election, a member cut off): wait as standby again.
			n.lg.Warn("cannot take the model lock; retrying", zap.Error(err))
			if err := ep.pause(); err != nil {
				return err
			}
			continue
		}
		n.lg.Info("model lock acquired", zap.String("model", n.cfg.Model), zap.Int64("fence", fence.Rev))
		if err := n.engine.activate(ctx, ep.lock, warm, fence); err != nil {
			// A read that etcd did not answer, or a record that does not load:
			// give the lock up (another node may do better) and try again.
			n.lg.Error("cannot load the model; releasing the lock and retrying", zap.Error(err))
			if err := ep.release(); err != nil {
				return err
			}
			if err := ep.pause(); err != nil {
				return err
			}
			continue
		}
		n.m.LockHeld.Set(1)
		n.m.LockAcquisitions.Inc()
		n.setReady(true)
		ep.setStatus(ctx, coord.StatusRunning)

		why := ep.serve(fence)
		n.setReady(false)
		n.m.LockHeld.Set(0)
		if errors.Is(why, errStop) {
			return errStop
		}
		n.engine.deactivate()
		n.m.LockLosses.Inc()
		if s.Err() != nil {
			return s.Err()
		}
		n.lg.Warn("model lock lost; back to standby", zap.Error(why))
		if err := ep.release(); err != nil {
			return err
		}
	}
}

// serve runs while the node holds the lock and returns why it stops. A model
// write that failed for any reason but the lock (etcd refused it, its outcome
// is unknown) costs no lock: the node reloads the model from etcd under the
// same lock, then serves writes again (PROCESSOR.md D14).
func (ep *epoch) serve(fence coord.Fence) error {
	n, lock := ep.n, ep.lock
	for {
		select {
		case <-n.stopCh:
			return errStop
		case <-ep.s.Done():
			return ep.s.Err()
		case <-lock.Lost():
			return lock.Err()
		case <-n.engine.failed():
		}
		// A write that failed on the fence ended the hold before it returned.
		if err := lock.Err(); err != nil {
			return err
		}
		n.lg.Warn("a model write failed; reloading the model under the same lock", zap.String("model", n.cfg.Model))
		n.setReady(false)
		n.engine.deactivate()
		if err := n.engine.activate(ep.ctx, lock, nil, fence); err != nil {
			return fmt.Errorf("reload after a failed write: %w", err)
		}
		n.setReady(true)
	}
}

// release drops what is left of a hold (lockinfo, queue key) after the lock
// or a write was lost. While etcd does not answer (a member cut off, an
// election) the hold is kept, and the lock cannot be taken again until it is
// released: it retries until it is, or the session ends.
func (ep *epoch) release() error {
	for {
		uctx, cancel := context.WithTimeout(ep.ctx, 5*time.Second)
		err := ep.lock.Unlock(uctx)
		cancel()
		if err == nil || errors.Is(err, coord.ErrLockLost) || errors.Is(err, coord.ErrNotLocked) {
			return nil
		}
		ep.n.lg.Warn("cannot release the model lock; retrying", zap.Error(err))
		if err := ep.pause(); err != nil {
			return err
		}
	}
}

// pause waits a second before a retry; it returns why not to retry.
func (ep *epoch) pause() error {
	return ep.n.sleep(ep.ctx, ep.s, time.Second)
}

// acquire waits for the lock, bounded by the lock timeout, the session and
// stop requests.
func (ep *epoch) acquire() (coord.Fence, error) {
	n, s := ep.n, ep.s
	lctx, cancel := context.WithCancel(ep.ctx)
	defer cancel()
	if n.cfg.LockTimeout > 0 {
		lctx, cancel = context.WithTimeout(lctx, n.cfg.LockTimeout)
		defer cancel()
	}
	go func() { // ends with lctx at the latest
		select {
		case <-n.stopCh:
			cancel()
		case <-s.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	start := time.Now()
	fence, err := ep.lock.Lock(lctx)
	if err == nil {
		n.m.LockWait.Observe(time.Since(start).Seconds())
		return fence, nil
	}
	switch {
	case n.stopping():
		return fence, errStop
	case s.Err() != nil:
		return fence, s.Err()
	case n.cfg.LockTimeout > 0 && errors.Is(lctx.Err(), context.DeadlineExceeded):
		return fence, fmt.Errorf("%w: model %q: no lock after --lock-timeout %v: %w", errLockTimeout, n.cfg.Model, n.cfg.LockTimeout, err)
	}
	return fence, err
}
