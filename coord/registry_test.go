package coord_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

func newInstance(id string, pid int) *coord.Instance {
	return &coord.Instance{ID: id, Name: "test " + id, Model: id, Host: "host-" + fmt.Sprint(pid), PID: pid,
		Status: coord.StatusStarting, StartedAt: time.Now().UTC().Truncate(time.Second)}
}

func newSession(t testing.TB, ctx context.Context, cli *clientv3.Client, ttl time.Duration) *coord.Session {
	t.Helper()
	s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), coord.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func TestRegisterSameIDConcurrentlyOneWins(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	cli := newClient(t)
	const n = 50
	sessions := make([]*coord.Session, n)
	for i := range sessions {
		sessions[i] = newSession(t, ctx, cli, 10*time.Second)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			<-start
			errs[i] = coord.NewRegistry(sessions[i]).Register(ctx, newInstance("same", 1000+i))
		}(i)
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil:
			if winner >= 0 {
				t.Fatalf("both %d and %d registered the same id", winner, i)
			}
			winner = i
		case !errors.Is(err, coord.ErrIDTaken):
			t.Fatalf("contender %d: %v, want ErrIDTaken", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("nobody registered")
	}
	want := fmt.Sprintf("held by pid %d on host host-%d", 1000+winner, 1000+winner)
	for i, err := range errs {
		if i != winner && !strings.Contains(err.Error(), want) {
			t.Fatalf("contender %d error %q does not name the holder (%q)", i, err, want)
		}
	}
	got, err := coord.GetInstance(ctx, cli, "same")
	if err != nil {
		t.Fatal(err)
	}
	if got.PID != 1000+winner || got.LeaseID != coord.LeaseHex(sessions[winner].Lease()) {
		t.Fatalf("record %+v is not the winner's", got)
	}
}

func TestUpdateAndDeregisterOnlyByOwner(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	cli := newClient(t)
	owner := coord.NewRegistry(newSession(t, ctx, cli, 10*time.Second))
	other := coord.NewRegistry(newSession(t, ctx, cli, 10*time.Second))
	in := newInstance("a", 1)
	if err := owner.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	in.Status = coord.StatusRunning
	if err := owner.Update(ctx, in); err != nil {
		t.Fatal(err)
	}
	if got, _ := owner.Get(ctx, "a"); got.Status != coord.StatusRunning {
		t.Fatalf("status %q after update", got.Status)
	}
	stolen := *in
	stolen.Status = coord.StatusDraining
	if err := other.Update(ctx, &stolen); !errors.Is(err, coord.ErrNotRegistered) {
		t.Fatalf("update by another session: %v, want ErrNotRegistered", err)
	}
	if err := other.Deregister(ctx, "a"); !errors.Is(err, coord.ErrNotRegistered) {
		t.Fatalf("deregister by another session: %v, want ErrNotRegistered", err)
	}
	if err := owner.Deregister(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	if _, err := owner.Get(ctx, "a"); !errors.Is(err, coord.ErrNotFound) {
		t.Fatalf("get after deregister: %v, want ErrNotFound", err)
	}
	if err := owner.Update(ctx, in); !errors.Is(err, coord.ErrNotRegistered) {
		t.Fatalf("update after deregister: %v, want ErrNotRegistered", err)
	}
}

func TestRegisterRejectsBadRecords(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	r := coord.NewRegistry(newSession(t, ctx, newClient(t), 10*time.Second))
	bad := []*coord.Instance{
		{ID: "has space", Status: coord.StatusStarting},
		{ID: "", Status: coord.StatusStarting},
		{ID: "ok", Status: "sleeping"},
		{ID: "ok", Model: "bad/model", Status: coord.StatusStarting},
		{ID: "ok", Name: strings.Repeat("n", 129), Status: coord.StatusStarting},
	}
	for _, in := range bad {
		if err := r.Register(ctx, in); err == nil {
			t.Errorf("Register(%+v) succeeded", in)
		}
	}
}

// A process that dies without revoking (client closed, keep-alive stopped) is
// gone from List, and Watch reports the removal, within TTL + 1 s; a graceful
// Close removes the record at once.
func TestCrashedInstanceDisappearsWithinTTL(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	prefix := testPrefix(t)
	watcher := newClientOn(t, testEtcd, prefix)

	events := make(chan coord.InstanceEvent, 16)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watchDone := make(chan error, 1)
	go func() {
		watchDone <- coord.WatchInstances(wctx, watcher, zaptest.NewLogger(t), 0, func(e coord.InstanceEvent) { events <- e })
	}()
	defer func() { cancel(); <-watchDone }()

	// The dying process has a client of its own.
	dying, err := testEtcd.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	coord.Namespace(dying, prefix)
	const ttl = 2 * time.Second
	s, err := coord.NewSession(ctx, dying, zaptest.NewLogger(t), coord.WithTTL(ttl))
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.NewRegistry(s).Register(ctx, newInstance("crasher", 7)); err != nil {
		t.Fatal(err)
	}
	graceful := newSession(t, ctx, watcher, 10*time.Second)
	if err := coord.NewRegistry(graceful).Register(ctx, newInstance("graceful", 8)); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, events, coord.EventAdded, "crasher")
	expectEvent(t, events, coord.EventAdded, "graceful")

	dying.Close() // the keep-alive stops; nothing is revoked
	crashed := time.Now()
	expectEvent(t, events, coord.EventRemoved, "crasher")
	if d := time.Since(crashed); d > ttl+time.Second {
		t.Fatalf("removal reported %v after the crash, want within TTL+1s = %v", d, ttl+time.Second)
	}
	list, _, err := coord.ListInstances(ctx, watcher)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].ID != "graceful" {
		t.Fatalf("list after the crash = %+v, want only graceful", list)
	}

	if err := graceful.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := coord.GetInstance(ctx, watcher, "graceful"); !errors.Is(err, coord.ErrNotFound) {
		t.Fatalf("record still there right after Close: %v", err)
	}
	expectEvent(t, events, coord.EventRemoved, "graceful")
}

