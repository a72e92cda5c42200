package coord_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// lockWaitFor polls cond until it holds, failing the test when ctx ends first.
func lockWaitFor(t *testing.T, ctx context.Context, what string, cond func() (bool, error)) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := cond()
		if err != nil {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

// waitQueued waits until the lock of model has n waiters.
func waitQueued(t *testing.T, ctx context.Context, cli *clientv3.Client, model string, n int) coord.LockState {
	t.Helper()
	var st coord.LockState
	lockWaitFor(t, ctx, fmt.Sprintf("%d waiters on %s", n, model), func() (bool, error) {
		var err error
		st, _, err = coord.GetLock(ctx, cli, model)
		if errors.Is(err, coord.ErrNotLocked) {
			return false, nil
		}
		return err == nil && len(st.Waiters) == n, err
	})
	return st
}

// checkNoWaiters fails, saying what left them, if the lock of model has
// waiters now.
func checkNoWaiters(t *testing.T, ctx context.Context, cli *clientv3.Client, model, what string) {
	t.Helper()
	st, _, err := coord.GetLock(ctx, cli, model)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Waiters) != 0 {
		t.Fatalf("%s: %+v", what, st.Waiters)
	}
}

type lockResult struct {
	fence coord.Fence
	err   error
}

// lockAsync starts l.Lock(ctx) and returns where its result arrives.
func lockAsync(ctx context.Context, l *coord.ModelLock) <-chan lockResult {
	ch := make(chan lockResult, 1)
	go func() {
		f, err := l.Lock(ctx)
		ch <- lockResult{f, err}
	}()
	return ch
}

func recvLock(t *testing.T, ctx context.Context, ch <-chan lockResult) coord.Fence {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("Lock: %v", r.err)
		}
		return r.fence
	case <-ctx.Done():
		t.Fatal("Lock did not return")
	}
	return coord.Fence{}
}

func waitClosed(t *testing.T, ctx context.Context, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-ctx.Done():
		t.Fatalf("%s: not closed in time", what)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// counterKey is the shared counter the mutual-exclusion checker increments.
var counterKey = coord.ModelPrefix("m") + "counter"

func readCounter(ctx context.Context, kv clientv3.KV) (int64, error) {
	resp, err := kv.Get(ctx, counterKey)
	if err != nil || len(resp.Kvs) == 0 {
		return 0, err
	}
	return strconv.ParseInt(string(resp.Kvs[0].Value), 10, 64)
}

// hold is one critical section of a contender, as seen by the contender.
type hold struct {
	who        int
	fence      int64
	start, end time.Time // after Lock returned, before Unlock was called
	read       int64     // counter value read inside the section
}

// checker runs contenders that each take the lock, read the counter, write
// it back plus one with a fenced transaction and release the lock, and logs
// the sections.
type checker struct {
	mu    sync.Mutex
	holds []hold
}

// round does one fenced read-modify-write under l.
func (c *checker) round(ctx context.Context, who int, l *coord.ModelLock, kv clientv3.KV) error {
	f, err := l.Lock(ctx)
	if err != nil {
		return fmt.Errorf("contender %d: Lock: %w", who, err)
	}
	h := hold{who: who, fence: f.Rev, start: time.Now()}
	h.read, err = readCounter(ctx, kv)
	if err != nil {
		return err
	}
	if _, err := l.Txn(ctx).Then(clientv3.OpPut(counterKey, strconv.FormatInt(h.read+1, 10))).Commit(); err != nil {
		return fmt.Errorf("contender %d: fenced write: %w", who, err)
	}
	h.end = time.Now()
	if err := l.Unlock(ctx); err != nil {
		return fmt.Errorf("contender %d: Unlock: %w", who, err)
	}
	c.mu.Lock()
	c.holds = append(c.holds, h)
	c.mu.Unlock()
	return nil
}

// verify checks that no two sections overlapped, that fences grew with time,
// and that every increment landed: the values read are 0, 1, 2, ... in order
// and the counter ends at the number of sections.
func (c *checker) verify(t *testing.T, ctx context.Context, kv clientv3.KV) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	hs := slices.Clone(c.holds)
	slices.SortFunc(hs, func(a, b hold) int { return a.start.Compare(b.start) })
	for i, h := range hs {
		if h.read != int64(i) {
			t.Errorf("section %d (contender %d, fence %d) read %d, want %d: an increment was lost or doubled", i, h.who, h.fence, h.read, i)
		}
		if i == 0 {
			continue
		}
		p := hs[i-1]
		if h.start.Before(p.end) {
			t.Errorf("sections overlap: contender %d [%v, %v] and contender %d starting %v",
				p.who, p.start.Format(time.StampMicro), p.end.Format(time.StampMicro), h.who, h.start.Format(time.StampMicro))
		}
		if h.fence <= p.fence {
			t.Errorf("fence went from %d to %d", p.fence, h.fence)
		}
	}
	got, err := readCounter(ctx, kv)
	if err != nil {
		t.Fatal(err)
	}
	if got != int64(len(hs)) {
		t.Errorf("counter = %d after %d increments", got, len(hs))
	}
	t.Logf("%d sections checked", len(hs))
}

