package node

// This file is the warm copy: the standby's processor, kept current from the
// model's log so that a take-over only catches up instead of loading.

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// warmCopy is the standby's processor: loaded from etcd when the node starts
// waiting for the lock, then kept current by replaying the model's log from
// a watch, so a take-over only has to catch up, not load everything.
type warmCopy struct {
	e      *engine
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	proc   *processor.Processor // nil until loaded
	rev    int64                // every change up to rev is in proc
	next   uint64               // the log sequence number after what proc holds
	moved  chan struct{}        // closed and replaced when rev moves
	broken bool                 // proc is not current; load again
}

// follow starts keeping a warm copy of the model until stop.
func (e *engine) follow(ctx context.Context) *warmCopy {
	ctx, cancel := context.WithCancel(ctx)
	w := &warmCopy{e: e, cancel: cancel, done: make(chan struct{}), moved: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			err := w.loadAndFollow(ctx)
			w.mu.Lock()
			w.broken = true
			w.mu.Unlock()
			if ctx.Err() == nil {
				e.lg.Debug("warm copy reloads", zap.Error(err))
				if !errors.Is(err, kb.ErrCompacted) && !errors.Is(err, kb.ErrReplaced) && !sleep(ctx, time.Second) {
					return
				}
			}
		}
	}()
	return w
}

// loadAndFollow loads the model, then replays its log until an error. A
// revision counts only once all of its changes applied: until then the copy
// stays at the revision before, and a revision that cannot be replayed marks
// the copy broken before anything can take it.
func (w *warmCopy) loadAndFollow(ctx context.Context) error {
	e := w.e
	p, st, err := e.load(ctx)
	if err != nil {
		return err
	}
	w.advance(p, st.Rev, st.NextSeq, false)
	return kb.Follow(ctx, e.cli, e.model, st, func(rev int64, next uint64, chs processor.Changes) error {
		if len(chs) > 0 {
			if err := p.Replay(chs); err != nil {
				w.mu.Lock()
				w.broken = true
				w.mu.Unlock()
				return err // load again
			}
		}
		w.advance(p, rev, next, true)
		return nil
	})
}

// advance records that p holds every change up to rev.
func (w *warmCopy) advance(p *processor.Processor, rev int64, next uint64, sameProc bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !sameProc {
		w.proc, w.broken = p, false
	}
	w.next = next
	if rev > w.rev || !sameProc {
		w.rev = rev
		close(w.moved)
		w.moved = make(chan struct{})
	}
}

// take stops following and returns the processor once it holds every change
// up to rev (asking etcd for progress), with the log sequence number to
// continue from, or nil when it cannot get there within wait: the caller
// loads the model instead. metaRev is the mod revision of the model's meta
// key (0 if there is none): every model transaction rewrites it, so a copy
// that has seen metaRev has seen them all.
func (w *warmCopy) take(ctx context.Context, rev, metaRev int64, wait time.Duration) (*processor.Processor, uint64) {
	defer w.stop()
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	// A progress request reaches only watches already open, and the copy's
	// watch may not be yet: ask again until the copy has caught up.
	ask := time.NewTicker(100 * time.Millisecond)
	defer ask.Stop()
	for {
		w.mu.Lock()
		p, have, next, broken, moved := w.proc, w.rev, w.next, w.broken, w.moved
		w.mu.Unlock()
		if p != nil && !broken && (have >= rev || metaRev > 0 && have >= metaRev) {
			return p, next
		}
		if p != nil && !broken {
			if err := kb.RequestProgress(ctx, w.e.cli); err != nil && ctx.Err() == nil {
				w.e.lg.Debug("cannot ask etcd for the warm copy's progress", zap.Error(err))
			}
		}
		select {
		case <-moved:
		case <-ask.C:
		case <-timeout.C:
			return nil, 0
		case <-ctx.Done():
			return nil, 0
		}
	}
}

func (w *warmCopy) stop() {
	w.cancel()
	<-w.done
}
