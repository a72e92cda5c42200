package kb_test

// This file tests the Committer's failures and its change sets larger than
// one etcd request.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// gatedFence returns a FenceFunc that holds its n-th transaction (from 1)
// until release is closed, closing entered when it holds it: the test can
// queue more changes behind a transaction in flight.
func gatedFence(f *fixture, n int64) (fence kb.FenceFunc, entered, release chan struct{}) {
	entered, release = make(chan struct{}), make(chan struct{})
	var calls atomic.Int64
	return func(ctx context.Context) *coord.FencedTxn {
		if calls.Add(1) == n {
			close(entered)
			<-release
		}
		return f.lock.Txn(ctx)
	}, entered, release
}

// randomFloats returns a vector of n random floats (they hardly compress).
func randomFloats(r *rand.Rand, n int) processor.Vector {
	fs := make([]float64, n)
	for i := range fs {
		fs[i] = r.NormFloat64() * 1e6
	}
	return processor.FloatVector(fs...)
}

// A change etcd refuses (here: larger than the member's --max-request-bytes)
// fails, and so does everything queued behind it, on the same pattern (P 5→6
// fails, P 6→7 must not land on top of it) and across names (a pattern
// using the vector of the failed change must not land without it). The
// committer then takes nothing more, and the lock is kept: this is not a
// lost lock.
func TestFailedCommitFailsEverythingQueuedBehindIt(t *testing.T) {
	f := setup(t, etcdtest.WithMaxRequestBytes(256<<10))
	fence, entered, release := gatedFence(f, 2)
	com, runErr := f.committer(t, 0, fence, nil)

	if err := com.Submit(f.ctx, pat(1, 5, "P", "x")); err != nil {
		t.Fatal(err)
	}
	v := vector(1, randomFloats(rand.New(rand.NewPCG(1, 2)), 50_000)) // ~400 KiB: under kb's limit, over this etcd's
	a, err := com.Enqueue(v, pat(1, 6, "P", "x"), pat(2, 1, "PA", "x"))
	if err != nil {
		t.Fatal(err)
	}
	<-entered // A is in flight; B and C queue behind it
	b, err := com.Enqueue(pat(1, 7, "P", "x"))
	if err != nil {
		t.Fatal(err)
	}
	pb := pat(3, 1, "PB", "uses V")
	c, err := com.Enqueue(pb)
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-a; err == nil || errors.Is(err, coord.ErrLockLost) || errors.Is(err, kb.ErrOutcomeUnknown) {
		t.Fatalf("oversized change: %v, want etcd's refusal (not applied, lock kept)", err)
	}
	for name, ch := range map[string]<-chan error{"same pattern": b, "other pattern": c} {
		if err := <-ch; !errors.Is(err, kb.ErrAborted) {
			t.Errorf("change queued behind the failed one (%s): %v, want ErrAborted", name, err)
		}
	}
	if err := runErr(); err == nil || errors.Is(err, kb.ErrAborted) {
		t.Errorf("Run ended with %v, want the failure", err)
	}
	m, _ := f.load(t)
	if p := m.patterns[pat(1, 5, "P", "x").Pattern.Name]; p.Frequency != 5 {
		t.Errorf("P has frequency %d after the failure, want 5", p.Frequency)
	}
	if _, ok := m.patterns[pb.Pattern.Name]; ok || len(m.vectors) != 0 {
		t.Error("PB reached etcd without the vector it uses")
	}
	if _, err := com.Enqueue(pat(4, 1, "later", "x")); !errors.Is(err, kb.ErrAborted) {
		t.Errorf("enqueue after the failure: %v, want ErrAborted", err)
	}
	select {
	case <-f.lock.Lost():
		t.Fatal("a refused write cost the lock")
	default:
	}
}

