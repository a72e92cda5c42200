package kb_test

// This file holds the tests' fixture and helpers, and the tests of writing
// through a Committer and reading back with Load and Follow.

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

type fixture struct {
	cli   *clientv3.Client
	sess  *coord.Session
	lock  *coord.ModelLock
	ctx   context.Context
	lg    *zap.Logger
	model string
}

func setup(t *testing.T, opts ...etcdtest.Option) *fixture {
	t.Helper()
	c := etcdtest.New(t, opts...)
	cli := c.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	lg := zaptest.NewLogger(t)
	s, err := coord.NewSession(ctx, cli, lg, coord.WithTTL(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	f := &fixture{cli: cli, sess: s, ctx: ctx, lg: lg, model: "m"}
	f.relock(t)
	return f
}

// relock takes the model lock with a new ModelLock (after a test broke the
// last one). It is unlocked before the session and the client close, so
// that its monitor has stopped before the client closes.
func (f *fixture) relock(t *testing.T) {
	t.Helper()
	l := coord.NewModelLock(f.sess, f.model, coord.WithHolder("node-a", "host-a"))
	if _, err := l.Lock(f.ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		l.Unlock(uctx)
	})
	f.lock = l
}

// breakLock breaks the model lock as an admin would and waits until the
// holder knows.
func (f *fixture) breakLock(t *testing.T) {
	t.Helper()
	if _, err := coord.BreakLock(f.ctx, f.cli, f.model); err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.lock.Lost():
	case <-f.ctx.Done():
		t.Fatal("lock not lost after break")
	}
}

// committer runs a committer appending from log sequence number next until
// the test ends; wait returns Run's error once it ended. A nil fence is the
// fixture's lock.
func (f *fixture) committer(t *testing.T, next uint64, fence kb.FenceFunc, onBatch func(int, time.Duration), opts ...kb.CommitterOption) (com *kb.Committer, wait func() error) {
	t.Helper()
	if fence == nil {
		fence = func(ctx context.Context) *coord.FencedTxn { return f.lock.Txn(ctx) }
	}
	com = kb.NewCommitter(f.model, fence, f.lg, next, onBatch, opts...)
	ctx, stop := context.WithCancel(f.ctx)
	done := make(chan struct{})
	var err error
	go func() { err = com.Run(ctx); close(done) }()
	t.Cleanup(func() { stop(); <-done })
	return com, func() error { <-done; return err }
}

func (f *fixture) key(sub string) string { return coord.ModelPrefix(f.model) + sub }

func (f *fixture) count(t *testing.T, sub string) int64 {
	t.Helper()
	resp, err := f.cli.Get(f.ctx, f.key(sub), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	return resp.Count
}

func (f *fixture) put(t *testing.T, sub string, v []byte) {
	t.Helper()
	if _, err := f.cli.Put(f.ctx, f.key(sub), string(v)); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) get(t *testing.T, sub string) ([]byte, bool) {
	t.Helper()
	resp, err := f.cli.Get(f.ctx, f.key(sub))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) == 0 {
		return nil, false
	}
	return resp.Kvs[0].Value, true
}

// keys lists the model's keys under sub, relative to the model's prefix.
func (f *fixture) keys(t *testing.T, sub string) []string {
	t.Helper()
	resp, err := f.cli.Get(f.ctx, f.key(sub), clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range resp.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), coord.ModelPrefix(f.model)))
	}
	return out
}

// load loads the model into a model, failing the test on an error.
func (f *fixture) load(t *testing.T) (*model, kb.State) {
	t.Helper()
	m := newModel()
	st, err := kb.Load(f.ctx, f.cli.KV, f.lg, f.model, m, nil)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	return m, st
}

// model is a Loader that keeps the records it is given, applying the log's
// changes the way a processor's Replay does (a stored vector is kept).
type model struct {
	patterns map[string]processor.PatternRecord
	vectors  map[string]processor.VectorRecord
	records  int // snapshot records
	built    int
	groups   []processor.Changes
}

