package kb_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
)

// gatedFence returns a FenceFunc that holds the first transaction until
// release is closed, telling entered when it is held: the test can queue
// more changes behind a transaction in flight.
func gatedFence(f *fixture) (fence kb.FenceFunc, entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	first := true
	return func(ctx context.Context) *coord.FencedTxn {
		if first {
			first = false
			close(entered)
			<-release
		}
		return f.lock.Txn(ctx)
	}, entered, release
}

// runCommitter runs com until the test ends; wait waits for Run's return.
func runCommitter(t *testing.T, f *fixture, com *kb.Committer) (wait func() error) {
	ctx, stop := context.WithCancel(f.ctx)
	done := make(chan struct{})
	var err error
	go func() { err = com.Run(ctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return func() error { <-done; return err }
}

func put(key, val string) kb.Change { return kb.Change{Put: kb.Record{Key: key, Value: []byte(val)}} }

func (f *fixture) value(t *testing.T, key string) (string, bool) {
	t.Helper()
	resp, err := f.cli.Get(f.ctx, coord.ModelPrefix(f.model)+key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return "", false
	}
	return string(resp.Kvs[0].Value), true
}

// A change etcd refuses (here: larger than the member's --max-request-bytes)
// fails, and so does everything queued behind it, on the same key (P 5→6
// fails, P 6→7 must not land on top of it) and across keys (a pattern using
// the vector of the failed change must not land without it). The committer
// then takes nothing more, and the lock is kept: this is not a lost lock.
func TestFailedCommitFailsEverythingQueuedBehindIt(t *testing.T) {
	f := setup(t, etcdtest.WithMaxRequestBytes(256<<10))
	fence, entered, release := gatedFence(f)
	com := kb.NewCommitter(f.model, fence, zaptest.NewLogger(t), nil)
	runErr := runCommitter(t, f, com)

	if err := f.com.Submit(f.ctx, put("patterns/P", "5")); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("v", 300<<10) // under kb's limit, over this etcd's
	a, err := com.Enqueue(put("vectors/V", big), put("patterns/P", "6"), put("patterns/PA", "a"))
	if err != nil {
		t.Fatal(err)
	}
	<-entered // A is in flight; B and C queue behind it
	b, err := com.Enqueue(put("patterns/P", "7"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := com.Enqueue(put("patterns/PB", "uses V"))
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-a; err == nil || errors.Is(err, coord.ErrLockLost) || errors.Is(err, kb.ErrOutcomeUnknown) {
		t.Fatalf("oversized change: %v, want etcd's refusal (not applied, lock kept)", err)
	}
	for name, ch := range map[string]<-chan error{"same key": b, "other key": c} {
		if err := <-ch; !errors.Is(err, kb.ErrAborted) {
			t.Errorf("change queued behind the failed one (%s): %v, want ErrAborted", name, err)
		}
	}
	if err := runErr(); err == nil {
		t.Error("Run did not end with the failure")
	}
	if v, _ := f.value(t, "patterns/P"); v != "5" {
		t.Errorf("patterns/P = %q after the failure, want 5", v)
	}
	if _, ok := f.value(t, "patterns/PB"); ok {
		t.Error("patterns/PB reached etcd without the vector it uses")
	}
	if _, err := com.Enqueue(put("patterns/later", "x")); !errors.Is(err, kb.ErrAborted) {
		t.Errorf("enqueue after the failure: %v, want ErrAborted", err)
	}
	select {
	case <-f.lock.Lost():
		t.Fatal("a refused write cost the lock")
	default:
	}
}

// A submission of more writes than a transaction holds is split into
// several fenced transactions, in its order, each rewriting meta; all of it
// is in etcd when Submit returns. Records that together pass the byte limit
// are split the same way.
func TestChangeSetLargerThanTransactionIsSplit(t *testing.T) {
	f := setup(t)
	var txns []int
	com := kb.NewCommitter(f.model, f.lock.Txn, zaptest.NewLogger(t), func(n int, _ time.Duration) { txns = append(txns, n) },
		kb.WithMeta(func() []byte { return []byte("m") }))
	runCommitter(t, f, com)
	var chs []kb.Change
	for i := 0; i < 300; i++ {
		chs = append(chs, put(fmt.Sprintf("vectors/%03d", i), "v"))
	}
	chs = append(chs, put("patterns/P", "uses all 300"))
	if err := com.Submit(f.ctx, chs...); err != nil {
		t.Fatalf("one change set of %d writes: %v", len(chs), err)
	}
	if len(txns) != 3 {
		t.Errorf("%d writes went out in %d transactions (%v), want 3", len(chs), len(txns), txns)
	}
	resp, err := f.cli.Get(f.ctx, coord.ModelPrefix(f.model), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	revs := map[string]int64{}
	for _, kv := range resp.Kvs {
		revs[strings.TrimPrefix(string(kv.Key), coord.ModelPrefix(f.model))] = kv.ModRevision
		if string(kv.Key) == coord.ModelPrefix(f.model)+kb.MetaKey && kv.Version != 3 {
			t.Errorf("meta written %d times, want once per transaction (3)", kv.Version)
		}
	}
	if len(revs) != len(chs)+1 {
		t.Fatalf("%d keys in etcd, want %d", len(revs), len(chs)+1)
	}
	for i := 1; i < 300; i++ {
		if revs[fmt.Sprintf("vectors/%03d", i)] < revs[fmt.Sprintf("vectors/%03d", i-1)] {
			t.Fatalf("vectors/%03d landed before vectors/%03d", i, i-1)
		}
	}
	if revs["patterns/P"] < revs["vectors/299"] || revs["patterns/P"] == revs["vectors/000"] {
		t.Errorf("the pattern landed at %d, the vectors at %d..%d: not in order", revs["patterns/P"], revs["vectors/000"], revs["vectors/299"])
	}

	txns = nil
	big := strings.Repeat("b", 600<<10)
	if err := com.Submit(f.ctx, put("vectors/b1", big), put("vectors/b2", big), put("vectors/b3", big)); err != nil {
		t.Fatalf("three records of 600 KiB: %v", err)
	}
	if len(txns) != 3 {
		t.Errorf("three records of 600 KiB went out in %d transactions, want 3", len(txns))
	}
}

// A record no transaction can hold is refused at Enqueue, before anything is
// queued; the committer goes on.
func TestRecordLargerThanTransactionRefused(t *testing.T) {
	f := setup(t)
	_, err := f.com.Enqueue(put("patterns/small", "x"), put("patterns/huge", strings.Repeat("h", kb.MaxRecordBytes)))
	if !errors.Is(err, kb.ErrTooLarge) {
		t.Fatalf("enqueue of a record over MaxRecordBytes: %v", err)
	}
	if err := f.com.Submit(f.ctx, put("patterns/next", "x")); err != nil {
		t.Fatalf("after a refused record: %v", err)
	}
	if _, ok := f.value(t, "patterns/small"); ok {
		t.Error("part of a refused submission was written")
	}
}

// A transaction cancelled in flight (the node stops serving) is of unknown
// outcome, not a lost lock; what was queued behind it was never sent.
func TestCancelledInFlightIsOutcomeUnknown(t *testing.T) {
	f := setup(t)
	fence, entered, release := gatedFence(f)
	com := kb.NewCommitter(f.model, fence, zaptest.NewLogger(t), nil)
	ctx, stop := context.WithCancel(f.ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- com.Run(ctx) }()
	a, err := com.Enqueue(put("patterns/a", "1"))
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	b, err := com.Enqueue(put("patterns/b", "1"))
	if err != nil {
		t.Fatal(err)
	}
	stop()
	close(release)
	if err := <-a; !errors.Is(err, kb.ErrOutcomeUnknown) || errors.Is(err, coord.ErrLockLost) {
		t.Errorf("write cancelled in flight: %v, want ErrOutcomeUnknown", err)
	}
	if err := <-b; !errors.Is(err, kb.ErrStopped) {
		t.Errorf("write queued behind it: %v, want ErrStopped", err)
	}
	if err := <-runErr; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}
}