// A transaction cancelled in flight (the node stops serving) is of unknown
// outcome, not a lost lock; what was queued behind it was never sent.
func TestCancelledInFlightIsOutcomeUnknown(t *testing.T) {
	f := setup(t)
	fence, entered, release := gatedFence(f, 1)
	com := kb.NewCommitter(f.model, fence, f.lg, 0, nil)
	ctx, stop := context.WithCancel(f.ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- com.Run(ctx) }()
	a, err := com.Enqueue(pat(1, 1, "a", "x"))
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	b, err := com.Enqueue(pat(2, 1, "b", "x"))
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
	if _, err := com.Enqueue(pat(3, 1, "c", "x")); !errors.Is(err, kb.ErrStopped) {
		t.Errorf("enqueue after Run ended: %v, want ErrStopped", err)
	}
}

// A change set larger than one etcd request (130 new vectors of 2k random
// floats, about 2 MB) is written as several log entries, each rewriting meta, and
// is answered once all of them are durable; Load reads it whole, and Follow
// delivers it in one call.
func TestChangeSetLargerThanOneRequest(t *testing.T) {
	f := setup(t)
	_, st0 := f.load(t)
	revs, _ := f.follow(t, st0, false)
	var batches []int
	var metas atomic.Int64
	com, _ := f.committer(t, 0, nil, func(n int, _ time.Duration) { batches = append(batches, n) },
		kb.WithMeta(func() []byte { metas.Add(1); return []byte(`{"format":1}`) }))
	r := rand.New(rand.NewPCG(3, 4))
	var chs processor.Changes
	for i := range 130 {
		chs = append(chs, vector(uint64(i)+1, randomFloats(r, 2_000)))
	}
	chs = append(chs, pat(1, 1, "uses", "all 130"))
	if err := com.Submit(f.ctx, chs...); err != nil {
		t.Fatalf("one change set of 130 vectors of 2k floats: %v", err)
	}
	entries := f.count(t, "log/")
	if entries < 2 || metas.Load() != entries || !reflect.DeepEqual(batches, []int{len(chs)}) {
		t.Fatalf("%d log entries, %d meta writes, batches %v: want several entries, meta with each, one batch of %d", entries, metas.Load(), batches, len(chs))
	}
	meta, err := f.cli.Get(f.ctx, f.key(kb.MetaKey))
	if err != nil || meta.Kvs[0].Version != entries {
		t.Fatalf("meta written %v times (%v), want %d", meta.Kvs, err, entries)
	}
	m, st := f.load(t)
	if st.LogEntries != int(entries) || len(m.groups) != 1 || !reflect.DeepEqual(m.groups[0], chs) {
		t.Fatalf("loaded %d log entries as %d groups: want the change set whole", st.LogEntries, len(m.groups))
	}
	got := next(t, revs)
	if !reflect.DeepEqual(got.chs, chs) || got.next != uint64(entries) {
		t.Fatalf("followed %d changes (next %d), want the %d of the change set at once (next %d)", len(got.chs), got.next, len(chs), entries)
	}
}

// Enqueue refuses, writing nothing, a change set above the limit and a
// change that does not encode; the committer goes on.
func TestEnqueueRefusesWhatCannotBeWritten(t *testing.T) {
	f := setup(t)
	com, _ := f.committer(t, 0, nil, nil)
	small := pat(1, 1, "small", "x")
	// Named by hand: hashing 33 MiB under the race detector is slow, and
	// Enqueue does not read the name.
	huge := processor.Change{Kind: processor.PutPattern, Pattern: processor.PatternRecord{Name: "huge",
		Events: [][]string{{strings.Repeat("h", 33<<20), "x"}}, Length: 2, Frequency: 1, Emotives: []processor.Emotives{}, Seq: 2}}
	if _, err := com.Enqueue(small, huge); !errors.Is(err, kb.ErrTooLarge) {
		t.Fatalf("enqueue of a 33 MiB change set: %v, want ErrTooLarge", err)
	}
	bad := []processor.Change{pat(3, 0, "frequency", "0"), {Kind: processor.ChangeKind(9)}}
	nan := pat(4, 1, "emotive", "NaN")
	nan.Pattern.Emotives = []processor.Emotives{{{Name: "e", Value: math.NaN()}}}
	bad = append(bad, nan, vector(1, processor.FloatVector(1, math.Inf(1))))
	for _, ch := range bad {
		if _, err := com.Enqueue(small, ch); err == nil {
			t.Errorf("enqueue of %+v accepted", ch)
		}
	}
	next := pat(5, 1, "next", "x")
	if err := com.Submit(f.ctx, next); err != nil {
		t.Fatalf("after refused submissions: %v", err)
	}
	m, st := f.load(t)
	if len(m.patterns) != 1 || st.LogEntries != 1 {
		t.Fatalf("%d patterns in %d log entries: part of a refused submission was written", len(m.patterns), st.LogEntries)
	}
}

