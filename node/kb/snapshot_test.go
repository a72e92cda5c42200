package kb_test

// This file tests snapshots (checkpoints and their crash points), the layout
// before format version 1, format versions, and the checkpoint policy.

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// putLegacy stores records the way a node before format version 1 did: one
// JSON record per key, and a meta without a format.
func (f *fixture) putLegacy(t *testing.T, recs ...processor.Change) {
	t.Helper()
	for _, ch := range recs {
		var key string
		var v []byte
		var err error
		switch ch.Kind {
		case processor.PutPattern:
			key = "patterns/" + ch.Pattern.Name
			v, err = ch.Pattern.MarshalJSON()
		case processor.PutVector:
			key = "vectors/" + strings.TrimPrefix(ch.Vector.Name, "VECTOR|")
			v, err = ch.Vector.MarshalJSON()
		}
		if err != nil {
			t.Fatal(err)
		}
		f.put(t, key, v)
	}
	f.put(t, kb.MetaKey, []byte(`{"v":1,"model":"m","writer":"old-node"}`))
}

func legacyRecords() []processor.Change {
	return []processor.Change{
		pat(1, 3, "old", "one"), pattern(2, 1, []string{"old"}, []string{"two", "x"}), pat(3, 2, "old", "three"),
		vector(1, processor.IntVector(1, 2, 3)), vector(2, processor.FloatVector(0.5, -1.25)),
	}
}

