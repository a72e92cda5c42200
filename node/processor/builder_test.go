// This file checks that a Builder builds what Load builds, from records in
// any order, and refuses corrupt records with Load's errors.
package processor

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
)

// randomModel learns a random model (emotives, vectors, re-learns, a clear
// now and then) and returns its records, some dropped to leave gaps in Seq
// and some frequencies raised.
func randomModel(rng *rand.Rand, vocab []string) ([]PatternRecord, []VectorRecord) {
	cfg := DefaultConfig()
	cfg.Persistence = 1 + rng.IntN(5)
	p, err := New(cfg, "gen", "gen")
	if err != nil {
		panic(err)
	}
	for range 40 + rng.IntN(120) {
		switch r := rng.IntN(100); {
		case r < 75:
			var obs Observation
			for n := 1 + rng.IntN(4); n > 0; n-- {
				obs.Strings = append(obs.Strings, vocab[rng.IntN(len(vocab))])
			}
			if rng.IntN(4) == 0 {
				obs.Emotives = []EmotiveValue{{"joy", Float(float64(rng.IntN(5)) / 4)}, {"fear", Int(int64(rng.IntN(3)))}}
			}
			if rng.IntN(6) == 0 {
				obs.Vectors = [][]Number{{Int(int64(rng.IntN(4))), Float(float64(rng.IntN(3)) / 2)}}
			}
			if _, _, err := p.Observe(obs); err != nil {
				panic(err)
			}
		case r < 97:
			p.Learn()
		default:
			p.ClearAll()
		}
	}
	p.Learn()
	var pats []PatternRecord
	for _, r := range p.Patterns() {
		if rng.IntN(10) == 0 {
			continue
		}
		r.Frequency += int64(rng.IntN(3))
		pats = append(pats, r)
	}
	var vecs []VectorRecord
	for _, r := range p.Vectors() {
		if rng.IntN(10) != 0 {
			vecs = append(vecs, r)
		}
	}
	return pats, vecs
}

// refLoadErr is the error of Load before the Builder: records sorted by
// (Seq, Name), patterns first, each checked against what came before.
func refLoadErr(pats []PatternRecord, vecs []VectorRecord) error {
	k := newKB()
	ps := slices.Clone(pats)
	sortRecords(ps, patternKey)
	for _, r := range ps {
		if _, dup := k.find(r.Name); dup {
			return fmt.Errorf("%w: pattern %s stored twice", ErrCorrupt, r.Name)
		}
		if err := k.replayPattern(r); err != nil {
			return err
		}
	}
	vs := slices.Clone(vecs)
	sortRecords(vs, vectorKey)
	for _, r := range vs {
		if k.vectors.has(r.Name) {
			return fmt.Errorf("%w: vector %s stored twice", ErrCorrupt, r.Name)
		}
		if err := k.replayVector(r); err != nil {
			return err
		}
	}
	return nil
}

// buildFrom feeds a Builder patterns and vectors interleaved at random, each
// kind in the order given, and returns its result and whether either kind
// had to be sorted at Build. The Builder is told the counts up front, or
// wrong counts, or nothing: none of which may change what it builds.
func buildFrom(rng *rand.Rand, pats []PatternRecord, vecs []VectorRecord) (*Processor, bool, error) {
	b := NewBuilder()
	switch rng.IntN(3) {
	case 1:
		b.Grow(len(pats), len(vecs))
	case 2:
		b.Grow(rng.IntN(3), rng.IntN(3))
	}
	i, j := 0, 0
	for i < len(pats) || j < len(vecs) {
		if j == len(vecs) || (i < len(pats) && rng.IntN(2) == 0) {
			b.AddPattern(pats[i])
			i++
		} else {
			b.AddVector(vecs[j])
			j++
		}
	}
	sorted := b.pats.sorting || b.vecs.sorting
	p, err := b.Build(DefaultConfig(), "test-id", "KatoProcessor")
	return p, sorted, err
}