func expectEvent(t *testing.T, events <-chan coord.InstanceEvent, typ coord.EventType, id string) coord.InstanceEvent {
	t.Helper()
	select {
	case e := <-events:
		if e.Type != typ || e.Instance.ID != id {
			t.Fatalf("event %s %s, want %s %s", e.Type, e.Instance.ID, typ, id)
		}
		return e
	case <-time.After(15 * time.Second):
		t.Fatalf("no %s event for %s", typ, id)
	}
	return coord.InstanceEvent{}
}

func TestWatchFromRevisionHasNoGapAndReportsUpdates(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	cli := newClient(t)
	r := coord.NewRegistry(newSession(t, ctx, cli, 10*time.Second))
	a := newInstance("a", 1)
	if err := r.Register(ctx, a); err != nil {
		t.Fatal(err)
	}
	_, rev, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Changes made before the watch starts must still be delivered.
	a.Status = coord.StatusStandby
	if err := r.Update(ctx, a); err != nil {
		t.Fatal(err)
	}
	b := newInstance("b", 2)
	if err := r.Register(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := r.Deregister(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	events := make(chan coord.InstanceEvent, 16)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- r.Watch(wctx, rev+1, func(e coord.InstanceEvent) { events <- e }) }()
	if e := expectEvent(t, events, coord.EventUpdated, "a"); e.Instance.Status != coord.StatusStandby {
		t.Fatalf("update carries status %q", e.Instance.Status)
	}
	expectEvent(t, events, coord.EventAdded, "b")
	if e := expectEvent(t, events, coord.EventRemoved, "a"); e.Instance.PID != 1 {
		t.Fatalf("removal does not carry the last record: %+v", e.Instance)
	}
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Watch returned %v, want context.Canceled", err)
	}
}

