// The one retry wait of coord (and of node): a capped exponential backoff
// with jitter, and a sleep that ends with its context.

package coord

import (
	"context"
	"math/rand/v2"
	"time"
)

// Backoff is a capped exponential backoff with jitter: the first wait is
// about Min, each next one about twice the last, up to Max. Each wait is
// drawn from the upper half of its step, so that retries of many processes
// spread out. The zero Backoff waits 50 ms doubling to 1 s. It is not safe
// for concurrent use.
type Backoff struct {
	Min, Max time.Duration
	step     time.Duration
}

// Next advances the backoff and returns how long to wait.
func (b *Backoff) Next() time.Duration {
	lo, hi := b.Min, b.Max
	if lo <= 0 {
		lo = 50 * time.Millisecond
	}
	if hi < lo {
		hi = max(lo, time.Second)
	}
	switch {
	case b.step == 0:
		b.step = lo
	case b.step < hi:
		b.step = min(2*b.step, hi)
	}
	half := b.step / 2
	return half + rand.N(b.step-half+1)
}

// Wait sleeps the next step of the backoff; it returns ctx.Err() when ctx
// ends first.
func (b *Backoff) Wait(ctx context.Context) error { return Sleep(ctx, b.Next()) }

// Reset starts the backoff again from Min (after a success).
func (b *Backoff) Reset() { b.step = 0 }

// Sleep waits d; it returns ctx.Err() when ctx ends first.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