// start runs n contenders, each with a client and a session of its own, for
// rounds rounds each, or until stop is closed when rounds is 0. The returned
// wait waits for them and reports their errors.
func (c *checker) start(t *testing.T, ctx context.Context, prefix string, n, rounds int, stop <-chan struct{}) (wait func()) {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		cli := newClientOn(t, testEtcd, prefix)
		s := newSession(t, ctx, cli, 5*time.Second)
		l := coord.NewModelLock(s, "m", coord.WithHolder(fmt.Sprint("c", i), "test"))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := 0; rounds == 0 || r < rounds; r++ {
				select {
				case <-stop:
					return
				default:
				}
				if err := c.round(ctx, i, l, cli); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	return func() {
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
	}
}

func TestLockMutualExclusion(t *testing.T) {
	ctx := testCtx(t, 60*time.Second)
	prefix := testPrefix(t)
	const contenders, rounds = 5, 40
	var c checker
	c.start(t, ctx, prefix, contenders, rounds, nil)()
	c.verify(t, ctx, newClientOn(t, testEtcd, prefix))
	if len(c.holds) != contenders*rounds {
		t.Fatalf("%d sections, want %d", len(c.holds), contenders*rounds)
	}
}

// Holders that pause (here: are cut off from etcd) for longer than the TTL
// while holding the lock lose it to the others; when they resume, their late
// fenced writes fail and the counter stays exact.
func TestLockPausedHoldersCannotWrite(t *testing.T) {
	ctx := testCtx(t, 90*time.Second)
	prefix := testPrefix(t)
	main := newClientOn(t, testEtcd, prefix)
	const contenders, paused = 3, 2
	var c checker
	stop := make(chan struct{})
	wait := c.start(t, ctx, prefix, contenders, 0, stop)
	for p := range paused {
		cli, proxy := proxiedClient(t, prefix)
		s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), coord.WithTTL(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		l := coord.NewModelLock(s, "m", coord.WithHolder(fmt.Sprint("paused", p), "test"))
		f, err := l.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		v, err := readCounter(ctx, cli)
		if err != nil {
			t.Fatal(err)
		}
		// Pause while holding: no keep-alive gets through, the lease expires.
		proxy.Blackhole()
		waitClosed(t, ctx, s.Done(), "paused holder's session")
		waitClosed(t, ctx, l.Lost(), "paused holder's Lost")
		if !errors.Is(l.Err(), coord.ErrLockLost) || !errors.Is(l.Err(), coord.ErrSessionLost) {
			t.Fatalf("Err() = %v, want ErrLockLost and ErrSessionLost", l.Err())
		}
		// The others go on once etcd expired the lease.
		lockWaitFor(t, ctx, "the others to write after the pause", func() (bool, error) {
			now, err := readCounter(ctx, main)
			return now > v+1, err
		})
		proxy.Heal()
		// The late write reaches etcd and is refused there.
		_, err = f.Txn(ctx, cli).Then(clientv3.OpPut(counterKey, strconv.FormatInt(v+1, 10))).Commit()
		if !errors.Is(err, coord.ErrLockLost) {
			t.Fatalf("late fenced write by paused holder %d: err = %v, want ErrLockLost", p, err)
		}
		// Through the lock, it is refused without asking etcd.
		if _, err := l.Txn(ctx).Then(clientv3.OpPut(counterKey, "0")).Commit(); !errors.Is(err, coord.ErrLockLost) {
			t.Fatalf("write through the lost lock: err = %v, want ErrLockLost", err)
		}
		if err := l.Unlock(ctx); !errors.Is(err, coord.ErrLockLost) {
			t.Fatalf("Unlock after loss: %v, want ErrLockLost", err)
		}
		t.Logf("paused holder %d (fence %d) lost the lock; its late write was refused", p, f.Rev)
	}
	// Let the others run a while longer, then stop them.
	lockWaitFor(t, ctx, "100 sections", func() (bool, error) {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.holds) >= 100, nil
	})
	close(stop)
	wait()
	c.verify(t, ctx, main)
}

