// Fenced transactions: a write that applies only while the model lock that
// fences it is still held (FencedTxn), and the check of its operations' keys.

package coord

import (
	"bytes"
	"context"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// FencedTxn is a transaction that applies only while the lock that fences it
// is held: its If always includes the lock ownership compare (Fence.Cmp). It
// refuses, without sending anything, a put or delete outside models/<model>/
// of the fencing lock's model. Use it for every write to a model.
//
// The caller's compares and operations run as a transaction nested in the
// fenced one, so Commit can tell a lost lock (ErrLockLost) from the caller's
// own compares failing (Succeeded false, as with a plain clientv3.Txn).
type FencedTxn struct {
	ctx   context.Context
	kv    clientv3.KV
	fence Fence
	cmps  []clientv3.Cmp
	then  []clientv3.Op
	els   []clientv3.Op
	err   error
	lost  func(error) // told when the fence no longer holds
}

// Txn starts a transaction fenced by fence on kv (a client namespaced to the
// root prefix, like every coord client).
func (f Fence) Txn(ctx context.Context, kv clientv3.KV) *FencedTxn {
	t := &FencedTxn{ctx: ctx, kv: kv, fence: f}
	if f.IsZero() {
		t.err = fmt.Errorf("%w: zero fence", ErrNotLocked)
	}
	return t
}

// Txn starts a transaction fenced by the current hold. When nothing is held,
// Commit fails with ErrLockLost (the last hold was lost) or ErrNotLocked
// without sending anything. When etcd refuses the write because the lock is
// gone, the hold ends (Lost is closed) as if the loss had been watched.
func (l *ModelLock) Txn(ctx context.Context) *FencedTxn {
	l.mu.Lock()
	h := l.cur
	l.mu.Unlock()
	if h == nil {
		return &FencedTxn{err: l.Err()}
	}
	l.checkSession(h)
	if err := h.ended(); err != nil {
		return &FencedTxn{err: err}
	}
	t := h.fence.Txn(ctx, l.s.cli.KV)
	t.lost = func(err error) {
		h.end(err)
		l.dropStaleInfo()
	}
	return t
}

// Model returns the model of the lock the fence belongs to.
func (f Fence) Model() (string, bool) { return lockModel(f.Key) }

// If adds compares; the transaction's Then runs when all of them (and the
// fence) hold.
func (t *FencedTxn) If(cs ...clientv3.Cmp) *FencedTxn {
	t.cmps = append(t.cmps, cs...)
	return t
}

// Then adds the operations to run when the compares succeed.
func (t *FencedTxn) Then(ops ...clientv3.Op) *FencedTxn {
	t.then = append(t.then, ops...)
	return t
}

// Else adds the operations to run when a compare of If fails (but the fence
// holds).
func (t *FencedTxn) Else(ops ...clientv3.Op) *FencedTxn {
	t.els = append(t.els, ops...)
	return t
}

// Commit sends the transaction. It returns ErrLockLost when the fence no
// longer holds (nothing was applied), ErrOutsideModel for a write outside the
// model, and otherwise the response of the caller's transaction: Succeeded
// tells whether the caller's compares held, Responses match the operations of
// Then or Else, and Header is that of the whole transaction.
func (t *FencedTxn) Commit() (*clientv3.TxnResponse, error) {
	if t.err != nil {
		return nil, t.err
	}
	model, ok := t.fence.Model()
	if !ok {
		return nil, fmt.Errorf("coord: fence key %q is not a model lock key", t.fence.Key)
	}
	// A model's holder writes the model and its KATO 3 sessions.
	for _, ops := range [][]clientv3.Op{t.then, t.els} {
		if err := checkFencedOps(ops, ModelPrefix(model), SessionPrefix(model)); err != nil {
			return nil, err
		}
	}
	var fence []clientv3.Cmp
	if fencingEnabled {
		fence = append(fence, t.fence.Cmp())
	}
	resp, err := t.kv.Txn(t.ctx).If(fence...).Then(clientv3.OpTxn(t.cmps, t.then, t.els)).Commit()
	if err != nil {
		return nil, fmt.Errorf("coord: model %q: fenced write (fence %d): %w", model, t.fence.Rev, err)
	}
	if !resp.Succeeded {
		err := fmt.Errorf("%w: model %q: fence %d on %s no longer holds; nothing written", ErrLockLost, model, t.fence.Rev, t.fence.Key)
		if t.lost != nil {
			t.lost(err)
		}
		return nil, err
	}
	inner := (*clientv3.TxnResponse)(resp.Responses[0].GetResponseTxn())
	inner.Header = resp.Header
	return inner, nil
}

// checkFencedOps refuses puts and deletes outside every one of the prefixes
// bounds, in nested transactions too. Reads may go anywhere.
func checkFencedOps(ops []clientv3.Op, bounds ...string) error {
	for _, op := range ops {
		switch {
		case op.IsTxn():
			_, thenOps, elseOps := op.Txn()
			if err := checkFencedOps(thenOps, bounds...); err != nil {
				return err
			}
			if err := checkFencedOps(elseOps, bounds...); err != nil {
				return err
			}
		case op.IsPut() || op.IsDelete():
			key, rangeEnd := op.KeyBytes(), op.RangeBytes()
			inside := false
			for _, bound := range bounds {
				end := []byte(clientv3.GetPrefixRangeEnd(bound))
				inside = inside || strings.HasPrefix(string(key), bound) &&
					(len(rangeEnd) == 0 || bytes.Compare(rangeEnd, end) <= 0 && !bytes.Equal(rangeEnd, []byte{0}))
			}
			if !inside {
				return fmt.Errorf("%w: key %q (range end %q) is outside %s", ErrOutsideModel, key, rangeEnd, strings.Join(bounds, " and "))
			}
		}
	}
	return nil
}
