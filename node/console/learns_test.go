package console

import (
	"slices"
	"testing"
	"time"
)

// The sparkline counts learns per wall-clock minute: a minute's learns stay
// in it, idle minutes count 0, and only the last learnMinutes are kept.
func TestLearnsPerMinute(t *testing.T) {
	var total uint64
	c := New(Config{Learns: func() uint64 { return total }})
	t0 := time.Date(2026, 12, 2, 6, 0, 10, 0, time.UTC)
	step := func(at time.Duration, learned uint64, want ...uint64) {
		t.Helper()
		total += learned
		c.sampleLearns(t0.Add(at))
		if !slices.Equal(c.learns, want) {
			t.Fatalf("at +%v: learns per minute %v, want %v", at, c.learns, want)
		}
	}
	step(0, 0, 0)
	step(time.Second, 2, 2)
	step(30*time.Second, 3, 5)
	step(51*time.Second, 1, 6, 0)                        // 06:01:01: the learn since the last sample counts for 06:00
	step(52*time.Second, 4, 6, 4)                        // 06:01:02
	step(3*time.Minute+55*time.Second, 1, 6, 5, 0, 0, 0) // 06:04:05, after idle minutes
	step(2*time.Hour, 0, make([]uint64, learnMinutes)...)
}