func newModel() *model {
	return &model{patterns: map[string]processor.PatternRecord{}, vectors: map[string]processor.VectorRecord{}}
}

func (m *model) Record(ch processor.Change) error {
	if m.built > 0 {
		return errors.New("a snapshot record after Built")
	}
	if ch.Kind == processor.ClearAll {
		return errors.New("a clear-all in a snapshot")
	}
	m.records++
	m.apply(ch)
	return nil
}

func (m *model) Built() error { m.built++; return nil }

func (m *model) Changes(chs processor.Changes) error {
	if m.built != 1 {
		return fmt.Errorf("log changes with Built called %d times", m.built)
	}
	m.groups = append(m.groups, chs)
	for _, ch := range chs {
		m.apply(ch)
	}
	return nil
}

func (m *model) apply(ch processor.Change) {
	switch ch.Kind {
	case processor.PutPattern:
		if ch.Pattern.Name == "" {
			ch.Pattern.Name = processor.ModelName(ch.Pattern.Events)
		}
		m.patterns[ch.Pattern.Name] = ch.Pattern
	case processor.PutVector:
		if _, ok := m.vectors[ch.Vector.Name]; !ok {
			m.vectors[ch.Vector.Name] = ch.Vector
		}
	case processor.ClearAll:
		clear(m.patterns)
		clear(m.vectors)
	}
}

// same reports how two models differ ("" when they hold the same records).
func (m *model) same(o *model) string {
	if !reflect.DeepEqual(m.patterns, o.patterns) {
		return fmt.Sprintf("patterns differ: %d against %d records\n%s", len(m.patterns), len(o.patterns), diffNames(m.patterns, o.patterns))
	}
	if !reflect.DeepEqual(m.vectors, o.vectors) {
		return fmt.Sprintf("vectors differ: %d against %d records", len(m.vectors), len(o.vectors))
	}
	return ""
}

func diffNames(a, b map[string]processor.PatternRecord) string {
	var out []string
	for n, r := range a {
		if s, ok := b[n]; !ok || !reflect.DeepEqual(r, s) {
			out = append(out, fmt.Sprintf("%s: %+v / %+v", n, r, s))
		}
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			out = append(out, n+": missing on the left")
		}
	}
	sort.Strings(out)
	if len(out) > 5 {
		out = out[:5]
	}
	return strings.Join(out, "\n")
}

// sorted returns the model's records as changes: patterns, then vectors,
// each in ascending sequence (a sorted snapshot's order).
func (m *model) sorted() []processor.Change {
	var out []processor.Change
	for _, p := range bySeq(m.patterns, func(p processor.PatternRecord) uint64 { return p.Seq }) {
		out = append(out, processor.Change{Kind: processor.PutPattern, Pattern: p})
	}
	for _, v := range bySeq(m.vectors, func(v processor.VectorRecord) uint64 { return v.Seq }) {
		out = append(out, processor.Change{Kind: processor.PutVector, Vector: v})
	}
	return out
}

// bySeq returns the records of m in ascending sequence.
func bySeq[R any](m map[string]R, seq func(R) uint64) []R {
	out := make([]R, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return seq(out[i]) < seq(out[j]) })
	return out
}

// pattern returns a valid PutPattern of events (at least two symbols).
func pattern(seq uint64, freq int64, events ...[]string) processor.Change {
	n := 0
	for _, ev := range events {
		n += len(ev)
	}
	return processor.Change{Kind: processor.PutPattern, Pattern: processor.PatternRecord{
		Name: processor.ModelName(events), Events: events, Length: n, Frequency: freq,
		Emotives: []processor.Emotives{}, Seq: seq}}
}

// pat is a pattern of one event of the given symbols.
func pat(seq uint64, freq int64, syms ...string) processor.Change {
	return pattern(seq, freq, syms)
}

// numbered is pattern number i of a family (a distinct name per i).
func numbered(i int, freq int64) processor.Change {
	return pat(uint64(i)+1, freq, "s", fmt.Sprintf("n%06d", i))
}

