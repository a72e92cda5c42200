package coord

import (
	"context"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
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

// TestRenewalsGoOnTheStreamThatAnswered: once a stream answers, the streams
// opened before it close, it becomes the one renewals go on (a newer stream
// has not shown that it works), and a hedge of a renewal sent on the newer
// one goes there too.
func TestRenewalsGoOnTheStreamThatAnswered(t *testing.T) {
	k := &KeepAlives{members: map[clientv3.LeaseID]*kaMember{}, waiting: map[clientv3.LeaseID]*kaMember{}}
	var streams []*kaStream
	for seq := uint64(1); seq <= 3; seq++ {
		ctx, cancel := context.WithCancel(context.Background())
		streams = append(streams, &kaStream{seq: seq, ctx: ctx, cancel: cancel, wake: make(chan struct{}, 1),
			queued: map[clientv3.LeaseID]bool{}})
	}
	k.streams = append([]*kaStream(nil), streams...)
	m := &kaMember{s: &Session{lease: 7}, lastSeq: 3} // its renewal went on stream 3
	k.members[7] = m

	k.keepFrom(streams[1]) // stream 2 answered
	if streams[0].ctx.Err() == nil {
		t.Error("stream 1, opened before the one that answered, is still open")
	}
	if streams[2].ctx.Err() != nil {
		t.Error("stream 3 was closed; its renewals in flight would be lost")
	}
	if got := len(k.streams); got != 2 || k.streams[1] != streams[1] {
		t.Fatalf("streams after the answer: %d, current seq %d; want stream 2 current", got, k.streams[len(k.streams)-1].seq)
	}
	k.renew(m, true)
	if !streams[1].queued[7] || m.lastSeq != 2 {
		t.Errorf("hedge of a renewal sent on stream 3 went on stream %d, want 2 (the one that answered)", m.lastSeq)
	}
	k.renew(m, false)
	if m.lastSeq != 2 {
		t.Errorf("next renewal went on stream %d, want 2", m.lastSeq)
	}
	if k.opening != nil {
		t.Error("a stream was opened although one that answered is there")
	}
	for _, st := range streams {
		st.cancel()
	}
}