// A checkpoint: records in, Publish, and Load gives the same model. It
// deletes the log the snapshot holds (not the log after it), the previous
// snapshot and the layout before format version 1.
func TestSnapshotPublish(t *testing.T) {
	f := setup(t)
	f.putLegacy(t, legacyRecords()...)
	_, st := f.load(t)
	if !st.Legacy || st.Head != nil {
		t.Fatalf("a model of old-layout keys loaded as %+v", st)
	}
	com, _ := f.committer(t, st.NextSeq, nil, nil)
	groups := []processor.Changes{
		{pat(1, 4, "old", "one")}, // a re-learn of an old-layout pattern
		many(10, 5000),            // several chunks' worth
		{vector(3, processor.IntVector(7)), pat(5020, 1, "new", "x")},
		{vector(1, processor.IntVector(1, 2, 3))}, // a known vector: kept as stored
		{pat(5021, 1, "more", "x")},
	}
	for _, g := range groups {
		if err := com.Submit(f.ctx, g...); err != nil {
			t.Fatal(err)
		}
	}
	atMark, st := f.load(t)
	// Two more groups after the point the snapshot is taken at.
	for _, g := range []processor.Changes{{pat(5022, 1, "after", "mark")}, {pat(1, 5, "old", "one")}} {
		if err := com.Submit(f.ctx, g...); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := f.load(t)

	h := f.writeSnapshot(t, "", st.NextSeq, atMark.sorted())
	if h.Chunks < 2 || h.LogFrom != 5 || !h.Sorted || h.Patterns != int64(len(atMark.patterns)) || h.Vectors != int64(len(atMark.vectors)) || h.V != kb.FormatVersion {
		t.Fatalf("head %+v", h)
	}
	m, st2 := f.load(t)
	if d := m.same(before); d != "" {
		t.Fatalf("after the checkpoint: %s", d)
	}
	if st2.Legacy || st2.Head == nil || st2.Head.Snapshot != h.Snapshot || st2.LogEntries != 2 || st2.NextSeq != 7 || st2.Records != int64(len(atMark.patterns)+len(atMark.vectors)) {
		t.Fatalf("after the checkpoint the load found %+v", st2)
	}
	if got := f.keys(t, "log/"); !reflect.DeepEqual(got, []string{kb.LogKey(5), kb.LogKey(6)}) {
		t.Fatalf("log after the checkpoint: %v, want entries 5 and 6", got)
	}
	if n := f.count(t, "patterns/") + f.count(t, "vectors/"); n != 0 {
		t.Fatalf("%d old-layout keys after the checkpoint", n)
	}
	if n := f.count(t, "snap/"); n != int64(h.Chunks) {
		t.Fatalf("%d chunk keys, the snapshot has %d", n, h.Chunks)
	}

	// A second checkpoint replaces the first: its chunks and the whole log go.
	h2 := f.writeSnapshot(t, "", st2.NextSeq, m.sorted())
	m, st3 := f.load(t)
	if d := m.same(before); d != "" {
		t.Fatalf("after the second checkpoint: %s", d)
	}
	if f.count(t, "log/") != 0 || f.count(t, "snap/") != int64(h2.Chunks) || f.count(t, "snap/"+h.Snapshot+"/") != 0 {
		t.Fatalf("after the second checkpoint: log %v, chunks %v", f.keys(t, "log/"), f.count(t, "snap/"))
	}
	if st3.NextSeq != 7 {
		t.Fatalf("after the second checkpoint the log goes on at %d, want 7", st3.NextSeq)
	}
	// The committer goes on where it was; its next entry loads.
	if err := com.Submit(f.ctx, pat(5023, 1, "after", "checkpoint")); err != nil {
		t.Fatal(err)
	}
	m, _ = f.load(t)
	if len(m.patterns) != len(before.patterns)+1 {
		t.Fatalf("%d patterns after a write following the checkpoints, want %d", len(m.patterns), len(before.patterns)+1)
	}
	// The summary counts the snapshot and the new pattern of the log.
	s, err := kb.Summarize(f.ctx, f.cli.KV, f.model, nil)
	if err != nil || s.Head == nil || s.LogEntries != 1 || s.Patterns != h2.Patterns+1 || s.SnapshotBytes != h2.Bytes {
		t.Fatalf("summary %+v, %v", s, err)
	}
}

// A crash during a checkpoint leaves a loadable model: chunks written but
// never published (before or between chunks, before the switch) change
// nothing a load sees, and the next Publish deletes them, whether their
// snapshot id sorts before or after its own.
func TestUnpublishedChunksAreIgnoredAndDeleted(t *testing.T) {
	f := setup(t)
	f.writeSnapshot(t, "", 0, many(0, 2000))
	com, _ := f.committer(t, 0, nil, nil)
	if err := com.Submit(f.ctx, pat(3000, 1, "in", "log")); err != nil {
		t.Fatal(err)
	}
	before, st := f.load(t)

	early := kb.NewSnapshot(f.model, f.lock.Txn, nil) // its id sorts before the next one's
	next := kb.NewSnapshot(f.model, f.lock.Txn, nil)
	late := kb.NewSnapshot(f.model, f.lock.Txn, nil)
	for _, w := range []*kb.SnapshotWriter{early, late} {
		for _, ch := range many(5000, 5000) { // chunks are written as records are added
			if err := w.Add(f.ctx, ch); err != nil {
				t.Fatal(err)
			}
		}
		if n := f.count(t, "snap/"+w.ID()+"/"); n < 2 {
			t.Fatalf("%d chunks written for 5000 records, want several", n)
		}
	}
	m, st2 := f.load(t)
	if d := m.same(before); d != "" || st2.Head.Snapshot != st.Head.Snapshot {
		t.Fatalf("unpublished chunks changed the model: %s", d)
	}
	for _, ch := range before.sorted() {
		if err := next.Add(f.ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	h, err := next.Publish(f.ctx, "", st.NextSeq, false, "test")
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []*kb.SnapshotWriter{early, late} {
		if n := f.count(t, "snap/"+w.ID()+"/"); n != 0 {
			t.Errorf("%d chunks of an unpublished snapshot left after the next Publish", n)
		}
	}
	if n := f.count(t, "snap/"); n != int64(h.Chunks) {
		t.Errorf("%d chunk keys, the snapshot has %d", n, h.Chunks)
	}
	m, _ = f.load(t)
	if d := m.same(before); d != "" {
		t.Fatal(d)
	}
}

// A node that lost its lock can never publish: Publish fails, whether the
// lock went before its last chunk or between that chunk and the switch, and
// the model (head, log, old-layout records) is as before.
func TestPublishWithLostLockChangesNothing(t *testing.T) {
	for _, when := range []string{"before the last chunk", "before the switch"} {
		t.Run(when, func(t *testing.T) {
			f := setup(t)
			f.putLegacy(t, legacyRecords()...)
			com, _ := f.committer(t, 0, nil, nil)
			if err := com.Submit(f.ctx, many(0, 10)...); err != nil {
				t.Fatal(err)
			}
			before, st := f.load(t)
			var armed atomic.Int64 // counts calls once armed
			var breakErr error
			fence := func(ctx context.Context) *coord.FencedTxn {
				txn := f.lock.Txn(ctx)
				if n := armed.Load(); n > 0 {
					armed.Add(1)
					if when == "before the last chunk" && n == 1 || when == "before the switch" && n == 2 {
						_, breakErr = coord.BreakLock(ctx, f.cli, f.model)
					}
				}
				return txn
			}
			w := kb.NewSnapshot(f.model, fence, func() []byte { return []byte(`{"format":1}`) })
			for _, ch := range many(100, 3000) { // a chunk written, the rest buffered
				if err := w.Add(f.ctx, ch); err != nil {
					t.Fatal(err)
				}
			}
			keys := f.keys(t, "")
			armed.Store(1)
			_, err := w.Publish(f.ctx, "", st.NextSeq, false, "test")
			if breakErr != nil {
				t.Fatal(breakErr)
			}
			if !errors.Is(err, coord.ErrLockLost) || armed.Load() != map[string]int64{"before the last chunk": 2, "before the switch": 3}[when] {
				t.Fatalf("publish after the lock was lost: %v (%d fenced transactions), want ErrLockLost", err, armed.Load()-1)
			}
			got := f.keys(t, "")
			if when == "before the switch" { // the last chunk was written
				got = slices.DeleteFunc(got, func(k string) bool { return k == kb.ChunkKey(w.ID(), 1) })
			}
			if !reflect.DeepEqual(got, keys) {
				t.Fatalf("keys after a failed publish:\n%v\nwant\n%v", got, keys)
			}
			m, st2 := f.load(t)
			if d := m.same(before); d != "" || !st2.Legacy || st2.Head != nil {
				t.Fatalf("after a failed publish (%+v): %s", st2, d)
			}
		})
	}
}

// A model stored in the layout before format version 1 (one key per record,
// a meta without format) loads; log entries written on top load after it;
// a checkpoint converts it. A model with a head and old-layout records (an
// older node wrote after the conversion) is refused.
func TestLegacyLayout(t *testing.T) {
	f := setup(t)
	old := legacyRecords()
	f.putLegacy(t, old...)
	m, st := f.load(t)
	if !st.Legacy || st.Head != nil || st.Records != int64(len(old)) || st.NextSeq != 0 || st.MetaRev == 0 {
		t.Fatalf("old layout loaded as %+v", st)
	}
	for _, ch := range old {
		var got any = m.patterns[name(ch)]
		var want any = ch.Pattern
		if ch.Kind == processor.PutVector {
			got, want = m.vectors[name(ch)], ch.Vector
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("old-layout record loaded as %+v, want %+v", got, want)
		}
	}
	cur, err := kb.ReadCurrent(f.ctx, f.cli.KV, f.model)
	if err != nil || !cur.Legacy || cur.Head != nil {
		t.Fatalf("ReadCurrent of an old-layout model: %+v, %v", cur, err)
	}

	com, _ := f.committer(t, st.NextSeq, nil, nil)
	relearn := pat(1, 7, "old", "one")
	if err := com.Submit(f.ctx, relearn, pat(4, 1, "new", "x")); err != nil {
		t.Fatal(err)
	}
	m, st = f.load(t)
	if !st.Legacy || len(m.patterns) != 4 || m.patterns[name(relearn)].Frequency != 7 {
		t.Fatalf("old layout + log: %d patterns, %+v", len(m.patterns), m.patterns[name(relearn)])
	}
	before := m
	f.writeSnapshot(t, st.Base(), st.NextSeq, m.sorted())
	if n := f.count(t, "patterns/") + f.count(t, "vectors/"); n != 0 {
		t.Fatalf("%d old-layout keys left after the checkpoint", n)
	}
	m, st = f.load(t)
	if d := m.same(before); d != "" || st.Legacy || st.Head == nil {
		t.Fatalf("converted model (%+v): %s", st, d)
	}

	// An older node writes in the old layout again.
	f.putLegacy(t, pat(9, 1, "written", "late"))
	if _, err := kb.Load(f.ctx, f.cli.KV, f.lg, f.model, newModel(), nil); !errors.Is(err, kb.ErrCorrupt) {
		t.Fatalf("load of a model with a head and old-layout records: %v, want ErrCorrupt", err)
	}
	if cur, err := kb.ReadCurrent(f.ctx, f.cli.KV, f.model); err != nil || !cur.Legacy || cur.Head == nil {
		t.Fatalf("ReadCurrent: %+v, %v", cur, err)
	}
}

// A version this build does not know, in the head, a chunk, a log entry or
// meta, refuses the model before any of it is handed out.
func TestUnknownFormatVersionIsRefused(t *testing.T) {
	f := setup(t)
	build := func(t *testing.T) {
		if _, err := f.cli.Delete(f.ctx, coord.ModelPrefix(f.model), clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		f.writeSnapshot(t, "", 0, many(0, 100))
		com, _ := f.committer(t, 0, nil, nil)
		if err := com.Submit(f.ctx, pat(200, 1, "in", "log")); err != nil {
			t.Fatal(err)
		}
		if err := com.Submit(f.ctx, pat(201, 1, "in", "log 2")); err != nil {
			t.Fatal(err)
		}
		if _, err := kb.Load(f.ctx, f.cli.KV, f.lg, f.model, newModel(), nil); err != nil {
			t.Fatal(err)
		}
	}
	firstByte := func(key string) func(t *testing.T) {
		return func(t *testing.T) {
			v, ok := f.get(t, key)
			if !ok {
				t.Fatalf("no %s", key)
			}
			v[0] = 2
			f.put(t, key, v)
		}
	}
	headV2 := func(t *testing.T) {
		v, _ := f.get(t, kb.HeadKey)
		var h map[string]any
		if err := json.Unmarshal(v, &h); err != nil {
			t.Fatal(err)
		}
		h["v"] = 2
		h["snapshot"] = "a/new/kind/of/snapshot"
		b, _ := json.Marshal(h)
		f.put(t, kb.HeadKey, b)
	}
	for _, c := range []struct {
		name    string
		corrupt func(t *testing.T)
	}{
		{"head", headV2},
		{"chunk", func(t *testing.T) {
			v, _ := f.get(t, kb.HeadKey)
			var h kb.Head
			if err := json.Unmarshal(v, &h); err != nil {
				t.Fatal(err)
			}
			firstByte(kb.ChunkKey(h.Snapshot, 0))(t)
		}},
		{"log entry", firstByte(kb.LogKey(0))},
		{"meta", func(t *testing.T) { f.put(t, kb.MetaKey, []byte(`{"format":2,"writer":"newer"}`)) }},
	} {
		t.Run(c.name, func(t *testing.T) {
			build(t)
			c.corrupt(t)
			m := newModel()
			st, err := kb.Load(f.ctx, f.cli.KV, f.lg, f.model, m, nil)
			if !errors.Is(err, kb.ErrUnknownFormat) || st != (kb.State{}) {
				t.Fatalf("load: %v (%+v), want ErrUnknownFormat", err, st)
			}
			// Load streams: a log entry is met after the snapshot's records
			// were handed out (the caller drops them with the error), but
			// no log group is, and nothing before a bad head, meta or
			// first chunk.
			if (c.name != "log entry" && m.records != 0) || len(m.groups) != 0 || m.built > 0 && c.name != "log entry" {
				t.Fatalf("%d records and %d log groups handed out before the refusal", m.records, len(m.groups))
			}
			if c.name == "head" {
				if _, err := kb.ReadCurrent(f.ctx, f.cli.KV, f.model); !errors.Is(err, kb.ErrUnknownFormat) {
					t.Errorf("ReadCurrent: %v", err)
				}
				if _, err := kb.Summarize(f.ctx, f.cli.KV, f.model, nil); !errors.Is(err, kb.ErrUnknownFormat) {
					t.Errorf("Summarize: %v", err)
				}
			}
		})
	}
}

func TestPolicyDue(t *testing.T) {
	p := kb.Policy{MinEntries: 100, MinBytes: 1000}
	for _, c := range []struct {
		records, bytes, entries, logBytes int64
		due                               bool
	}{
		{0, 0, 0, 0, false},
		{0, 0, 99, 999, false},
		{0, 0, 100, 0, true},   // enough entries, empty snapshot
		{0, 0, 0, 1000, true},  // enough log bytes, empty snapshot
		{400, 0, 100, 0, true}, // a quarter of the records
		{404, 0, 100, 0, false},
		{1000, 0, 250, 0, true},
		{1000, 0, 249, 0, false},
		{1000, 4000, 249, 1999, false},
		{1000, 4000, 249, 2000, true}, // half the snapshot's bytes
		{10, 1 << 20, 99, 1 << 19, true},
		{1 << 20, 1 << 20, 1 << 18, 0, true},
	} {
		if got := p.Due(c.records, c.bytes, c.entries, c.logBytes); got != c.due {
			t.Errorf("Due(records %d, bytes %d, entries %d, log bytes %d) = %v, want %v", c.records, c.bytes, c.entries, c.logBytes, got, c.due)
		}
	}
	if d := kb.DefaultPolicy(); d.Due(0, 0, int64(d.MinEntries)-1, d.MinBytes-1) || !d.Due(0, 0, int64(d.MinEntries), 0) {
		t.Errorf("default policy %+v", d)
	}
}