func vector(seq uint64, v processor.Vector) processor.Change {
	return processor.Change{Kind: processor.PutVector, Vector: processor.VectorRecord{Name: processor.VectorName(v), Vector: v, Seq: seq}}
}

func clearAll() processor.Change { return processor.Change{Kind: processor.ClearAll} }

func name(ch processor.Change) string {
	if ch.Kind == processor.PutVector {
		return ch.Vector.Name
	}
	return ch.Pattern.Name
}

// Many concurrent callers are written in fewer transactions than callers, and
// every caller is answered only after its change is in etcd: a Load right
// after the answer holds it.
func TestGroupCommitDurableBeforeAnswer(t *testing.T) {
	f := setup(t)
	var txns atomic.Int64
	com, _ := f.committer(t, 0, nil, func(int, time.Duration) { txns.Add(1) })
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			ch := numbered(i, 1)
			if err := com.Submit(f.ctx, ch); err != nil {
				errs <- err
				return
			}
			// Answered: the change must be loadable now.
			m := newModel()
			if _, err := kb.Load(f.ctx, f.cli.KV, zap.NewNop(), f.model, m, nil); err != nil {
				errs <- err
				return
			}
			if _, ok := m.patterns[ch.Pattern.Name]; !ok {
				errs <- fmt.Errorf("pattern %d not in etcd when Submit returned", i)
			}
		}(i)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	m, st := f.load(t)
	if len(m.patterns) != n {
		t.Fatalf("%d patterns loaded, want %d", len(m.patterns), n)
	}
	got := txns.Load()
	t.Logf("%d submits in %d transactions (%d log entries)", n, got, st.LogEntries)
	if got >= n || int64(st.LogEntries) != got {
		t.Fatalf("%d transactions, %d log entries for %d concurrent submits: want one entry per transaction, fewer than the submits", got, st.LogEntries, n)
	}
	if pos := com.Position(); pos.Seq != st.NextSeq || pos.Written != st.LogBytes {
		t.Errorf("committer at %+v, the load found next %d and %d bytes", pos, st.NextSeq, st.LogBytes)
	}
}

