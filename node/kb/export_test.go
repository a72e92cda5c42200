package kb_test

// This file tests import (all or nothing, duplicates refused), export (of a
// snapshot and its log, equal to what a load builds) and the export line
// format.

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// procLoader builds a real processor the way a node does: processor.Load
// from the snapshot's records, then Replay of every log group.
type procLoader struct {
	pats []processor.PatternRecord
	vecs []processor.VectorRecord
	p    *processor.Processor
}

func (l *procLoader) Record(ch processor.Change) error {
	switch ch.Kind {
	case processor.PutPattern:
		if ch.Pattern.Name == "" {
			ch.Pattern.Name = processor.ModelName(ch.Pattern.Events)
		}
		l.pats = append(l.pats, ch.Pattern)
	case processor.PutVector:
		l.vecs = append(l.vecs, ch.Vector)
	}
	return nil
}

func (l *procLoader) Built() error {
	var err error
	l.p, err = processor.Load(processor.DefaultConfig(), "id", "test", l.pats, l.vecs)
	return err
}

func (l *procLoader) Changes(chs processor.Changes) error { return l.p.Replay(chs) }

// exported collects an export as a model, checking no record comes twice.
func (f *fixture) export(t *testing.T) (*model, []processor.Change) {
	t.Helper()
	m := newModel()
	var all []processor.Change
	_, n, err := kb.Export(f.ctx, f.cli.KV, f.lg, f.model, func(ch processor.Change) error {
		if _, dup := m.patterns[name(ch)]; dup {
			t.Errorf("pattern %s exported twice", name(ch))
		}
		if _, dup := m.vectors[name(ch)]; dup {
			t.Errorf("vector %s exported twice", name(ch))
		}
		m.apply(ch)
		all = append(all, ch)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n.Patterns != int64(len(m.patterns)) || n.Vectors != int64(len(m.vectors)) {
		t.Fatalf("export counted %v, emitted %d patterns and %d vectors", n, len(m.patterns), len(m.vectors))
	}
	return m, all
}

// Export streams snapshot + log: the model it gives equals the one a load
// builds (processor.Load + Replay), with log re-learns of snapshot patterns,
// new and known vectors, and a clear-all in the log. Its lines import into
// the same model.
func TestExportEqualsLoad(t *testing.T) {
	for _, withClear := range []bool{false, true} {
		t.Run(map[bool]string{false: "log", true: "log with clear-all"}[withClear], func(t *testing.T) {
			f := setup(t)
			snap := append(many(0, 3000), vector(1, processor.IntVector(1, 2)), vector(2, processor.FloatVector(0.25)))
			f.writeSnapshot(t, "", 0, snap)
			com, _ := f.committer(t, 0, nil, nil)
			groups := []processor.Changes{
				{pat(1, 50, many(0, 1)[0].Pattern.Events[0]...)}, // a re-learn of snapshot pattern 0
				{vector(3, processor.IntVector(9)), pat(3001, 1, "new", "x")},
				{vector(1, processor.IntVector(1, 2))}, // a known vector: kept as stored
				{pat(11, 9, many(10, 1)[0].Pattern.Events[0]...)},
			}
			if withClear {
				groups = append(groups, processor.Changes{pat(3002, 1, "gone", "x"), clearAll()},
					processor.Changes{pat(3003, 1, "after", "clear"), pat(3004, 1, many(0, 1)[0].Pattern.Events[0]...), vector(4, processor.IntVector(1, 2))})
			}
			for _, g := range groups {
				if err := com.Submit(f.ctx, g...); err != nil {
					t.Fatal(err)
				}
			}
			l := &procLoader{}
			if _, err := kb.Load(f.ctx, f.cli.KV, f.lg, f.model, l, nil); err != nil {
				t.Fatal(err)
			}
			built := newModel()
			for _, p := range l.p.Patterns() {
				built.apply(processor.Change{Kind: processor.PutPattern, Pattern: p})
			}
			for _, v := range l.p.Vectors() {
				built.apply(processor.Change{Kind: processor.PutVector, Vector: v})
			}
			loaded, _ := f.load(t)
			if d := loaded.same(built); d != "" {
				t.Fatalf("the test's loader and a processor disagree: %s", d)
			}
			exported, lines := f.export(t)
			if d := exported.same(built); d != "" {
				t.Fatalf("export against load: %s", d)
			}
			if withClear && (len(built.patterns) != 2 || len(built.vectors) != 1) {
				t.Fatalf("after the clear-all: %d patterns, %d vectors", len(built.patterns), len(built.vectors))
			}

			// The export's lines import into the same model.
			im := kb.NewImport(f.model, f.lock.Txn, nil)
			for _, ch := range lines {
				b, err := kb.AppendExportLine(nil, ch)
				if err != nil {
					t.Fatal(err)
				}
				_, got, err := kb.ParseExportLine(b)
				if err != nil {
					t.Fatal(err)
				}
				if err := im.Add(f.ctx, got); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := im.Publish(f.ctx, "test"); err != nil {
				t.Fatal(err)
			}
			again, _ := f.load(t)
			if d := again.same(built); d != "" {
				t.Fatalf("re-imported export: %s", d)
			}
		})
	}
}

// An import of records in any order is all or nothing: before Publish the
// model is as it was; Publish replaces snapshot, log and old layout at once
// under a new base; Abort deletes the chunks written.
func TestImportIsAllOrNothing(t *testing.T) {
	f := setup(t)
	f.putLegacy(t, legacyRecords()...)
	f.writeSnapshot(t, "", 0, many(0, 100))
	com, _ := f.committer(t, 0, nil, nil)
	if err := com.Submit(f.ctx, pat(500, 1, "in", "log")); err != nil {
		t.Fatal(err)
	}
	before, st := f.load(t)

	recs := append(many(1000, 5000), vector(7, processor.IntVector(7)), vector(3, processor.FloatVector(3.5)))
	r := rand.New(rand.NewPCG(7, 8))
	r.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
	want := newModel()
	for _, ch := range recs {
		want.apply(ch)
	}

	// Aborted: nothing visible, and its chunks go.
	ab := kb.NewImport(f.model, f.lock.Txn, nil)
	for _, ch := range recs {
		if err := ab.Add(f.ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count(t, "snap/"); n < 3 {
		t.Fatalf("%d chunk keys while importing 5000 records, want the snapshot's and the import's", n)
	}
	ab.Abort(f.ctx)
	if n := f.count(t, "snap/") - int64(st.Head.Chunks); n != 0 {
		t.Fatalf("%d chunks of an aborted import left", n)
	}

	im := kb.NewImport(f.model, f.lock.Txn, kb.Meta{Model: f.model, Writer: "import"}.Encode)
	for i, ch := range recs {
		if err := im.Add(f.ctx, ch); err != nil {
			t.Fatal(err)
		}
		if i == len(recs)/2 {
			m, _ := f.load(t)
			if d := m.same(before); d != "" {
				t.Fatalf("an import half written is visible: %s", d)
			}
		}
	}
	m, _ := f.load(t)
	if d := m.same(before); d != "" {
		t.Fatalf("an import not yet published is visible: %s", d)
	}
	if c := im.Counts(); c.Patterns != 5000 || c.Vectors != 2 {
		t.Fatalf("import counts %v", c)
	}
	h, err := im.Publish(f.ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	if h.Base == "" || h.Base == st.Base() || h.Sorted || h.LogFrom != 0 || h.Patterns != 5000 {
		t.Fatalf("import head %+v", h)
	}
	m, st2 := f.load(t)
	if d := m.same(want); d != "" {
		t.Fatalf("published import: %s", d)
	}
	if st2.LogEntries != 0 || st2.Legacy || f.count(t, "log/") != 0 || f.count(t, "patterns/") != 0 || f.count(t, "snap/") != int64(h.Chunks) {
		t.Fatalf("after the import: %+v, keys %v", st2, f.keys(t, ""))
	}
	// The imported model loads into a processor (records in file order).
	l := &procLoader{}
	if _, err := kb.Load(f.ctx, f.cli.KV, f.lg, f.model, l, nil); err != nil {
		t.Fatal(err)
	}
	if len(l.p.Patterns()) != 5000 {
		t.Fatalf("the processor holds %d patterns", len(l.p.Patterns()))
	}
	// A writer loading the imported model writes its log from 0.
	com2, _ := f.committer(t, st2.NextSeq, nil, nil)
	if err := com2.Submit(f.ctx, pat(9000, 1, "after", "import")); err != nil {
		t.Fatal(err)
	}
	if m, _ := f.load(t); len(m.patterns) != 5001 {
		t.Fatalf("%d patterns after a write following the import", len(m.patterns))
	}
}

// An import refuses a record named twice or a sequence number used twice,
// and a pattern whose name is not a SHA-1.
func TestImportRefusesDuplicates(t *testing.T) {
	f := setup(t)
	a := pat(1, 1, "a", "x")
	v := vector(1, processor.IntVector(1))
	for _, c := range []struct {
		name  string
		first processor.Change
		dup   processor.Change
	}{
		{"pattern name", a, pat(2, 3, "a", "x")},
		{"pattern seq", a, pat(1, 1, "b", "x")},
		{"vector name", v, vector(2, processor.IntVector(1))},
		{"vector seq", v, vector(1, processor.IntVector(2))},
	} {
		im := kb.NewImport(f.model, f.lock.Txn, nil)
		if err := im.Add(f.ctx, c.first); err != nil {
			t.Fatal(err)
		}
		if err := im.Add(f.ctx, c.dup); err == nil {
			t.Errorf("%s given twice: accepted", c.name)
		}
		im.Abort(f.ctx)
	}
	im := kb.NewImport(f.model, f.lock.Txn, nil)
	bad := a
	bad.Pattern.Name = "not-a-hash"
	if err := im.Add(f.ctx, bad); err == nil {
		t.Error("a pattern named other than by a SHA-1 was accepted")
	}
	if err := im.Add(f.ctx, clearAll()); err == nil {
		t.Error("a clear-all was imported")
	}
	if n := f.count(t, ""); n != 0 {
		t.Errorf("refused imports left %d keys", n)
	}
}

// ParseExportLine accepts what AppendExportLine writes (and the meta line)
// and refuses a key that does not name its record or a name that is not the
// hash of the record.
func TestExportLine(t *testing.T) {
	p := pattern(7, 3, []string{"a", "b"}, []string{"ü", "\"q\""})
	p.Pattern.Emotives = []processor.Emotives{{{Name: "joy", Value: 0.5}}, {}}
	v := vector(2, processor.FloatVector(1.5, -2))
	for _, ch := range []processor.Change{p, v, vector(3, processor.IntVector(-1, 1<<40))} {
		b, err := kb.AppendExportLine([]byte("prefix"), ch)
		if err != nil {
			t.Fatal(err)
		}
		line, ok := strings.CutPrefix(string(b), "prefix")
		if !ok || !strings.HasSuffix(line, "}\n") || strings.Count(line, "\n") != 1 {
			t.Fatalf("line %q", b)
		}
		kind, got, err := kb.ParseExportLine([]byte(line))
		want := map[processor.ChangeKind]string{processor.PutPattern: kb.KindPattern, processor.PutVector: kb.KindVector}[ch.Kind]
		if err != nil || kind != want || !reflect.DeepEqual(got, ch) {
			t.Fatalf("%s parsed as %s %+v, %v; want %+v", line, kind, got, err, ch)
		}
	}
	if kind, _, err := kb.ParseExportLine([]byte(`{"kind":"meta","key":"meta","value":{"writer":"x"}}`)); err != nil || kind != kb.KindMeta {
		t.Fatalf("meta line: %s, %v", kind, err)
	}
	pl, _ := kb.AppendExportLine(nil, p)
	vl, _ := kb.AppendExportLine(nil, v)
	other := pat(1, 1, "other", "x").Pattern.Name
	for _, bad := range []string{
		strings.Replace(string(pl), `"key":"patterns/`+p.Pattern.Name, `"key":"patterns/`+other, 1),  // key names another pattern
		strings.Replace(string(pl), `"name":"`+p.Pattern.Name, `"name":"`+other, 1),                  // name is not the events' hash
		strings.ReplaceAll(string(pl), p.Pattern.Name, other),                                        // key and name agree, the hash not
		strings.Replace(string(pl), `"key":"patterns/`, `"key":"vectors/`, 1),                        // wrong directory
		strings.Replace(string(vl), `"key":"vectors/`+v.Vector.Name[7:], `"key":"vectors/`+other, 1), // key names another vector
		strings.ReplaceAll(string(vl), v.Vector.Name[7:], other),                                     // values hash elsewhere
		strings.Replace(string(vl), `-2.0`, `-3.0`, 1),                                               // changed values
		strings.Replace(string(pl), `"frequency":3`, `"frequency":0`, 1),                             // invalid record
		`{"kind":"meta","key":"patterns/x","value":{}}`,                                              // meta under another key
		`{"kind":"pattern","key":"patterns/x"}`,                                                      // no value
		`{"kind":"gene","key":"genes/x","value":{}}`,                                                 // unknown kind
		strings.TrimSuffix(string(pl), "\n") + `{"kind":"meta","key":"meta","value":{}}`,             // two values
		strings.Replace(string(pl), `"kind":"pattern"`, `"kind":"pattern","extra":1`, 1),             // unknown field
	} {
		if _, _, err := kb.ParseExportLine([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}