func TestWatchRelistsAfterCompaction(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	cli := newClient(t)
	r := coord.NewRegistry(newSession(t, ctx, cli, 10*time.Second))
	a, b := newInstance("a", 1), newInstance("b", 2)
	if err := r.Register(ctx, a); err != nil {
		t.Fatal(err)
	}
	_, rev, err := r.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Register(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := r.Deregister(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision); err != nil {
		t.Fatal(err)
	}
	events := make(chan coord.InstanceEvent, 16)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go r.Watch(wctx, rev+1, func(e coord.InstanceEvent) { events <- e })
	// From a compacted revision the watcher cannot know "a" existed; it lists
	// and reports the current state.
	expectEvent(t, events, coord.EventAdded, "b")
	c := newInstance("c", 3)
	if err := r.Register(ctx, c); err != nil {
		t.Fatal(err)
	}
	expectEvent(t, events, coord.EventAdded, "c")
}

// Stopping the etcd leader of a 3-member cluster drops no registration.
func TestLeaderLossDropsNoRegistration(t *testing.T) {
	c := etcdtest.NewCluster(t, 3)
	ctx := testCtx(t, 90*time.Second)
	cli := newClientOn(t, c, "/kato/")
	const n = 10
	const ttl = 3 * time.Second
	sessions := make([]*coord.Session, n)
	for i := range sessions {
		sessions[i] = newSession(t, ctx, cli, ttl)
		if err := coord.NewRegistry(sessions[i]).Register(ctx, newInstance(fmt.Sprintf("i%d", i), i)); err != nil {
			t.Fatal(err)
		}
	}
	events := make(chan coord.InstanceEvent, 64)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watcher := newClientOn(t, c, "/kato/")
	_, rev, err := coord.ListInstances(ctx, watcher)
	if err != nil {
		t.Fatal(err)
	}
	go coord.WatchInstances(wctx, watcher, zap.NewNop(), rev+1, func(e coord.InstanceEvent) { events <- e })

	stopLeader(t, ctx, c)
	// Observe for three TTLs after the new election: no removal, no lost session.
	window := time.After(3 * ttl)
	for done := false; !done; {
		select {
		case e := <-events:
			t.Fatalf("registry changed after leader loss: %s %s", e.Type, e.Instance.ID)
		case <-window:
			done = true
		}
		for i, s := range sessions {
			select {
			case <-s.Done():
				t.Fatalf("session %d lost: %v", i, s.Err())
			default:
			}
		}
	}
	list, _, err := coord.ListInstances(ctx, watcher)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != n {
		t.Fatalf("%d instances after leader loss, want %d", len(list), n)
	}
}

// An idle registered instance makes no etcd writes besides lease keep-alives:
// etcd's revision counter does not move.
func TestIdleInstanceMakesNoWrites(t *testing.T) {
	c := etcdtest.New(t)
	ctx := testCtx(t, 30*time.Second)
	cli := newClientOn(t, c, "/kato/")
	const ttl = 2 * time.Second
	s := newSession(t, ctx, cli, ttl)
	in := newInstance("idle", 1)
	r := coord.NewRegistry(s)
	if err := r.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	in.Status = coord.StatusRunning
	if err := r.Update(ctx, in); err != nil {
		t.Fatal(err)
	}
	before := c.Server(0).KV().Rev()
	// Over three TTLs the session renews its lease about nine times.
	renewals := 0
	var lastExpiry time.Time
	deadline := time.Now().Add(3 * ttl)
	for time.Now().Before(deadline) {
		if e := s.ExpiresAt(); !e.Equal(lastExpiry) {
			renewals++
			lastExpiry = e
		}
		select {
		case <-s.Done():
			t.Fatalf("session lost: %v", s.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
	after := c.Server(0).KV().Rev()
	if after != before {
		t.Fatalf("etcd revision moved from %d to %d while the instance was idle", before, after)
	}
	if renewals < 3 {
		t.Fatalf("only %d lease renewals seen in %v; the test did not observe keep-alives", renewals, 3*ttl)
	}
}

// A Register that etcd applied but whose answer was lost is retried by its
// caller; the record under the session's own lease is recognised as its own
// (it was "id taken" by itself, issue 18), and another session still gets
// ErrIDTaken.
func TestRegisterAgainOnOwnLeaseSucceeds(t *testing.T) {
	ctx := testCtx(t, 20*time.Second)
	cli := newClient(t)
	reg := coord.NewRegistry(newSession(t, ctx, cli, 10*time.Second))
	in := newInstance("again", 1)
	if err := reg.Register(ctx, in); err != nil {
		t.Fatal(err)
	}
	retry := *in
	retry.Status = coord.StatusStandby
	if err := reg.Register(ctx, &retry); err != nil {
		t.Fatalf("Register again on the same lease: %v, want success", err)
	}
	if got, _ := reg.Get(ctx, "again"); got.Status != coord.StatusStandby {
		t.Fatalf("record not rewritten by the retry: status %q", got.Status)
	}
	other := coord.NewRegistry(newSession(t, ctx, cli, 10*time.Second))
	if err := other.Register(ctx, newInstance("again", 1)); !errors.Is(err, coord.ErrIDTaken) {
		t.Fatalf("Register by another session (same pid and host): %v, want ErrIDTaken", err)
	}
}
