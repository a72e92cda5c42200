// This file checks that a Frozen view keeps the model of its Freeze while
// the processor learns, re-learns, replays and clears, also concurrently.
package processor

import (
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
)

// collect returns what f yields (empty lists, not nil, as Processor
// returns them).
func collect(f *Frozen) ([]PatternRecord, []VectorRecord) {
	ps := []PatternRecord{}
	for r := range f.Patterns {
		ps = append(ps, r)
	}
	vs := []VectorRecord{}
	for r := range f.Vectors {
		vs = append(vs, r)
	}
	return ps, vs
}

// churn changes p's knowledge base in every way it can change: new
// patterns, re-learns with emotives (windows appended in place below the
// persistence, trimmed above it), new vectors, replayed records that raise
// frequencies and replace windows, and clears.
func churn(t *testing.T, rng *rand.Rand, p *Processor, vocab []string, known [][][]string, steps int) {
	for i := range steps {
		switch r := rng.IntN(100); {
		case r < 45: // re-learn a known sequence, with emotives
			for _, ev := range known[rng.IntN(len(known))] {
				obs := Observation{Strings: ev, Emotives: []EmotiveValue{{"joy", Float(rng.Float64())}}}
				if rng.IntN(5) == 0 {
					obs.Vectors = [][]Number{{Int(int64(rng.IntN(50))), Int(int64(i))}}
				}
				if _, _, err := p.Observe(obs); err != nil {
					t.Fatal(err)
				}
			}
			p.Learn()
		case r < 75: // a new sequence
			for _, ev := range randomEvents(rng, vocab, 2, 4) {
				if _, _, err := p.Observe(Observation{Strings: ev}); err != nil {
					t.Fatal(err)
				}
			}
			p.Learn()
		case r < 97: // a replayed record of a known pattern
			recs := p.Patterns()
			if len(recs) == 0 {
				continue
			}
			rec := recs[rng.IntN(len(recs))]
			rec.Frequency += int64(1 + rng.IntN(3))
			rec.Emotives = []Emotives{{{"calm", float64(i)}}}
			if err := p.Replay(Changes{{Kind: PutPattern, Pattern: rec}}); err != nil {
				t.Fatal(err)
			}
		case r < 98:
			if err := p.Replay(Changes{{Kind: ClearAll}}); err != nil {
				t.Fatal(err)
			}
		default:
			p.ClearAll()
		}
	}
}

// A Frozen view yields the records of the time of Freeze, exactly those a
// processor loaded from them holds, while the processor goes on changing,
// read while it changes (run with -race).
func TestFrozenKeepsItsModel(t *testing.T) {
	for n := range 10 {
		rng := rand.New(rand.NewPCG(uint64(n), 0xf0))
		vocab := makeVocab("s", 5+rng.IntN(30))
		cfg := DefaultConfig()
		cfg.Persistence = 2 + rng.IntN(6)
		p, err := New(cfg, "test-id", "KatoProcessor")
		if err != nil {
			t.Fatal(err)
		}
		var known [][][]string
		for range 30 {
			known = append(known, randomEvents(rng, vocab, 2, 4))
		}
		churn(t, rng, p, vocab, known, 100+rng.IntN(100))

		f := p.Freeze()
		pats, vecs := p.Patterns(), p.Vectors()
		ref, err := Load(cfg, "test-id", "KatoProcessor", pats, vecs)
		if err != nil {
			t.Fatal(err)
		}
		want, wantV := ref.Patterns(), ref.Vectors()
		if !reflect.DeepEqual(want, pats) || !reflect.DeepEqual(wantV, vecs) {
			t.Fatal("a loaded processor holds other records")
		}
		check := func(stage string) {
			ps, vs := collect(f)
			if !reflect.DeepEqual(ps, want) || !reflect.DeepEqual(vs, wantV) {
				t.Errorf("model %d %s: frozen records differ from the model at Freeze", n, stage)
			}
			if np, nv := f.Counts(); np != len(want) || nv != len(wantV) {
				t.Errorf("model %d %s: counts %d, %d, want %d, %d", n, stage, np, nv, len(want), len(wantV))
			}
		}
		check("at once")

		stop := make(chan struct{})
		var wg sync.WaitGroup
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					check("while churning")
					select {
					case <-stop:
						return
					default:
					}
				}
			}()
		}
		churn(t, rng, p, vocab, known, 300)
		close(stop)
		wg.Wait()
		check("after churning")
		if reflect.DeepEqual(p.Patterns(), want) {
			t.Fatalf("model %d: churning changed nothing", n)
		}
		// A Frozen taken now is the model of now; the old one is not.
		g := p.Freeze()
		ps, vs := collect(g)
		if !reflect.DeepEqual(ps, p.Patterns()) || !reflect.DeepEqual(vs, p.Vectors()) {
			t.Fatalf("model %d: a new Freeze differs from the model", n)
		}
	}
}

// Iteration stops when the consumer does.
func TestFrozenStops(t *testing.T) {
	p := newTestProcessor(t, DefaultConfig())
	for i := range 5 {
		observeStrings(t, p, "a", vocabOf(i))
		observeStrings(t, p, "b")
		mustObserve(t, p, Observation{Vectors: [][]Number{{Int(int64(i))}}})
		p.Learn()
	}
	f := p.Freeze()
	n := 0
	for range f.Patterns {
		if n++; n == 2 {
			break
		}
	}
	for range f.Vectors {
		if n++; n == 3 {
			break
		}
	}
	if np, nv := f.Counts(); n != 3 || np != 5 || nv != 5 {
		t.Fatalf("yielded %d; counts %d, %d", n, np, nv)
	}
}

func vocabOf(i int) string { return makeVocab("v", i+1)[i] }
