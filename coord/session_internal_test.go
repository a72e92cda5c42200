package coord

import (
	"testing"
	"time"
)

// A renewal waits for a wall-clock tick, but never longer than the renewal
// interval: the lease must not outlive a crash by more than TTL/3 after the
// last renewal (the fault checker's bound), and never renew much earlier.
func TestAlignedNeverWaitsPastTheInterval(t *testing.T) {
	const interval, tick = 1333 * time.Millisecond, 333 * time.Millisecond
	base := time.Date(2026, 12, 2, 7, 0, 0, 0, time.UTC)
	for off := time.Duration(0); off < 2*tick; off += 7 * time.Millisecond {
		now := base.Add(off)
		d := aligned(now, interval, tick)
		if d > interval || d <= interval-tick {
			t.Fatalf("at +%v: wait %v, want in (%v, %v]", off, d, interval-tick, interval)
		}
		if r := now.Add(d).UnixNano() % int64(tick); r != 0 {
			t.Fatalf("at +%v: renewal at %v is not on a %v tick", off, now.Add(d), tick)
		}
	}
}

// TestHedgeAfterNarrowsNearTheDeadline: a hedge waits retry while the lease
// has time, a quarter of what is left near its deadline, never under 100 ms.
func TestHedgeAfterNarrowsNearTheDeadline(t *testing.T) {
	retry := 666 * time.Millisecond
	for _, c := range []struct{ left, want time.Duration }{
		{4 * time.Second, retry},
		{2667 * time.Millisecond, retry},
		{time.Second, 250 * time.Millisecond},
		{200 * time.Millisecond, 100 * time.Millisecond},
		{-time.Second, 100 * time.Millisecond},
	} {
		if got := hedgeAfter(retry, c.left); got != c.want {
			t.Errorf("hedgeAfter(%v, %v) = %v, want %v", retry, c.left, got, c.want)
		}
	}
}