// The last put of a name wins, and a clear-all drops everything before it,
// in the log's order; puts after a clear-all in the same change set stay.
func TestLastPutOfANameWinsAndClearIsOrdered(t *testing.T) {
	f := setup(t)
	com, _ := f.committer(t, 0, nil, nil)
	var chans []<-chan error
	enq := func(chs ...processor.Change) {
		ch, err := com.Enqueue(chs...)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	enq(pat(1, 1, "a", "b"))
	enq(pat(1, 2, "a", "b"), pat(2, 1, "b", "c"))
	enq(clearAll())
	enq(pat(3, 1, "c", "d"))
	enq(pat(3, 3, "c", "d"), clearAll(), pat(4, 1, "d", "e"), pat(4, 2, "d", "e"))
	for _, ch := range chans {
		if err := <-ch; err != nil {
			t.Fatal(err)
		}
	}
	m, _ := f.load(t)
	want := pat(4, 2, "d", "e").Pattern
	if len(m.patterns) != 1 || !reflect.DeepEqual(m.patterns[want.Name], want) {
		t.Fatalf("after clears: %+v, want only %+v", m.patterns, want)
	}
}

// After the lock is broken, no write reaches etcd and Submit says why.
func TestWritesFailAfterLockLost(t *testing.T) {
	f := setup(t)
	com, wait := f.committer(t, 0, nil, nil)
	if err := com.Submit(f.ctx, pat(1, 1, "before", "x")); err != nil {
		t.Fatal(err)
	}
	f.breakLock(t)
	after := pat(2, 1, "after", "x")
	if err := com.Submit(f.ctx, after); !errors.Is(err, coord.ErrLockLost) {
		t.Fatalf("write after the break: %v, want ErrLockLost", err)
	}
	if err := wait(); !errors.Is(err, coord.ErrLockLost) {
		t.Errorf("Run: %v, want ErrLockLost", err)
	}
	if got := f.count(t, "log/"); got != 1 {
		t.Fatalf("%d log entries, want 1: a write after the lock was lost reached etcd", got)
	}
	m, _ := f.load(t)
	if _, ok := m.patterns[after.Pattern.Name]; ok || len(m.patterns) != 1 {
		t.Fatalf("loaded %d patterns after the lock was lost", len(m.patterns))
	}
}

// writeSnapshot publishes a snapshot of the records as a checkpoint at
// logFrom, keeping the model's base.
func (f *fixture) writeSnapshot(t *testing.T, base string, logFrom uint64, recs []processor.Change) kb.Head {
	t.Helper()
	w := kb.NewSnapshot(f.model, f.lock.Txn, kb.Meta{Model: f.model, Writer: "test"}.Encode)
	for _, ch := range recs {
		if err := w.Add(f.ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	h, err := w.Publish(f.ctx, base, logFrom, false, "test")
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// many returns n numbered patterns with symbols long enough to make several
// snapshot chunks of a few thousand records.
func many(from, n int) []processor.Change {
	out := make([]processor.Change, n)
	for i := range out {
		k := from + i
		out[i] = pat(uint64(k)+1, int64(k%7)+1, fmt.Sprintf("sym-%06d-%s", k, strings.Repeat("abcdefghij", 30)), fmt.Sprint(k%13))
	}
	return out
}

type followed struct {
	rev  int64
	next uint64
	chs  processor.Changes
}

// follow runs Follow from st until the test ends; it sends every call with
// changes (and, with all, every call) to the channel, and its end to done
// (then closed).
func (f *fixture) follow(t *testing.T, st kb.State, all bool) (<-chan followed, <-chan error) {
	revs := make(chan followed, 1000)
	done := make(chan error, 1)
	ctx, cancel := context.WithCancel(f.ctx)
	go func() {
		done <- kb.Follow(ctx, f.cli, f.model, st, func(rev int64, next uint64, chs processor.Changes) error {
			if all || len(chs) > 0 {
				revs <- followed{rev, next, chs}
			}
			return nil
		})
		close(done) // the test may have read the error already
	}()
	t.Cleanup(func() { cancel(); <-done })
	return revs, done
}

func next(t *testing.T, revs <-chan followed) followed {
	t.Helper()
	select {
	case r := <-revs:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("no revision followed within 15 s")
	}
	return followed{}
}

// Load streams the whole model (snapshot, then log) at one revision, with
// progress; Follow then continues exactly after it, each group whole, in
// order.
func TestLoadStreamsAtOneRevisionThenFollow(t *testing.T) {
	f := setup(t)
	const n = 5000
	snap := many(0, n)
	f.writeSnapshot(t, "", 0, snap)
	com, _ := f.committer(t, 0, nil, nil)
	const entries = 30
	for i := range entries {
		if err := com.Submit(f.ctx, numbered(n+i, 1)); err != nil {
			t.Fatal(err)
		}
	}
	var progress []int64
	m := newModel()
	late := numbered(n+entries, 1)
	l := &hookLoader{model: m, onChanges: func() error {
		if len(m.groups) == 1 {
			// Writes during the load are not in it: it reads one revision.
			return com.Submit(f.ctx, late)
		}
		return nil
	}}
	st, err := kb.Load(f.ctx, f.cli.KV, f.lg, f.model, l, func(n int64) { progress = append(progress, n) })
	if err != nil {
		t.Fatal(err)
	}
	if st.Head == nil || st.Head.Chunks < 2 || st.Records != n || m.records != n || st.LogEntries != entries || st.NextSeq != entries {
		t.Fatalf("loaded %+v (head %+v), %d snapshot records: want %d records in several chunks, %d log entries", st, st.Head, m.records, n, entries)
	}
	if len(progress) < 2 || progress[len(progress)-1] != n+entries {
		t.Errorf("progress %v, want several reports ending at %d", progress, n+entries)
	}
	if len(m.patterns) != n+entries || len(m.groups) != entries {
		t.Fatalf("loaded %d patterns in %d log groups, want %d in %d", len(m.patterns), len(m.groups), n+entries, entries)
	}
	if _, ok := m.patterns[late.Pattern.Name]; ok {
		t.Fatal("a write made during the load is in it")
	}
	for i, ch := range snap {
		if got := m.patterns[ch.Pattern.Name]; !reflect.DeepEqual(got, ch.Pattern) {
			t.Fatalf("snapshot record %d loaded as %+v, want %+v", i, got, ch.Pattern)
		}
	}

	// Changes after the load revision arrive through Follow, in order.
	revs, _ := f.follow(t, st, false)
	if err := com.Submit(f.ctx, pat(1, 9, "new", "x")); err != nil {
		t.Fatal(err)
	}
	if err := com.Submit(f.ctx, clearAll()); err != nil {
		t.Fatal(err)
	}
	want := []processor.Changes{{late}, {pat(1, 9, "new", "x")}, {clearAll()}}
	for i, w := range want {
		r := next(t, revs)
		if !reflect.DeepEqual(r.chs, w) || r.next != st.NextSeq+uint64(i)+1 || r.rev <= st.Rev {
			t.Fatalf("followed revision %d: %+v (next %d), want %+v (next %d)", i, r.chs, r.next, w, st.NextSeq+uint64(i)+1)
		}
	}
	// The next load holds none of it.
	m2, st2 := f.load(t)
	if len(m2.patterns) != 0 || st2.NextSeq != st.NextSeq+3 {
		t.Fatalf("after the clear: %d patterns, next %d", len(m2.patterns), st2.NextSeq)
	}
}

// hookLoader is a model that calls onChanges after each log group.
type hookLoader struct {
	*model
	onChanges func() error
}

func (h *hookLoader) Changes(chs processor.Changes) error {
	if err := h.model.Changes(chs); err != nil {
		return err
	}
	return h.onChanges()
}

// With WithMeta every transaction rewrites the meta key, a clear-all too.
func TestMetaWrittenWithEveryTransaction(t *testing.T) {
	f := setup(t)
	n := 0
	com, _ := f.committer(t, 0, nil, nil, kb.WithMeta(func() []byte {
		n++
		return []byte(fmt.Sprintf(`{"format":1,"n":%d}`, n))
	}))
	if err := com.Submit(f.ctx, pat(1, 1, "a", "b")); err != nil {
		t.Fatal(err)
	}
	if err := com.Submit(f.ctx, clearAll()); err != nil {
		t.Fatal(err)
	}
	resp, err := f.cli.Get(f.ctx, f.key(kb.MetaKey))
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != `{"format":1,"n":2}` || resp.Kvs[0].Version != 2 {
		t.Fatalf("meta after a put and a clear: %v", resp.Kvs)
	}
	logs, err := f.cli.Get(f.ctx, f.key("log/"), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(logs.Kvs) != 2 || logs.Kvs[1].ModRevision != resp.Kvs[0].ModRevision {
		t.Fatalf("%d log entries, the last at revision %d, meta at %d: want meta in the transaction of each entry", len(logs.Kvs), logs.Kvs[len(logs.Kvs)-1].ModRevision, resp.Kvs[0].ModRevision)
	}
	_, st := f.load(t)
	if st.MetaRev != resp.Kvs[0].ModRevision {
		t.Errorf("load found meta at revision %d, want %d", st.MetaRev, resp.Kvs[0].ModRevision)
	}
}

// With many submissions queued at once, the log holds them in submission
// order: re-learns of one pattern arrive with increasing frequency, and the
// last one submitted is the one loaded.
func TestPipelinedWritesKeepOrder(t *testing.T) {
	f := setup(t)
	com, _ := f.committer(t, 0, nil, nil)
	const n = 300
	var waits []<-chan error
	for i := range n {
		chs := []processor.Change{pat(1, int64(i)+1, "shared", "x")}
		if i%3 == 0 {
			chs = append(chs, numbered(1000+i, 1))
		}
		ch, err := com.Enqueue(chs...)
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
	m, st := f.load(t)
	shared := pat(1, n, "shared", "x").Pattern
	if got := m.patterns[shared.Name]; got.Frequency != n {
		t.Fatalf("final frequency %d, want %d", got.Frequency, n)
	}
	var freqs []int64
	for _, g := range m.groups {
		for _, ch := range g {
			if ch.Pattern.Name == shared.Name {
				freqs = append(freqs, ch.Pattern.Frequency)
			}
		}
	}
	if len(freqs) != n {
		t.Fatalf("the log holds %d re-learns, want %d", len(freqs), n)
	}
	for i, fr := range freqs {
		if fr != int64(i)+1 {
			t.Fatalf("re-learn %d has frequency %d: out of submission order", i, fr)
		}
	}
	t.Logf("%d submissions in %d log entries", n, st.LogEntries)
}

// noStream is a KV of an etcd older than 3.7: it has no RangeStream.
type noStream struct{ clientv3.KV }

func (noStream) GetStream(context.Context, string, ...clientv3.OpOption) (clientv3.GetStreamChan, error) {
	return nil, status.Error(codes.Unimplemented, "unknown method RangeStream")
}

// Against an etcd without RangeStream, Load reads pages (of 1000 keys) at
// one revision.
func TestLoadWithoutRangeStreamReadsPages(t *testing.T) {
	f := setup(t)
	const n = 2500
	// 2500 log entries of one change each, written 100 to a transaction.
	for i := 0; i < n; i += 100 {
		var ops []clientv3.Op
		for j := i; j < i+100; j++ {
			body, err := kb.EncodeChanges(numbered(j, 1))
			if err != nil {
				t.Fatal(err)
			}
			ops = append(ops, clientv3.OpPut(f.key(kb.LogKey(uint64(j))), string(kb.FrameLogEntry(uint64(j), true, body))))
		}
		if _, err := f.cli.Txn(f.ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
	com, _ := f.committer(t, n, nil, nil)
	m := newModel()
	var late processor.Change
	l := &hookLoader{model: m, onChanges: func() error {
		if len(m.groups) == 1 {
			late = numbered(n, 1)
			return com.Submit(f.ctx, late)
		}
		return nil
	}}
	st, err := kb.Load(f.ctx, noStream{f.cli.KV}, f.lg, f.model, l, nil)
	if err != nil || len(m.patterns) != n || st.LogEntries != n || st.NextSeq != n || st.Rev == 0 {
		t.Fatalf("paged load: %d patterns, %+v, %v; want %d", len(m.patterns), st, err, n)
	}
	if _, ok := m.patterns[late.Pattern.Name]; ok {
		t.Fatal("a write made during the paged load is in it")
	}
	full, _ := f.load(t)
	if len(full.patterns) != n+1 {
		t.Fatalf("streamed load after it: %d patterns, want %d", len(full.patterns), n+1)
	}
}

// Mark answers once everything enqueued before it is durable, with the log
// position after it: what a checkpoint frozen at the Mark covers.
func TestMarkIsThePositionAfterWhatCameBefore(t *testing.T) {
	f := setup(t)
	fence, entered, release := gatedFence(f, 1)
	com, _ := f.committer(t, 3, fence, nil)
	var waits []<-chan error
	for i := range 5 {
		w, err := com.Enqueue(numbered(i, 1))
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, w)
		if i == 0 {
			<-entered // the first is in flight, the rest queue
		}
	}
	mark, at, err := com.Mark()
	if err != nil {
		t.Fatal(err)
	}
	after, err := com.Enqueue(numbered(10, 1))
	if err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-mark; err != nil {
		t.Fatal(err)
	}
	for _, w := range waits {
		select {
		case err := <-w:
			if err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatal("the Mark answered before a change enqueued before it")
		}
	}
	pos := at()
	if err := <-after; err != nil {
		t.Fatal(err)
	}
	// Entry 3 holds the first change, entry 4 the four queued behind it.
	if pos.Seq != 5 || pos.Written == 0 {
		t.Fatalf("mark at %+v, want sequence 5", pos)
	}
	if p := com.Position(); p.Seq != 6 || p.Written <= pos.Written {
		t.Fatalf("position after one more entry: %+v", p)
	}
}
