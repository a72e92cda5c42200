package coord_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
)

func TestSessionCloseRevokesAtOnce(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	cli := newClient(t)
	s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t), coord.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "owned", "x", clientv3.WithLease(s.Lease())); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	// Revoke is synchronous in etcd: the key is gone when Close returns.
	resp, err := cli.Get(ctx, "owned")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 0 {
		t.Fatal("key attached to the session survived Close")
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if !errors.Is(s.Err(), coord.ErrSessionClosed) {
		t.Fatalf("Err() = %v, want ErrSessionClosed", s.Err())
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestSessionKeepsLeaseAlivePastTTL(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	cli := newClient(t)
	s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t), coord.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	start := time.Now()
	// Watch the lease for three TTLs: it must stay alive throughout.
	for time.Since(start) < 3*s.TTL() {
		ttl, err := cli.TimeToLive(ctx, s.Lease())
		if err != nil {
			t.Fatal(err)
		}
		if ttl.TTL <= 0 {
			t.Fatalf("lease expired after %v although the session is open", time.Since(start))
		}
		select {
		case <-s.Done():
			t.Fatalf("session lost after %v: %v", time.Since(start), s.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func TestSessionDoneWhenLeaseRevokedElsewhere(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	cli := newClient(t)
	s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t), coord.WithTTL(3*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if _, err := cli.Revoke(ctx, s.Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("Done not closed after the lease was revoked")
	}
	if !errors.Is(s.Err(), coord.ErrSessionLost) {
		t.Fatalf("Err() = %v, want ErrSessionLost", s.Err())
	}
}

// With etcd cut off, the session must notice the loss on its own clock, no
// later than TTL after the last confirmed keep-alive.
func TestSessionDoneWhenCutOff(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli, proxy := proxiedClient(t, testPrefix(t))
	s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t), coord.WithTTL(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())

	proxy.Blackhole()
	cut := time.Now()
	select {
	case <-s.Done():
	case <-ctx.Done():
		t.Fatal("session not lost while cut off from etcd")
	}
	lostAfter := time.Since(cut)
	if !errors.Is(s.Err(), coord.ErrSessionLost) {
		t.Fatalf("Err() = %v, want ErrSessionLost", s.Err())
	}
	// The server's view: the lease is really gone (or about to be), so the
	// client did not declare a loss while etcd still held the lease for long.
	t.Logf("session lost %v after the cut (TTL %v)", lostAfter, s.TTL())
	if lostAfter > s.TTL()+time.Second {
		t.Fatalf("loss noticed %v after the cut, want within TTL %v (+1 s)", lostAfter, s.TTL())
	}
}

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// Err reads the clock: once the client-side deadline passed, the session is
// lost for every caller at once, before the keep-alive goroutine wakes up
// (as after a process pause longer than the TTL), and a lock held on it no
// longer gives a fence (issue 18).
func TestSessionErrChecksTheDeadline(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	cli := newClient(t)
	var skew atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
	s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t), coord.WithTTL(5*time.Second), coord.WithClock(now))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	lock := coord.NewModelLock(s, "m")
	if _, err := lock.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if s.Err() != nil {
		t.Fatalf("fresh session: %v", s.Err())
	}
	if _, ok := lock.Fence(); !ok {
		t.Fatal("no fence right after Lock")
	}
	skew.Store(int64(time.Until(s.ExpiresAt()) + time.Millisecond))
	if err := s.Err(); !errors.Is(err, coord.ErrSessionLost) {
		t.Fatalf("Err after the deadline = %v, want ErrSessionLost", err)
	}
	select {
	case <-s.Done():
	default:
		t.Fatal("Done not closed once Err saw the deadline pass")
	}
	if f, ok := lock.Fence(); ok {
		t.Fatalf("fence %v still valid after the session deadline", f)
	}
}
