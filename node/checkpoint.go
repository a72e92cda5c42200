package node

// This file is the holder's checkpointer: when the model's log has grown
// enough, it writes a snapshot of the model in the background and folds the
// log into it.

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// The steps of a checkpoint, in order, as Config.CheckpointStep is told them.
const (
	StepFrozen       = "frozen"        // the model frozen and the log marked; nothing written
	StepChunk        = "chunk"         // after each snapshot chunk written
	StepBeforeSwitch = "before-switch" // every chunk written, the head not yet switched
	StepSwitched     = "switched"      // the head names the new snapshot
)

// checkpointState is where the model's snapshot and log stood when the
// holder took the model.
type checkpointState struct {
	head     *kb.Head // nil: no snapshot yet
	legacy   bool     // records of the old layout: convert them now
	logFrom  uint64   // the first log entry after the snapshot
	logBytes int64    // log bytes after the snapshot, when known
}

// checkpointer writes snapshots of one activation's processor.
type checkpointer struct {
	e      *engine
	lg     *zap.Logger
	lock   *coord.ModelLock
	com    *kb.Committer
	meta   kb.Meta
	policy kb.Policy

	st      checkpointState
	written int64 // the committer's Written at st.logFrom, less st.logBytes
}

func (e *engine) newCheckpointer(lock *coord.ModelLock, com *kb.Committer, meta kb.Meta, st checkpointState) *checkpointer {
	return &checkpointer{e: e, lg: e.lg, lock: lock, com: com, meta: meta, policy: e.ckPolicy,
		st: st, written: -st.logBytes}
}

// due says whether the log has grown enough for a checkpoint.
func (c *checkpointer) due() bool {
	if c.st.legacy {
		return true
	}
	pos := c.com.Position()
	var records, bytes int64
	if h := c.st.head; h != nil {
		records, bytes = h.Patterns+h.Vectors, h.Bytes
	}
	return c.policy.Due(records, bytes, int64(pos.Seq-c.st.logFrom), pos.Written-c.written)
}

// run checkpoints whenever due (it looks every second), until ctx ends. A failed checkpoint changed
// nothing the model's readers see; it is tried again after a pause.
func (c *checkpointer) run(ctx context.Context) {
	pause := time.Second
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		if c.due() {
			start := time.Now()
			if err := c.checkpoint(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				c.lg.Warn("model checkpoint failed; the log keeps every change, trying again later",
					zap.String("model", c.meta.Model), zap.Duration("in", pause), zap.Error(err))
				if !sleep(ctx, pause) {
					return
				}
				pause = min(2*pause, time.Minute)
				continue
			}
			pause = time.Second
			h := c.st.head
			c.lg.Info("model checkpointed", zap.String("model", c.meta.Model), zap.String("snapshot", h.Snapshot),
				zap.Int64("patterns", h.Patterns), zap.Int64("vectors", h.Vectors), zap.Int("chunks", h.Chunks),
				zap.Int64("bytes", h.Bytes), zap.Uint64("log_from", h.LogFrom), zap.Duration("took", time.Since(start)))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

func (c *checkpointer) step(s string) {
	if f := c.e.ckStep; f != nil {
		f(s)
	}
}

// checkpoint freezes the processor together with a mark in the log (under
// the engine's write mutex, so no change falls between them), writes the
// frozen model as a new snapshot, and publishes it once every change before
// the mark is durable.
func (c *checkpointer) checkpoint(ctx context.Context) error {
	e := c.e
	e.wmu.Lock()
	e.mu.RLock()
	p := e.proc
	e.mu.RUnlock()
	if p == nil {
		e.wmu.Unlock()
		return ErrNotServing
	}
	frozen := p.Freeze()
	marked, at, err := c.com.Mark()
	e.wmu.Unlock()
	if err != nil {
		return err
	}
	c.step(StepFrozen)
	w := kb.NewSnapshot(c.meta.Model, c.lock.Txn, c.meta.Encode)
	w.OnChunk = func(int) { c.step(StepChunk) }
	for r := range frozen.Patterns {
		if err := w.Add(ctx, processor.Change{Kind: processor.PutPattern, Pattern: r}); err != nil {
			return err
		}
	}
	for r := range frozen.Vectors {
		if err := w.Add(ctx, processor.Change{Kind: processor.PutVector, Vector: r}); err != nil {
			return err
		}
	}
	select {
	case err := <-marked:
		if err != nil {
			return err
		}
	case <-ctx.Done():
		return ctx.Err()
	}
	pos := at()
	base := ""
	if c.st.head != nil {
		base = c.st.head.Base
	}
	if err := w.Flush(ctx); err != nil {
		return err
	}
	c.step(StepBeforeSwitch)
	h, err := w.Publish(ctx, base, pos.Seq, false, c.meta.Writer)
	if err != nil {
		return err
	}
	c.step(StepSwitched)
	c.st = checkpointState{head: &h, logFrom: pos.Seq}
	c.written = pos.Written
	return nil
}