// A group written as several log entries whose last entry fails (etcd
// refuses it, or the lock is broken between the entries) was never stored:
// Load and Follow skip the entries it wrote, and a later group, written
// after a reload, loads and arrives.
func TestGroupWhoseLastEntryFailsIsNeverSeen(t *testing.T) {
	for _, how := range []string{"refused", "lock broken"} {
		t.Run(how, func(t *testing.T) {
			f := setup(t)
			com0, _ := f.committer(t, 0, nil, nil)
			first := pat(1, 1, "first", "x")
			if err := com0.Submit(f.ctx, first); err != nil {
				t.Fatal(err)
			}
			_, st0 := f.load(t)
			revs, done := f.follow(t, st0, false)

			// 20 vectors of 10k random floats: two log entries.
			var calls atomic.Int64
			var breakErr error
			fence := func(ctx context.Context) *coord.FencedTxn {
				txn := f.lock.Txn(ctx)
				if how == "lock broken" && calls.Add(1) == 2 {
					_, breakErr = coord.BreakLock(ctx, f.cli, f.model)
				}
				return txn
			}
			pad := fmt.Sprintf(`{"format":1,"pad":%q}`, strings.Repeat("p", 1200<<10))
			var metas atomic.Int64
			meta := kb.WithMeta(func() []byte {
				if how == "refused" && metas.Add(1) == 2 {
					return []byte(pad) // with a 1 MiB entry, more than etcd's 1.5 MiB request
				}
				return []byte(`{"format":1}`)
			})
			com, _ := f.committer(t, st0.NextSeq, fence, nil, meta)
			r := rand.New(rand.NewPCG(5, 6))
			var chs processor.Changes
			for i := range 20 {
				chs = append(chs, vector(uint64(i)+1, randomFloats(r, 10_000)))
			}
			err := com.Submit(f.ctx, chs...)
			switch {
			case breakErr != nil:
				t.Fatal(breakErr)
			case err == nil:
				t.Fatal("the group's last entry did not fail")
			case how == "refused" && errors.Is(err, coord.ErrLockLost), how == "lock broken" && !errors.Is(err, coord.ErrLockLost):
				t.Fatalf("the group failed with %v", err)
			}
			if got := f.count(t, "log/"); got != 2 {
				t.Fatalf("%d log entries, want the first group and the first entry of the failed one (the test needs a group of exactly two entries)", got)
			}

			m, st := f.load(t)
			if len(m.vectors) != 0 || len(m.patterns) != 1 || st.LogEntries != 2 || st.NextSeq != 2 {
				t.Fatalf("after the failed group: %d vectors, %d patterns, %+v", len(m.vectors), len(m.patterns), st)
			}
			if how == "lock broken" {
				f.relock(t)
			}
			later := pat(2, 1, "later", "x")
			com2, _ := f.committer(t, st.NextSeq, nil, nil)
			if err := com2.Submit(f.ctx, later); err != nil {
				t.Fatal(err)
			}
			m, _ = f.load(t)
			if len(m.vectors) != 0 || len(m.patterns) != 2 || !reflect.DeepEqual(m.groups, []processor.Changes{{first}, {later}}) {
				t.Fatalf("after a later group: %d vectors, groups %+v", len(m.vectors), m.groups)
			}
			if got := next(t, revs); !reflect.DeepEqual(got.chs, processor.Changes{later}) || got.next != 3 {
				t.Fatalf("the follower got %d changes (next %d), want only the later group", len(got.chs), got.next)
			}
			select {
			case err := <-done:
				t.Fatalf("Follow ended: %v", err)
			default:
			}
		})
	}
}
