package processor

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

func putP(name string, freq int64) Change {
	return Change{Kind: PutPattern, Pattern: PatternRecord{Name: name, Frequency: freq}}
}

func putV(name string) Change { return Change{Kind: PutVector, Vector: VectorRecord{Name: name}} }

func TestCoalesce(t *testing.T) {
	ch := Changes{putP("a", 1), putV("v"), putP("b", 1), putP("a", 2)}
	want := Changes{putV("v"), putP("b", 1), putP("a", 2)}
	if got := ch.Coalesce(); !reflect.DeepEqual(got, want) {
		t.Errorf("Coalesce = %+v, want %+v", got, want)
	}
	ch = Changes{putP("a", 1), {Kind: ClearAll}, putP("b", 1), {Kind: ClearAll}, putP("c", 1)}
	want = Changes{{Kind: ClearAll}, putP("c", 1)}
	if got := ch.Coalesce(); !reflect.DeepEqual(got, want) {
		t.Errorf("Coalesce = %+v, want %+v", got, want)
	}
	if got := (Changes{}).Coalesce(); len(got) != 0 {
		t.Errorf("empty: %v", got)
	}
}

// A store holding the coalesced changes of a session equals one holding all
// of them, and both reload into the same knowledge base.
func TestMemStoreAndRecords(t *testing.T) {
	ctx := context.Background()
	p := newTestProcessor(t, DefaultConfig())
	all, batched := NewMemStore(), NewMemStore()
	var batch Changes
	step := func(ch Changes) {
		if err := all.Apply(ctx, ch); err != nil {
			t.Fatal(err)
		}
		batch = append(batch, ch...)
	}
	mustObserve(t, p, Observation{Strings: []string{"a"}, Vectors: [][]Number{{Float(0.5), Int(1)}}, Emotives: []EmotiveValue{{"joy", Float(0.25)}}})
	observeStrings(t, p, "b", "\xed\xa0\x80")
	_, ch := p.Learn()
	step(ch)
	step(p.ClearAll())
	for i := 0; i < 3; i++ {
		mustObserve(t, p, Observation{Strings: []string{"a", "b"}, Vectors: [][]Number{{Int(int64(i))}}})
		_, ch = p.Learn()
		step(ch)
	}
	if err := batched.Apply(ctx, batch.Coalesce()); err != nil {
		t.Fatal(err)
	}
	for _, s := range []*MemStore{all, batched} {
		pats, _ := s.Patterns(ctx)
		vecs, _ := s.Vectors(ctx)
		if !reflect.DeepEqual(pats, p.Patterns()) || !reflect.DeepEqual(vecs, p.Vectors()) {
			t.Fatalf("store %+v %+v, processor %+v %+v", pats, vecs, p.Patterns(), p.Vectors())
		}
	}
	// Records survive JSON, int/float vectors included.
	for _, r := range p.Patterns() {
		checkJSONRoundTrip(t, "pattern", r)
	}
	for _, r := range append(p.Vectors(), VectorRecord{Name: "x", Vector: FloatVector(1, 2.5, 1e16), Seq: 9}) {
		checkJSONRoundTrip(t, "vector", r)
	}
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := all.Apply(cancelled, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled Apply: %v", err)
	}
}

// checkJSONRoundTrip fails unless record r, a what, decodes from its JSON
// as it was.
func checkJSONRoundTrip[R any](t *testing.T, what string, r R) {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	var back R
	if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(back, r) {
		t.Errorf("%s %s → %+v, %v", what, b, back, err)
	}
}

// Load and Replay refuse records that do not check out.
func TestLoadCorrupt(t *testing.T) {
	good := PatternRecord{Name: ModelName([][]string{{"a"}, {"b"}}), Events: [][]string{{"a"}, {"b"}}, Length: 2, Frequency: 1}
	vec := VectorRecord{Name: VectorName(IntVector(1)), Vector: IntVector(1)}
	mod := func(f func(*PatternRecord)) PatternRecord {
		r := good
		f(&r)
		return r
	}
	tests := []struct {
		name string
		pats []PatternRecord
		vecs []VectorRecord
	}{
		{"wrong name", []PatternRecord{mod(func(r *PatternRecord) { r.Name = ModelName([][]string{{"x"}}) })}, nil},
		{"wrong length", []PatternRecord{mod(func(r *PatternRecord) { r.Length = 3 })}, nil},
		{"zero frequency", []PatternRecord{mod(func(r *PatternRecord) { r.Frequency = 0 })}, nil},
		{"one symbol", []PatternRecord{{Name: ModelName([][]string{{"a"}}), Events: [][]string{{"a"}}, Length: 1, Frequency: 1}}, nil},
		{"empty event", []PatternRecord{{Name: ModelName([][]string{{"a", "b"}, {}}), Events: [][]string{{"a", "b"}, {}}, Length: 2, Frequency: 1}}, nil},
		{"twice", []PatternRecord{good, mod(func(r *PatternRecord) { r.Seq = 5 })}, nil},
		{"vector name", nil, []VectorRecord{{Name: VectorName(IntVector(2)), Vector: IntVector(1)}}},
		{"vector twice", nil, []VectorRecord{vec, {Name: vec.Name, Vector: vec.Vector, Seq: 1}}},
	}
	for _, tt := range tests {
		if _, err := Load(DefaultConfig(), "i", "n", tt.pats, tt.vecs); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	p, err := Load(DefaultConfig(), "i", "n", []PatternRecord{mod(func(r *PatternRecord) { r.Seq = 7; r.Frequency = 3 })}, []VectorRecord{vec})
	if err != nil {
		t.Fatal(err)
	}
	older := PatternRecord{Name: ModelName([][]string{{"c"}, {"d"}}), Events: [][]string{{"c"}, {"d"}}, Length: 2, Frequency: 1, Seq: 3}
	for _, ch := range []Changes{
		{{Kind: PutPattern, Pattern: older}},
		{{Kind: PutPattern, Pattern: mod(func(r *PatternRecord) { r.Seq = 7; r.Frequency = 2 })}},
		{{Kind: ChangeKind(9)}},
	} {
		if err := p.Replay(ch); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Replay(%v): %v", ch[0].Kind, err)
		}
	}
	// Learning after a load continues the sequence.
	observeStrings(t, p, "e")
	observeStrings(t, p, "f")
	if _, ch := p.Learn(); ch[0].Pattern.Seq != 8 {
		t.Errorf("next seq = %d, want 8", ch[0].Pattern.Seq)
	}
}
