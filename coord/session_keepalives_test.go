package coord_test

import (
	"context"
	"errors"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// openShared opens n sessions of ttl on cli sharing one new KeepAlives;
// they are closed when the test ends, before it.
func openShared(t *testing.T, ctx context.Context, cli *clientv3.Client, n int, ttl time.Duration) (*coord.KeepAlives, []*coord.Session) {
	t.Helper()
	k := coord.NewKeepAlives(cli, zaptest.NewLogger(t))
	t.Cleanup(k.Close)
	ss := make([]*coord.Session, n)
	for i := range ss {
		s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t), coord.WithTTL(ttl), coord.WithKeepAlives(k))
		if err != nil {
			t.Fatalf("session %d: %v", i, err)
		}
		t.Cleanup(func() { s.Close(context.Background()) })
		ss[i] = s
	}
	return k, ss
}

// watchAlive fails the test if any of live is lost, or its lease gone in
// etcd, within d.
func watchAlive(t *testing.T, ctx context.Context, cli *clientv3.Client, live []*coord.Session, d time.Duration) {
	t.Helper()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for start := time.Now(); time.Since(start) < d; {
		for i, s := range live {
			if err := s.Err(); err != nil {
				t.Fatalf("session %d lost after %v: %v", i, time.Since(start), err)
			}
		}
		select {
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		case <-tick.C:
		}
	}
	for i, s := range live {
		ttl, err := cli.TimeToLive(ctx, s.Lease())
		if err != nil {
			t.Fatal(err)
		}
		if ttl.TTL <= 0 {
			t.Fatalf("lease of session %d expired in etcd although the session is open", i)
		}
	}
}

// Many sessions on one KeepAlives stay alive over several TTLs, renewed
// over one stream: its open was the only one.
func TestKeepAlivesShareOneStream(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	k, ss := openShared(t, ctx, cli, 50, 3*time.Second)
	first := make([]time.Time, len(ss))
	for i, s := range ss {
		first[i] = s.ExpiresAt()
	}
	watchAlive(t, ctx, cli, ss, 3*ss[0].TTL())
	for i, s := range ss {
		if !s.ExpiresAt().After(first[i]) {
			t.Fatalf("session %d never renewed", i)
		}
	}
	if n := k.StreamOpens(); n != 1 {
		t.Fatalf("%d keep-alive streams opened for %d sessions, want 1", n, len(ss))
	}
}

// A session whose lease is revoked elsewhere is lost; the others on its
// KeepAlives stay alive.
func TestKeepAlivesRevokedSessionLostNeighboursAlive(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	k, ss := openShared(t, ctx, cli, 5, 3*time.Second)
	if _, err := cli.Revoke(ctx, ss[2].Lease()); err != nil {
		t.Fatal(err)
	}
	select {
	case <-ss[2].Done():
	case <-ctx.Done():
		t.Fatal("Done not closed after the lease was revoked")
	}
	if !errors.Is(ss[2].Err(), coord.ErrSessionLost) {
		t.Fatalf("Err() = %v, want ErrSessionLost", ss[2].Err())
	}
	watchAlive(t, ctx, cli, append(ss[:2:2], ss[3:]...), 2*ss[0].TTL())
	if n := k.StreamOpens(); n != 1 {
		t.Fatalf("%d keep-alive streams opened, want 1", n)
	}
}

// Closing one session revokes its lease and leaves the others on its
// KeepAlives, and their stream, alone.
func TestKeepAlivesCloseOneLeavesOthers(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	k, ss := openShared(t, ctx, cli, 5, 3*time.Second)
	if err := ss[0].Close(ctx); err != nil {
		t.Fatal(err)
	}
	if ttl, err := cli.TimeToLive(ctx, ss[0].Lease()); err != nil || ttl.TTL > 0 {
		t.Fatalf("closed session's lease: TTL %v, err %v; want revoked", ttl.TTL, err)
	}
	watchAlive(t, ctx, cli, ss[1:], 2*ss[1].TTL())
	if n := k.StreamOpens(); n != 1 {
		t.Fatalf("%d keep-alive streams opened, want 1", n)
	}
}

// Sessions whose renewals go unanswered at once (etcd cut off) hedge on one
// new stream between them, not a stream each, and all survive a cut shorter
// than their TTL.
func TestKeepAlivesHedgesShareANewStream(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli, proxy := proxiedClient(t, testPrefix(t))
	k, ss := openShared(t, ctx, cli, 20, 3*time.Second)

	proxy.Blackhole()
	etcdtest.Eventually(t, 10*time.Second, func() bool { return k.StreamOpens() >= 2 }, "no hedge on a new stream while cut off")
	proxy.Heal()
	healed := make([]time.Time, len(ss))
	for i, s := range ss {
		healed[i] = s.ExpiresAt()
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		for i, s := range ss {
			if s.Err() != nil || !s.ExpiresAt().After(healed[i]) {
				return false
			}
		}
		return true
	}, "not every session renewed after the cut")
	for i, s := range ss {
		if err := s.Err(); err != nil {
			t.Fatalf("session %d lost: %v", i, err)
		}
	}
	n := k.StreamOpens()
	t.Logf("%d keep-alive streams opened for %d sessions", n, len(ss))
	if n > 5 {
		t.Fatalf("%d keep-alive streams opened for %d sessions, want a few (one per hedge round), not one per session", n, len(ss))
	}
}

// Sessions still open when their KeepAlives closes are lost at once: nothing
// renews them any more.
func TestKeepAlivesCloseLosesItsSessions(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	cli := newClient(t)
	k, ss := openShared(t, ctx, cli, 3, 2*time.Second)
	k.Close()
	for i, s := range ss {
		select {
		case <-s.Done():
		case <-ctx.Done():
			t.Fatalf("session %d not lost after its KeepAlives closed", i)
		}
		if !errors.Is(s.Err(), coord.ErrSessionLost) {
			t.Fatalf("session %d: Err() = %v, want ErrSessionLost", i, s.Err())
		}
	}
	if _, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t), coord.WithKeepAlives(k)); err == nil {
		t.Fatal("a session started on a closed KeepAlives")
	}
}