// sameProcessor fails unless q answers as p does: records, statistics,
// predictions for random STMs, nearest vectors, and the record of a learn.
func sameProcessor(t *testing.T, what string, rng *rand.Rand, vocab []string, p, q *Processor) {
	t.Helper()
	if !reflect.DeepEqual(p.Patterns(), q.Patterns()) || !reflect.DeepEqual(p.Vectors(), q.Vectors()) {
		t.Fatalf("%s: records differ\n%+v\n%+v", what, p.Patterns(), q.Patterns())
	}
	if p.Stats() != q.Stats() {
		t.Fatalf("%s: stats %+v, want %+v", what, q.Stats(), p.Stats())
	}
	for _, s := range vocab {
		f1, m1 := p.SymbolStats(s)
		f2, m2 := q.SymbolStats(s)
		if f1 != f2 || m1 != m2 {
			t.Fatalf("%s: symbol %q stats %d/%d, want %d/%d", what, s, f2, m2, f1, m1)
		}
	}
	for range 5 {
		stm := randomEvents(rng, vocab, 1, 4)
		thr := []float64{0, 0.1, 0.3}[rng.IntN(3)]
		want := predictionsJSON(t, p.pr.predict(p.kb, stm, thr, 50))
		if got := predictionsJSON(t, q.pr.predict(q.kb, stm, thr, 50)); got != want {
			t.Fatalf("%s: predictions for %q\n got %s\nwant %s", what, stm, got, want)
		}
	}
	probe := FloatVector(0.5, 1)
	if a, b := p.kb.vectors.vectorSymbols(probe, "x"), q.kb.vectors.vectorSymbols(probe, "x"); !reflect.DeepEqual(a, b) {
		t.Fatalf("%s: nearest vectors %v, want %v", what, b, a)
	}
	evs := randomEvents(rng, vocab, 2, 3)
	var chs [2]Changes
	for i, x := range []*Processor{p, q} {
		for _, ev := range evs {
			if _, _, err := x.Observe(Observation{Strings: ev, Vectors: [][]Number{{Int(7), Int(7)}}}); err != nil {
				t.Fatal(err)
			}
		}
		_, chs[i] = x.Learn()
	}
	if !reflect.DeepEqual(chs[0], chs[1]) {
		t.Fatalf("%s: a learn gives %+v, want %+v", what, chs[1], chs[0])
	}
}

// A Builder fed the records of random models, in Seq order (streamed
// straight into the index), shuffled (sorted at Build), or with names left
// out, builds a processor that answers exactly as Load's does.
func TestBuilderEqualsLoad(t *testing.T) {
	models := 120
	if testing.Short() {
		models = 40
	}
	for n := range models {
		rng := rand.New(rand.NewPCG(uint64(n), 0xb1d))
		vocab := makeVocab("s", 3+rng.IntN(12))
		if n%5 == 0 {
			vocab = append(vocab, "it's", "é", "")
		}
		pats, vecs := randomModel(rng, vocab)
		fresh := func() *Processor {
			p, err := Load(DefaultConfig(), "test-id", "KatoProcessor", shuffled(rng, pats), shuffled(rng, vecs))
			if err != nil {
				t.Fatalf("model %d: load: %v", n, err)
			}
			return p
		}
		nameless := make([]PatternRecord, len(pats))
		for i, r := range pats {
			r.Name = ""
			nameless[i] = r
		}
		for _, tc := range []struct {
			what string
			pats []PatternRecord
			vecs []VectorRecord
		}{
			{"in order", pats, vecs},
			{"nameless in order", nameless, vecs},
			{"shuffled", shuffled(rng, pats), shuffled(rng, vecs)},
			{"nameless shuffled", shuffled(rng, nameless), vecs},
		} {
			what := fmt.Sprintf("model %d %s", n, tc.what)
			q, sorted, err := buildFrom(rng, tc.pats, tc.vecs)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			inOrder := slices.IsSortedFunc(tc.pats, func(a, b PatternRecord) int { return cmpSeq(a.Seq, b.Seq, "", "") }) &&
				slices.IsSortedFunc(tc.vecs, func(a, b VectorRecord) int { return cmpSeq(a.Seq, b.Seq, "", "") })
			if sorted == inOrder {
				t.Fatalf("%s: records in order %v, sorted at Build %v", what, inOrder, sorted)
			}
			sameProcessor(t, what, rng, vocab, fresh(), q)
		}
	}
}

