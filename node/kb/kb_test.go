package kb_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
)

type fixture struct {
	cli   *clientv3.Client
	lock  *coord.ModelLock
	ctx   context.Context
	com   *kb.Committer
	txns  atomic.Int64
	model string
}

func setup(t *testing.T, opts ...etcdtest.Option) *fixture {
	t.Helper()
	c := etcdtest.New(t, opts...)
	cli := c.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t), coord.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	f := &fixture{cli: cli, ctx: ctx, model: "m"}
	f.lock = coord.NewModelLock(s, f.model, coord.WithHolder("node-a", "host-a"))
	if _, err := f.lock.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	// Unlock before the session and the client close: it stops the lock's
	// monitor, which would otherwise still read the client as it closes.
	t.Cleanup(func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.lock.Unlock(uctx)
	})
	f.com = kb.NewCommitter(f.model, f.lock.Txn, zaptest.NewLogger(t), func(int, time.Duration) { f.txns.Add(1) })
	rctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { f.com.Run(rctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return f
}

func (f *fixture) count(t *testing.T, sub string) int64 {
	t.Helper()
	resp, err := f.cli.Get(f.ctx, coord.ModelPrefix(f.model)+sub, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

// Many concurrent callers are written in fewer transactions than callers, and
// every caller is answered only after its record is in etcd.
func TestGroupCommitDurableBeforeAnswer(t *testing.T) {
	f := setup(t)
	const n = 300
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			key := fmt.Sprintf("patterns/%04d", i)
			if err := f.com.Submit(f.ctx, kb.Change{Put: kb.Record{Key: key, Value: []byte("v")}}); err != nil {
				errs <- err
				return
			}
			// Answered: the record must be readable now.
			resp, err := f.cli.Get(f.ctx, coord.ModelPrefix(f.model)+key)
			if err != nil || len(resp.Kvs) != 1 {
				errs <- fmt.Errorf("record %s not in etcd when Submit returned (%v)", key, err)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := f.count(t, "patterns/"); got != n {
		t.Fatalf("%d records, want %d", got, n)
	}
	txns := f.txns.Load()
	t.Logf("%d submits in %d transactions", n, txns)
	if txns >= n {
		t.Fatalf("%d transactions for %d concurrent submits: no group commit", txns, n)
	}
}

func TestLastPutOfAKeyWinsAndClearIsOrdered(t *testing.T) {
	f := setup(t)
	var chans []<-chan error
	enq := func(chs ...kb.Change) {
		ch, err := f.com.Enqueue(chs...)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	enq(kb.Change{Put: kb.Record{Key: "patterns/a", Value: []byte("1")}})
	enq(kb.Change{Put: kb.Record{Key: "patterns/a", Value: []byte("2")}}, kb.Change{Put: kb.Record{Key: "patterns/b", Value: []byte("1")}})
	enq(kb.Change{Clear: true})
	enq(kb.Change{Put: kb.Record{Key: "patterns/c", Value: []byte("1")}})
	enq(kb.Change{Put: kb.Record{Key: "patterns/c", Value: []byte("3")}})
	for _, ch := range chans {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	resp, err := f.cli.Get(f.ctx, coord.ModelPrefix(f.model), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != coord.ModelPrefix(f.model)+"patterns/c" || string(resp.Kvs[0].Value) != "3" {
		t.Fatalf("after clear: %v", resp.Kvs)
	}
	if _, err := f.com.Enqueue(kb.Change{Clear: true}, kb.Change{Put: kb.Record{Key: "x", Value: nil}}); err == nil {
		t.Fatal("a clear mixed with puts was accepted")
	}
}

// After the lock is broken, no write reaches etcd and Submit says why.
func TestWritesFailAfterLockLost(t *testing.T) {
	f := setup(t)
	if err := f.com.Submit(f.ctx, kb.Change{Put: kb.Record{Key: "patterns/before", Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := coord.BreakLock(f.ctx, f.cli, f.model); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.lock.Lost():
	case <-f.ctx.Done():
		t.Fatal("lock not lost after break")
	}
	err := f.com.Submit(f.ctx, kb.Change{Put: kb.Record{Key: "patterns/after", Value: []byte("x")}})
	if !errors.Is(err, coord.ErrLockLost) {
		t.Fatalf("write after the break: %v, want ErrLockLost", err)
	}
	if got := f.count(t, "patterns/after"); got != 0 {
		t.Fatal("a write after the lock was lost reached etcd")
	}
}

// Load streams the whole model at one revision, in key order, with
// progress; Follow then delivers each later revision whole, in order.
func TestLoadStreamsAtOneRevisionThenFollow(t *testing.T) {
	f := setup(t)
	const n = 2500
	for i := 0; i < n; i += 100 {
		var chs []kb.Change
		for j := i; j < i+100; j++ {
			chs = append(chs, kb.Change{Put: kb.Record{Key: fmt.Sprintf("patterns/%05d", j), Value: []byte(fmt.Sprint(j))}})
		}
		if err := f.com.Submit(f.ctx, chs...); err != nil {
			t.Fatal(err)
		}
	}
	var got []string
	var progress []int64
	rev, err := kb.Load(f.ctx, f.cli.KV, zaptest.NewLogger(t), f.model, func(r kb.Record) error {
		if len(got) == 0 {
			// Writes during the load are not in it: it reads one revision.
			if err := f.com.Submit(f.ctx, kb.Change{Put: kb.Record{Key: "patterns/00000-late", Value: []byte("x")}}); err != nil {
				return err
			}
		}
		got = append(got, r.Key)
		return nil
	}, func(n int64) { progress = append(progress, n) })
	if err != nil {
		t.Fatal(err)
	}
	if len(progress) < 2 || progress[len(progress)-1] != n {
		t.Errorf("progress %v, want several chunks ending at %d", progress, n)
	}
	if len(got) != n || got[0] != "patterns/00000" || got[n-1] != fmt.Sprintf("patterns/%05d", n-1) {
		t.Fatalf("loaded %d records (%v ... )", len(got), got[:3])
	}
	for i := 1; i < n; i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("records out of order at %d: %s after %s", i, got[i], got[i-1])
		}
	}

	// Changes after the load revision arrive through Follow, in order.
	if err := f.com.Submit(f.ctx, kb.Change{Put: kb.Record{Key: "patterns/new", Value: []byte("n")}}); err != nil {
		t.Fatal(err)
	}
	if err := f.com.Submit(f.ctx, kb.Change{Clear: true}); err != nil {
		t.Fatal(err)
	}
	type revision struct {
		rev int64
		evs []kb.Event
	}
	revs := make(chan revision, 10)
	fctx, cancel := context.WithCancel(f.ctx)
	defer cancel()
	followed := make(chan error, 1)
	go func() {
		followed <- kb.Follow(fctx, f.cli, f.model, rev+1, func(r int64, evs []kb.Event) error {
			if len(evs) > 0 {
				revs <- revision{r, evs}
			}
			return nil
		})
	}()
	defer func() { cancel(); <-followed }()
	next := func() revision {
		select {
		case r := <-revs:
			return r
		case <-time.After(10 * time.Second):
			t.Fatal("no revision followed within 10 s")
		}
		return revision{}
	}
	if r := next(); len(r.evs) != 1 || r.evs[0].Key != "patterns/00000-late" {
		t.Fatalf("first followed revision %+v", r)
	}
	if r := next(); len(r.evs) != 1 || r.evs[0].Key != "patterns/new" || r.evs[0].Deleted {
		t.Fatalf("second followed revision %+v", r)
	}
	// The clear is one revision: every delete arrives in one call.
	if r := next(); len(r.evs) != n+2 || !r.evs[0].Deleted || r.evs[0].ModRev != r.rev {
		t.Fatalf("the clear arrived as %d events (want %d in one call)", len(r.evs), n+2)
	}
}

// With WithMeta every transaction rewrites the meta key, and a clear keeps it.
func TestMetaWrittenWithEveryTransaction(t *testing.T) {
	f := setup(t)
	n := 0
	com := kb.NewCommitter(f.model, f.lock.Txn, zaptest.NewLogger(t), nil, kb.WithMeta(func() []byte {
		n++
		return []byte(fmt.Sprintf(`{"n":%d}`, n))
	}))
	rctx, stop := context.WithCancel(f.ctx)
	done := make(chan struct{})
	go func() { com.Run(rctx); close(done) }()
	defer func() { stop(); <-done }()
	if err := com.Submit(f.ctx, kb.Change{Put: kb.Record{Key: "patterns/a", Value: []byte("1")}}); err != nil {
		t.Fatal(err)
	}
	if err := com.Submit(f.ctx, kb.Change{Clear: true}); err != nil {
		t.Fatal(err)
	}
	resp, err := f.cli.Get(f.ctx, coord.ModelPrefix(f.model), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != coord.ModelPrefix(f.model)+kb.MetaKey || string(resp.Kvs[0].Value) != `{"n":2}` {
		t.Fatalf("after put and clear: %v", resp.Kvs)
	}
}

// With several transactions in flight, writes to one key still land in
// submission order: the last value submitted is the one etcd keeps, and every
// intermediate revision of the key holds an increasing value.
func TestPipelinedWritesKeepOrderPerKey(t *testing.T) {
	f := setup(t)
	const n = 200
	var waits []<-chan error
	for i := 0; i < n; i++ {
		chs := []kb.Change{{Put: kb.Record{Key: "patterns/shared", Value: []byte(fmt.Sprintf("%04d", i))}}}
		if i%3 == 0 {
			chs = append(chs, kb.Change{Put: kb.Record{Key: fmt.Sprintf("patterns/own-%d", i), Value: []byte("x")}})
		}
		ch, err := f.com.Enqueue(chs...)
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, ch)
	}
	for _, ch := range waits {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	key := coord.ModelPrefix(f.model) + "patterns/shared"
	resp, err := f.cli.Get(f.ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if got := string(resp.Kvs[0].Value); got != fmt.Sprintf("%04d", n-1) {
		t.Fatalf("final value %s, want %04d", got, n-1)
	}
	// Walk the key's history: values only ever increase.
	prev := ""
	for rev := resp.Kvs[0].ModRevision; rev > 0; {
		r, err := f.cli.Get(f.ctx, key, clientv3.WithRev(rev))
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kvs) == 0 {
			break
		}
		v := string(r.Kvs[0].Value)
		if prev != "" && v >= prev {
			t.Fatalf("value %s at revision %d is not below the later %s", v, rev, prev)
		}
		prev = v
		rev = r.Kvs[0].ModRevision - 1
	}
}

// noStream is a KV of an etcd older than 3.7: it has no RangeStream.
type noStream struct{ clientv3.KV }

func (noStream) GetStream(context.Context, string, ...clientv3.OpOption) (clientv3.GetStreamChan, error) {
	return nil, status.Error(codes.Unimplemented, "unknown method RangeStream")
}

// Against an etcd without RangeStream, Load reads pages at one revision.
func TestLoadWithoutRangeStreamReadsPages(t *testing.T) {
	f := setup(t)
	const n = 2500
	for i := 0; i < n; i += 100 {
		var chs []kb.Change
		for j := i; j < i+100; j++ {
			chs = append(chs, kb.Change{Put: kb.Record{Key: fmt.Sprintf("patterns/%05d", j), Value: []byte("v")}})
		}
		if err := f.com.Submit(f.ctx, chs...); err != nil {
			t.Fatal(err)
		}
	}
	got := 0
	rev, err := kb.Load(f.ctx, noStream{f.cli.KV}, zaptest.NewLogger(t), f.model, func(r kb.Record) error {
		if got == 0 {
			if err := f.com.Submit(f.ctx, kb.Change{Put: kb.Record{Key: "patterns/99999-late", Value: []byte("x")}}); err != nil {
				return err
			}
		}
		got++
		return nil
	}, nil)
	if err != nil || got != n || rev == 0 {
		t.Fatalf("paged load: %d records at revision %d, %v; want %d", got, rev, err, n)
	}
}