func TestLockInteropWithConcurrencyMutex(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	cs, err := concurrency.NewSession(cli, concurrency.WithTTL(10))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	mutexPrefix := strings.TrimSuffix(coord.LockPrefix("m"), "/")
	s := newSession(t, ctx, cli, 10*time.Second)
	l := coord.NewModelLock(s, "m", coord.WithHolder("kato", "h"))

	t.Run("mutex excludes ModelLock", func(t *testing.T) {
		m := concurrency.NewMutex(cs, mutexPrefix)
		if err := m.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		_, err := l.TryLock(ctx)
		if !errors.Is(err, coord.ErrLocked) || !strings.Contains(err.Error(), m.Key()) {
			t.Fatalf("TryLock while a concurrency.Mutex holds: %v, want ErrLocked naming %s", err, m.Key())
		}
		res := lockAsync(ctx, l)
		waitQueued(t, ctx, cli, "m", 1)
		select {
		case r := <-res:
			t.Fatalf("ModelLock acquired while the mutex holds: %+v", r)
		default:
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		f := recvLock(t, ctx, res)
		if f.Key != l.Key() {
			t.Fatalf("fence key %s, want %s", f.Key, l.Key())
		}
		st, _, err := coord.GetLock(ctx, cli, "m")
		if err != nil {
			t.Fatal(err)
		}
		if st.Holder.ID != "kato" || st.Holder.Rev != f.Rev {
			t.Fatalf("holder %+v, want kato with fence %d", st.Holder, f.Rev)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("ModelLock excludes mutex", func(t *testing.T) {
		if _, err := l.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		m := concurrency.NewMutex(cs, mutexPrefix)
		if err := m.TryLock(ctx); !errors.Is(err, concurrency.ErrLocked) {
			t.Fatalf("mutex TryLock while ModelLock holds: %v, want concurrency.ErrLocked", err)
		}
		res := make(chan error, 1)
		go func() { res <- m.Lock(ctx) }()
		waitQueued(t, ctx, cli, "m", 1)
		select {
		case err := <-res:
			t.Fatalf("mutex acquired while ModelLock holds: %v", err)
		default:
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-res:
			if err != nil {
				t.Fatal(err)
			}
		case <-ctx.Done():
			t.Fatal("mutex not acquired after Unlock")
		}
		// Our lockinfo went with Unlock, so nobody is sent to us.
		st, _, err := coord.GetLock(ctx, cli, "m")
		if err != nil {
			t.Fatal(err)
		}
		if st.Holder.Key != m.Key() || st.Holder.ID != "" {
			t.Fatalf("holder %+v, want the mutex key %s without holder record", st.Holder, m.Key())
		}
		if err := m.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestLockLostWhenSessionEnds(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(t *testing.T, ctx context.Context, cli *clientv3.Client, s *coord.Session, proxy *etcdtest.Proxy)
	}{
		{"lease expires while cut off", func(t *testing.T, ctx context.Context, cli *clientv3.Client, s *coord.Session, proxy *etcdtest.Proxy) {
			proxy.Blackhole()
			t.Cleanup(proxy.Heal)
		}},
		{"lease revoked elsewhere", func(t *testing.T, ctx context.Context, cli *clientv3.Client, s *coord.Session, proxy *etcdtest.Proxy) {
			if _, err := cli.Revoke(ctx, s.Lease()); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			prefix := testPrefix(t)
			main := newClientOn(t, testEtcd, prefix)
			cli, proxy := proxiedClient(t, prefix)
			s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t, zaptest.Level(zap.ErrorLevel)), coord.WithTTL(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close(ctx)
			l := coord.NewModelLock(s, "m")
			f, err := l.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if isClosed(l.Lost()) {
				t.Fatal("Lost closed while held")
			}
			tc.end(t, ctx, main, s, proxy)
			waitClosed(t, ctx, s.Done(), "session Done")
			waitClosed(t, ctx, l.Lost(), "Lost")
			if !errors.Is(l.Err(), coord.ErrLockLost) {
				t.Fatalf("Err() = %v, want ErrLockLost", l.Err())
			}
			// Once etcd dropped the lease, a write with the old fence fails.
			lockWaitFor(t, ctx, "the lock key to go", func() (bool, error) {
				_, _, err := coord.GetLock(ctx, main, "m")
				return errors.Is(err, coord.ErrNotLocked), nil
			})
			if _, err := f.Txn(ctx, main).Then(clientv3.OpPut(coord.ModelPrefix("m")+"x", "1")).Commit(); !errors.Is(err, coord.ErrLockLost) {
				t.Fatalf("fenced write after the session ended: %v, want ErrLockLost", err)
			}
		})
	}
}

func TestLockLostWhenBroken(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	sa := newSession(t, ctx, cli, 10*time.Second)
	sb := newSession(t, ctx, cli, 10*time.Second)
	a := coord.NewModelLock(sa, "m", coord.WithHolder("a", "host-a"))
	b := coord.NewModelLock(sb, "m", coord.WithHolder("b", "host-b"))
	fa, err := a.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost := a.Lost() // watched from now on
	res := lockAsync(ctx, b)
	waitQueued(t, ctx, cli, "m", 1)

	st, err := coord.BreakLock(ctx, cli, "m")
	if err != nil {
		t.Fatal(err)
	}
	if h := st.Holder; h.Key != fa.Key || h.Rev != fa.Rev || h.ID != "a" || h.Host != "host-a" {
		t.Fatalf("BreakLock removed %+v, want a's key %s (fence %d)", h, fa.Key, fa.Rev)
	}
	if len(st.Waiters) != 1 || st.Waiters[0].ID != "b" {
		t.Fatalf("BreakLock's next in line: %+v, want b", st.Waiters)
	}
	waitClosed(t, ctx, lost, "a's Lost after break")
	if err := a.Err(); !errors.Is(err, coord.ErrLockLost) || errors.Is(err, coord.ErrSessionLost) {
		t.Fatalf("a.Err() = %v, want ErrLockLost, not a session loss", err)
	}
	if isClosed(sa.Done()) {
		t.Fatal("breaking the lock ended a's session")
	}
	if _, err := fa.Txn(ctx, cli).Then(clientv3.OpPut(coord.ModelPrefix("m")+"x", "a")).Commit(); !errors.Is(err, coord.ErrLockLost) {
		t.Fatalf("a's fenced write after break: %v, want ErrLockLost", err)
	}
	fb := recvLock(t, ctx, res)
	if fb.Rev <= fa.Rev {
		t.Fatalf("b's fence %d not above a's %d", fb.Rev, fa.Rev)
	}
	st, _, err = coord.GetLock(ctx, cli, "m")
	if err != nil {
		t.Fatal(err)
	}
	if st.Holder.ID != "b" || st.Holder.Host != "host-b" || st.Holder.Rev != fb.Rev {
		t.Fatalf("holder after break: %+v, want b", st.Holder)
	}
	if err := a.Unlock(ctx); !errors.Is(err, coord.ErrLockLost) {
		t.Fatalf("a.Unlock after break: %v, want ErrLockLost", err)
	}
	// a may take its turn again after b.
	res = lockAsync(ctx, a)
	waitQueued(t, ctx, cli, "m", 1)
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if f := recvLock(t, ctx, res); f.Rev <= fb.Rev {
		t.Fatalf("a's new fence %d not above b's %d", f.Rev, fb.Rev)
	}
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := coord.BreakLock(ctx, cli, "m"); !errors.Is(err, coord.ErrNotLocked) {
		t.Fatalf("BreakLock of a free model: %v, want ErrNotLocked", err)
	}
}

// Deleting the holder's key by hand (etcdctl del) also ends the hold, whether
// the holder notices by asking for Lost afterwards or through a refused
// fenced write, and the holder removes its now stale lockinfo.
func TestLockLostWhenKeyDeletedByHand(t *testing.T) {
	for _, tc := range []struct {
		name   string
		notice func(t *testing.T, ctx context.Context, l *coord.ModelLock)
	}{
		{"Lost after the fact", func(t *testing.T, ctx context.Context, l *coord.ModelLock) {
			waitClosed(t, ctx, l.Lost(), "Lost after the key was deleted")
		}},
		{"fenced write", func(t *testing.T, ctx context.Context, l *coord.ModelLock) {
			if _, err := l.Txn(ctx).Then(clientv3.OpPut(coord.ModelPrefix("m")+"x", "1")).Commit(); !errors.Is(err, coord.ErrLockLost) {
				t.Fatalf("fenced write: %v, want ErrLockLost", err)
			}
			if !isClosed(l.Lost()) {
				t.Fatal("Lost not closed after etcd refused a fenced write")
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t, 30*time.Second)
			cli := newClient(t)
			s := newSession(t, ctx, cli, 10*time.Second)
			l := coord.NewModelLock(s, "m")
			f, err := l.Lock(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cli.Delete(ctx, f.Key); err != nil {
				t.Fatal(err)
			}
			tc.notice(t, ctx, l)
			if !errors.Is(l.Err(), coord.ErrLockLost) {
				t.Fatalf("Err() = %v", l.Err())
			}
			if _, ok := l.Fence(); ok {
				t.Fatal("Fence reports the lock held after its loss")
			}
			lockWaitFor(t, ctx, "stale lockinfo to go", func() (bool, error) {
				resp, err := cli.Get(ctx, coord.LockInfoKey("m"))
				return err == nil && len(resp.Kvs) == 0, err
			})
			// A lost hold needs no Unlock before the next Lock.
			f2, err := l.Lock(ctx)
			if err != nil {
				t.Fatalf("Lock after the loss: %v", err)
			}
			if f2.Rev <= f.Rev {
				t.Fatalf("new fence %d not above the lost one %d", f2.Rev, f.Rev)
			}
			if err := l.Unlock(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestTryLockNamesHolder(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	a := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m", coord.WithHolder("node-a", "host-a"))
	b := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m", coord.WithHolder("node-b", "host-b"))
	fa, err := a.TryLock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.TryLock(ctx)
	if !errors.Is(err, coord.ErrLocked) {
		t.Fatalf("TryLock on a held model: %v, want ErrLocked", err)
	}
	for _, want := range []string{"node-a", "host-a", fmt.Sprint("fence ", fa.Rev)} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %q", err, want)
		}
	}
	checkNoWaiters(t, ctx, cli, "m", "TryLock left a queue key")
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := b.TryLock(ctx); err != nil {
		t.Fatalf("TryLock on a free model: %v", err)
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestLockDeadlineNamesHolderAndLeavesQueue(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	a := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m", coord.WithHolder("node-a", "host-a"))
	b := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m", coord.WithHolder("node-b", "host-b"))
	if _, err := a.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err := b.Lock(short)
	if !errors.Is(err, coord.ErrLocked) || !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "node-a") {
		t.Fatalf("Lock past its deadline: %v, want ErrLocked naming node-a and DeadlineExceeded", err)
	}
	checkNoWaiters(t, ctx, cli, "m", "abandoned Lock left a queue key")
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// Waiters get the lock in the order they queued, and locks ls shows them so.
func TestLockQueueOrderAndListing(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	names := []string{"a", "b", "c", "d"}
	locks := make([]*coord.ModelLock, len(names))
	for i, n := range names {
		locks[i] = coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m", coord.WithHolder(n, "host-"+n))
	}
	fa, err := locks[0].Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	results := make([]<-chan lockResult, len(names))
	for i := 1; i < len(names); i++ {
		results[i] = lockAsync(ctx, locks[i])
		waitQueued(t, ctx, cli, "m", i)
	}
	// Another model, to see two locks listed.
	other := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "other", coord.WithHolder("o", "host-o"))
	fo, err := other.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all, _, err := coord.ListLocks(ctx, cli)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Model != "m" || all[1].Model != "other" {
		t.Fatalf("ListLocks = %+v, want m and other", all)
	}
	m := all[0]
	if m.Holder.ID != "a" || m.Holder.Host != "host-a" || m.Holder.Rev != fa.Rev || m.Holder.Key != fa.Key || m.Holder.Since.IsZero() {
		t.Fatalf("holder %+v, want a with fence %d", m.Holder, fa.Rev)
	}
	var waiters []string
	for _, w := range m.Waiters {
		waiters = append(waiters, w.ID)
	}
	if !slices.Equal(waiters, names[1:]) {
		t.Fatalf("waiters %v, want %v", waiters, names[1:])
	}
	if all[1].Holder.ID != "o" || all[1].Holder.Rev != fo.Rev {
		t.Fatalf("other's holder %+v", all[1].Holder)
	}
	prev := fa.Rev
	for i := 1; i < len(names); i++ {
		if err := locks[i-1].Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		f := recvLock(t, ctx, results[i])
		if f.Rev <= prev {
			t.Fatalf("%s's fence %d not above %d", names[i], f.Rev, prev)
		}
		prev = f.Rev
		for j := i + 1; j < len(names); j++ {
			select {
			case r := <-results[j]:
				t.Fatalf("%s acquired before %s: %+v", names[j], names[i], r)
			default:
			}
		}
	}
	if err := locks[len(names)-1].Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if err := other.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestFencedTxnStaysInsideModel(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	l := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m")
	if _, err := l.Txn(ctx).Then(clientv3.OpPut(coord.ModelPrefix("m")+"x", "1")).Commit(); !errors.Is(err, coord.ErrNotLocked) {
		t.Fatalf("fenced write before Lock: %v, want ErrNotLocked", err)
	}
	if _, err := l.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(ctx)
	mp := coord.ModelPrefix("m")
	for _, tc := range []struct {
		name string
		op   clientv3.Op
	}{
		{"lockinfo", clientv3.OpPut(coord.LockInfoKey("m"), "x")},
		{"lock key", clientv3.OpDelete(l.Key())},
		{"other model", clientv3.OpPut(coord.ModelPrefix("other")+"x", "1")},
		{"sibling prefix", clientv3.OpPut("models/mx/a", "1")},
		{"all models", clientv3.OpDelete(coord.ModelsPrefix(), clientv3.WithPrefix())},
		{"from key", clientv3.OpDelete(mp, clientv3.WithFromKey())},
		{"range past model", clientv3.OpDelete(mp, clientv3.WithRange("models/n"))},
		{"nested", clientv3.OpTxn(nil, nil, []clientv3.Op{clientv3.OpPut("instances/x", "1")})},
	} {
		if _, err := l.Txn(ctx).Then(tc.op).Commit(); !errors.Is(err, coord.ErrOutsideModel) {
			t.Errorf("%s: %v, want ErrOutsideModel", tc.name, err)
		}
	}
	// Inside the model: puts, prefix deletes, reads anywhere, and the caller's
	// own compares, which fail without ErrLockLost.
	resp, err := l.Txn(ctx).Then(clientv3.OpPut(mp+"a", "1"), clientv3.OpGet(coord.LockInfoKey("m"))).Commit()
	if err != nil || !resp.Succeeded || len(resp.Responses) != 2 || len(resp.Responses[1].GetResponseRange().Kvs) != 1 {
		t.Fatalf("fenced write inside the model: %+v, %v", resp, err)
	}
	resp, err = l.Txn(ctx).
		If(clientv3.Compare(clientv3.Value(mp+"a"), "=", "2")).
		Then(clientv3.OpPut(mp+"a", "3")).
		Else(clientv3.OpDelete(mp, clientv3.WithPrefix())).
		Commit()
	if err != nil || resp.Succeeded || resp.Responses[0].GetResponseDeleteRange().Deleted != 1 || resp.Header.Revision == 0 {
		t.Fatalf("fenced txn with a failing compare: %+v, %v; want Else run", resp, err)
	}
}

func TestLockMisuse(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	s := newSession(t, ctx, cli, 10*time.Second)
	if _, err := coord.NewModelLock(s, "no/slash").Lock(ctx); !errors.Is(err, coord.ErrInvalidID) {
		t.Errorf("Lock of an invalid model name: %v, want ErrInvalidID", err)
	}
	l := coord.NewModelLock(s, "m")
	if !isClosed(l.Lost()) || !errors.Is(l.Err(), coord.ErrNotLocked) {
		t.Error("a lock never taken should report itself not held")
	}
	if err := l.Unlock(ctx); !errors.Is(err, coord.ErrNotLocked) {
		t.Errorf("Unlock before Lock: %v, want ErrNotLocked", err)
	}
	if _, err := l.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Lock(ctx); err == nil {
		t.Error("second Lock on a held ModelLock succeeded")
	}
	// A second ModelLock of the same model on the same session would share the
	// key and believe it holds the lock too.
	if _, err := coord.NewModelLock(s, "m").TryLock(ctx); !errors.Is(err, coord.ErrLockInUse) {
		t.Errorf("second ModelLock on one session: %v, want ErrLockInUse", err)
	}
	lost := l.Lost()
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if !isClosed(lost) || !errors.Is(l.Err(), coord.ErrNotLocked) || errors.Is(l.Err(), coord.ErrLockLost) {
		t.Errorf("after Unlock: Lost closed %v, Err %v; want closed and ErrNotLocked", isClosed(lost), l.Err())
	}
	if err := s.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Lock(ctx); !errors.Is(err, coord.ErrSessionClosed) {
		t.Errorf("Lock on a closed session: %v, want ErrSessionClosed", err)
	}
}

// Lock joins a busy queue in a transaction of its own after an uncontended
// Lock, and inside its first transaction after a contended one. Both ways
// remove a leftover key of this ModelLock (an earlier attempt that could not
// clean up) and take a fresh place behind the holder, and both refuse a key
// of someone else on the same session; so does TryLock.
func TestLockJoinsBusyQueueBothWays(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	a := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m", coord.WithHolder("node-a", "host-a"))
	s := newSession(t, ctx, cli, 10*time.Second)
	l := coord.NewModelLock(s, "m", coord.WithHolder("node-l", "host-l"))

	// An uncontended hold, to learn the value of our queue key.
	if _, err := l.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, l.Key())
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("our queue key: %v %v", resp, err)
	}
	ours := string(resp.Kvs[0].Value)
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	plant := func() int64 {
		t.Helper()
		resp, err := cli.Put(ctx, l.Key(), ours, clientv3.WithLease(s.Lease()))
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}

	// The first round joins in a transaction of its own (the last Lock was
	// uncontended), the second inside the first transaction.
	for round := range 2 {
		fa, err := a.Lock(ctx)
		if err != nil {
			t.Fatal(err)
		}
		leftover := plant()
		ch := lockAsync(ctx, l)
		lockWaitFor(t, ctx, "Lock to replace its leftover", func() (bool, error) {
			st, _, err := coord.GetLock(ctx, cli, "m")
			if err != nil || len(st.Waiters) != 1 {
				return false, err
			}
			w := st.Waiters[0]
			return w.Key == l.Key() && w.Rev > leftover, nil
		})
		if err := a.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
		f := recvLock(t, ctx, ch)
		if f.Rev <= fa.Rev || f.Rev <= leftover {
			t.Errorf("round %d: fence %d, want past the holder's %d and the leftover's %d", round, f.Rev, fa.Rev, leftover)
		}
		if err := l.Unlock(ctx); err != nil {
			t.Fatal(err)
		}
	}

	// TryLock on a queue that holds only our leftover takes the lock.
	leftover := plant()
	f, err := l.TryLock(ctx)
	if err != nil || f.Rev <= leftover {
		t.Fatalf("TryLock over our leftover: fence %d, %v; want a fence past %d", f.Rev, err, leftover)
	}
	if err := l.Unlock(ctx); err != nil {
		t.Fatal(err)
	}

	// A concurrency.Mutex on our session holds our key: Lock refuses it on
	// both ways of joining, and so does TryLock.
	ms, err := concurrency.NewSession(cli, concurrency.WithLease(s.Lease()))
	if err != nil {
		t.Fatal(err)
	}
	m := concurrency.NewMutex(ms, strings.TrimSuffix(coord.LockPrefix("m"), "/"))
	if err := m.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	for i, acquire := range []func(context.Context) (coord.Fence, error){l.Lock, l.Lock, l.TryLock} {
		if _, err := acquire(ctx); !errors.Is(err, coord.ErrLockInUse) {
			t.Errorf("acquire %d with a Mutex on our key: %v, want ErrLockInUse", i, err)
		}
	}
	if err := m.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

// lockInfo reads lockinfo/<model>; nil when there is none.
func lockInfo(t *testing.T, ctx context.Context, cli *clientv3.Client, model string) *mvccpb.KeyValue {
	t.Helper()
	resp, err := cli.Get(ctx, coord.LockInfoKey(model))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil
	}
	return resp.Kvs[0]
}

// A holder that took the lock with a ModelLock waiting behind it hands the
// lock over in its Unlock: one transaction deletes its key and writes the
// waiter's lockinfo under the waiter's lease, and the waiter's Lock returns
// without writing anything.
func TestLockHandsOverToNextWaiter(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	newLock := func(id string) (*coord.ModelLock, *coord.Session) {
		s := newSession(t, ctx, cli, 10*time.Second)
		return coord.NewModelLock(s, "m", coord.WithHolder(id, "host-"+id)), s
	}
	x, _ := newLock("node-x")
	a, _ := newLock("node-a")
	b, sb := newLock("node-b")
	if _, err := x.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	cha := lockAsync(ctx, a)
	waitQueued(t, ctx, cli, "m", 1)
	chb := lockAsync(ctx, b)
	waitQueued(t, ctx, cli, "m", 2)
	// x took the lock on an empty queue and knows no successor: a confirms
	// by itself, and learns that b comes next.
	if err := x.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	fa := recvLock(t, ctx, cha)
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	fb := recvLock(t, ctx, chb)
	info := lockInfo(t, ctx, cli, "m")
	if info == nil {
		t.Fatal("no lockinfo after the hand-over")
	}
	if clientv3.LeaseID(info.Lease) != sb.Lease() {
		t.Errorf("lockinfo lease %x, want b's %x", info.Lease, sb.Lease())
	}
	st, rev, err := coord.GetLock(ctx, cli, "m")
	if err != nil {
		t.Fatal(err)
	}
	if h := st.Holder; h.ID != "node-b" || h.Host != "host-node-b" || h.Key != b.Key() || h.Rev != fb.Rev {
		t.Errorf("holder after the hand-over: %+v, want node-b on host-node-b with key %s, fence %d", h, b.Key(), fb.Rev)
	}
	// a's key went in the transaction that wrote lockinfo, and nothing was
	// written since: b's Lock only read.
	hist, err := cli.Get(ctx, a.Key(), clientv3.WithRev(info.ModRevision-1))
	if err != nil {
		t.Fatal(err)
	}
	if len(hist.Kvs) != 1 || hist.Kvs[0].CreateRevision != fa.Rev {
		t.Errorf("a's key (fence %d) was not there just before the hand-over at revision %d: %v", fa.Rev, info.ModRevision, hist.Kvs)
	}
	if now, err := cli.Get(ctx, a.Key(), clientv3.WithRev(info.ModRevision)); err != nil || len(now.Kvs) != 0 {
		t.Errorf("a's key still there at the hand-over revision %d: %v %v", info.ModRevision, now, err)
	}
	if rev != info.ModRevision {
		t.Errorf("etcd is at revision %d after b's Lock, the hand-over was at %d: b wrote", rev, info.ModRevision)
	}
	// b knows no successor: its Unlock deletes lockinfo with its key.
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if info := lockInfo(t, ctx, cli, "m"); info != nil {
		t.Errorf("lockinfo left after the last Unlock: %s", info.Value)
	}
}

// A holder whose known successor left the queue releases without handing
// over; a waiter that gives up removes lockinfo written for it.
func TestLockHandOverToWaiterThatLeft(t *testing.T) {
	ctx := testCtx(t, 30*time.Second)
	cli := newClient(t)
	x := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m", coord.WithHolder("node-x", "h"))
	a := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m", coord.WithHolder("node-a", "h"))
	sb := newSession(t, ctx, cli, 10*time.Second)
	b := coord.NewModelLock(sb, "m", coord.WithHolder("node-b", "h"))
	if _, err := x.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	cha := lockAsync(ctx, a)
	waitQueued(t, ctx, cli, "m", 1)
	bctx, cancelB := context.WithCancel(ctx)
	defer cancelB()
	chb := lockAsync(bctx, b)
	waitQueued(t, ctx, cli, "m", 2)
	if err := x.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	recvLock(t, ctx, cha) // a knows b as its successor
	// As if a had just handed over to b: lockinfo under b's lease. b gives
	// up before it notices, and takes that record with its key.
	if _, err := cli.Put(ctx, coord.LockInfoKey("m"), `{"v":1,"id":"node-b"}`, clientv3.WithLease(sb.Lease())); err != nil {
		t.Fatal(err)
	}
	cancelB()
	if r := <-chb; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("b's Lock after its ctx was cancelled: %v", r.err)
	}
	if info := lockInfo(t, ctx, cli, "m"); info != nil {
		t.Errorf("lockinfo under the lease of a waiter that gave up is still there: %s", info.Value)
	}
	checkNoWaiters(t, ctx, cli, "m", "b left a queue key")
	// a's Unlock finds its successor gone and releases plainly.
	if err := a.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := coord.GetLock(ctx, cli, "m"); !errors.Is(err, coord.ErrNotLocked) {
		t.Errorf("after a's Unlock: %v, want ErrNotLocked", err)
	}
	if info := lockInfo(t, ctx, cli, "m"); info != nil {
		t.Errorf("lockinfo after a's Unlock: %s", info.Value)
	}
}

// A waiter keeps its place and gets the lock when the etcd leader is stopped
// while it waits (its watch is cancelled for lack of a leader and resumed).
func TestLockWaiterSurvivesLeaderLoss(t *testing.T) {
	c := etcdtest.NewCluster(t, 3)
	ctx := testCtx(t, 60*time.Second)
	cli := newClientOn(t, c, "/kato/")
	a := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m", coord.WithHolder("a", "h"))
	b := coord.NewModelLock(newSession(t, ctx, cli, 10*time.Second), "m", coord.WithHolder("b", "h"))
	fa, err := a.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost := a.Lost()
	res := lockAsync(ctx, b)
	waitQueued(t, ctx, cli, "m", 1)

	stopLeader(t, ctx, c)
	// The holder's own watch went through the election too: it still holds.
	if _, err := a.Txn(ctx).Then(clientv3.OpPut(coord.ModelPrefix("m")+"x", "a")).Commit(); err != nil {
		t.Fatalf("holder's fenced write after the election: %v", err)
	}
	if isClosed(lost) {
		t.Fatalf("holder lost the lock in the election: %v", a.Err())
	}
	// Unlock is a write; retry it while the client finds the new leader. An
	// attempt that failed on the client may still have applied: then the
	// retry finds the key gone.
	failed := false
	lockWaitFor(t, ctx, "Unlock after the election", func() (bool, error) {
		err := a.Unlock(ctx)
		if err == nil || failed && errors.Is(err, coord.ErrLockLost) {
			return true, nil
		}
		failed = true
		return false, nil
	})
	if fb := recvLock(t, ctx, res); fb.Rev <= fa.Rev {
		t.Fatalf("b's fence %d not above a's %d", fb.Rev, fa.Rev)
	}
	if err := b.Unlock(ctx); err != nil {
		t.Fatal(err)
	}
}

func ExampleModelLock() {
	ctx := context.Background()
	cli, err := testEtcd.NewClient()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cli.Close()
	coord.Namespace(cli, "/example-lock/")
	s, err := coord.NewSession(ctx, cli, zap.NewNop())
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close(ctx)

	l := coord.NewModelLock(s, "demo", coord.WithHolder("node-a", "host-a"))
	fence, err := l.Lock(ctx)
	if err != nil {
		fmt.Println(err)
		return
	}
	// Every write to the model is fenced by the lock.
	_, err = l.Txn(ctx).Then(clientv3.OpPut(coord.ModelPrefix("demo")+"meta", `{"v":1}`)).Commit()
	fmt.Println("fenced write:", err)
	st, _, _ := coord.GetLock(ctx, cli, "demo")
	fmt.Println("holder:", st.Holder.ID, "on", st.Holder.Host, st.Holder.Rev == fence.Rev)

	if err := l.Unlock(ctx); err != nil {
		fmt.Println(err)
		return
	}
	// A write with the old fence, as from a holder that paused past its lease.
	_, err = fence.Txn(ctx, cli).Then(clientv3.OpPut(coord.ModelPrefix("demo")+"meta", "late")).Commit()
	fmt.Println("late write refused:", errors.Is(err, coord.ErrLockLost))
	// Output:
	// fenced write: <nil>
	// holder: node-a on host-a true
	// late write refused: true
}