// corrupt damages one random record of a model (or adds a bad one).
func corrupt(rng *rand.Rand, pats []PatternRecord, vecs []VectorRecord) ([]PatternRecord, []VectorRecord, string) {
	pats, vecs = slices.Clone(pats), slices.Clone(vecs)
	if len(pats) == 0 {
		return pats, vecs, "none"
	}
	i := rng.IntN(len(pats))
	r := &pats[i]
	switch c := rng.IntN(9); c {
	case 0:
		r.Name = ModelName([][]string{{"x"}, {"y"}})
		return pats, vecs, "wrong name"
	case 1:
		r.Length++
		return pats, vecs, "wrong length"
	case 2:
		r.Frequency = 0
		return pats, vecs, "zero frequency"
	case 3:
		r.Events = append(slices.Clone(r.Events), nil)
		r.Name = ModelName(r.Events)
		return pats, vecs, "empty event"
	case 4:
		dup := *r
		dup.Seq = pats[rng.IntN(len(pats))].Seq + uint64(rng.IntN(2))
		if dup.Seq == r.Seq { // identical keys: Load's order of the two is not defined
			dup.Seq++
		}
		return append(pats, dup), vecs, "twice"
	case 5:
		other := pats[rng.IntN(len(pats))]
		if other.Name != r.Name {
			r.Seq = other.Seq
		}
		return pats, vecs, "same seq"
	case 6:
		r.Name = "ABCDEF" + r.Name[6:]
		return pats, vecs, "upper-case name"
	case 7:
		if len(vecs) > 0 {
			v := vecs[rng.IntN(len(vecs))]
			v.Seq += uint64(rng.IntN(3))
			return pats, append(vecs, v), "vector twice"
		}
		fallthrough
	default:
		v := VectorRecord{Name: VectorName(IntVector(9)), Vector: IntVector(8), Seq: uint64(rng.IntN(5))}
		return pats, append(vecs, v), "vector name"
	}
}

// Corrupt records give the error Load gave before the Builder, whatever
// the order they come in; records in order give it from the Add call that
// meets the first bad record.
func TestBuilderCorrupt(t *testing.T) {
	models := 200
	if testing.Short() {
		models = 60
	}
	for n := range models {
		rng := rand.New(rand.NewPCG(uint64(n), 0xbad))
		vocab := makeVocab("s", 3+rng.IntN(8))
		pats, vecs := randomModel(rng, vocab)
		var hows []string
		for range 1 + rng.IntN(2) {
			var how string
			pats, vecs, how = corrupt(rng, pats, vecs)
			hows = append(hows, how)
		}
		want := refLoadErr(pats, vecs)
		if _, err := Load(DefaultConfig(), "test-id", "KatoProcessor", shuffled(rng, pats), shuffled(rng, vecs)); fmt.Sprint(err) != fmt.Sprint(want) {
			t.Fatalf("model %d: Load: %v, want %v", n, err, want)
		}
		if want != nil && !errors.Is(want, ErrCorrupt) {
			t.Fatalf("model %d: %v is not ErrCorrupt", n, want)
		}
		ordered := slices.Clone(pats)
		sortRecords(ordered, patternKey)
		orderedV := slices.Clone(vecs)
		sortRecords(orderedV, vectorKey)
		for _, tc := range []struct {
			what string
			pats []PatternRecord
			vecs []VectorRecord
		}{
			{"in order", ordered, orderedV},
			{"shuffled", shuffled(rng, pats), shuffled(rng, vecs)},
			{"in order, then shuffled", append(slices.Clone(ordered[:len(ordered)/2]), shuffled(rng, ordered[len(ordered)/2:])...), orderedV},
		} {
			_, _, err := buildFrom(rng, tc.pats, tc.vecs)
			if fmt.Sprint(err) != fmt.Sprint(want) {
				t.Fatalf("model %d %s (%v): Build: %v, want %v", n, tc.what, hows, err, want)
			}
		}
		// In order, patterns then vectors: the first failing Add says it.
		b := NewBuilder()
		var first error
		for _, r := range ordered {
			if first = b.AddPattern(r); first != nil {
				break
			}
		}
		if first == nil {
			for _, r := range orderedV {
				if first = b.AddVector(r); first != nil {
					break
				}
			}
		}
		if fmt.Sprint(first) != fmt.Sprint(want) {
			t.Fatalf("model %d (%v): first Add error %v, want %v", n, hows, first, want)
		}
		if _, err := b.Build(DefaultConfig(), "test-id", "KatoProcessor"); fmt.Sprint(err) != fmt.Sprint(want) {
			t.Fatalf("model %d: Build after the Add error: %v, want %v", n, err, want)
		}
	}
}

// Build checks the instance first, as Load does, and a Builder builds once.
func TestBuilderInstanceAndReuse(t *testing.T) {
	b := NewBuilder()
	bad := PatternRecord{Name: "x", Events: [][]string{{"a"}, {"b"}}, Length: 2, Frequency: 1}
	if err := b.AddPattern(bad); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("bad record: %v", err)
	}
	if _, err := b.Build(DefaultConfig(), "", "n"); !errors.Is(err, ErrInvalid) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("empty id: %v", err)
	}
	if err := b.AddPattern(bad); !errors.Is(err, errBuilt) {
		t.Fatalf("add after build: %v", err)
	}
	if _, err := b.Build(DefaultConfig(), "i", "n"); !errors.Is(err, errBuilt) {
		t.Fatalf("second build: %v", err)
	}
}
