package processor

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// TestIndexedEqualsOracleLargeKB checks the matcher on a knowledge base big
// enough for thousands of candidates, with repeated symbols, re-learned
// patterns, short and long states, and every mix of threshold and
// max_predictions, so that the bounds of both the matcher and the ranking
// are exercised.
func TestIndexedEqualsOracleLargeKB(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	p := newTestProcessor(t, DefaultConfig())
	vocab := makeVocab("s", 150)
	var learned [][][]string
	for i := 0; i < 3000; i++ {
		var evs [][]string
		if i > 0 && rng.IntN(10) == 0 { // re-learn: frequencies differ
			evs = learned[rng.IntN(len(learned))]
		} else {
			evs = randomEvents(rng, vocab, 1, 7)
			if len(flatten(evs)) < 2 {
				continue
			}
			learned = append(learned, evs)
		}
		p.kb.learn(evs, nil, 5)
	}
	queries := 0
	for _, thr := range []float64{0, 0.05, 0.1, 0.3} {
		for _, maxPred := range []int{1, 5, 100, 100000} {
			for n := 0; n < 6; n++ {
				var stm [][]string
				length := []int{1, 3, 6, 40}[n%4]
				for len(flatten(stm)) < length {
					src := learned[rng.IntN(len(learned))]
					stm = append(stm, slices.Clone(src[rng.IntN(len(src))]))
				}
				if n%2 == 1 {
					stm = append(stm, []string{"unknown"})
				}
				got := predictionsJSON(t, p.pr.predict(p.kb, stm, thr, maxPred))
				want := predictionsJSON(t, oraclePredict(&Processor{kb: p.kb, work: work{cfg: Config{RecallThreshold: thr, MaxPredictions: maxPred}}}, stm))
				if got != want {
					t.Fatalf("threshold %v, max %d, STM %q: indexed ≠ full scan", thr, maxPred, stm)
				}
				queries++
			}
		}
	}
	// The reference agrees too on a few of them.
	recs := p.Patterns()
	for _, stm := range [][][]string{{{"s1"}}, {{"s1", "s2"}, {"s3"}}, learned[0]} {
		got := predictionsJSON(t, p.pr.predict(p.kb, stm, 0.1, 20))
		if ref := predictionsJSON(t, refPredict(recs, stm, 0.1, 20)); got != ref {
			t.Fatalf("STM %q: processor ≠ reference", stm)
		}
	}
	t.Logf("%d queries", queries)
}

// A symbol held more than 65,534 times by one pattern saturates its posting;
// the matcher still uses the true count.
func TestSaturatedPosting(t *testing.T) {
	p := newTestProcessor(t, DefaultConfig())
	long := make([]string, 70000)
	for i := range long {
		long[i] = "x"
	}
	long[0] = "y"
	p.kb.learn([][]string{long}, nil, 5)
	p.kb.learn([][]string{{"x", "z"}}, nil, 5)
	x, _ := p.kb.syms.lookup("x")
	post := p.kb.post[x]
	if post[0].cnt != saturated || post[0].evLen != saturated || p.kb.countOf(x, post[0]) != 69999 {
		t.Fatalf("posting %+v, count %d", post[0], p.kb.countOf(x, post[0]))
	}
	if p.kb.countOf(x, post[1]) != 1 {
		t.Fatalf("small posting count %d", p.kb.countOf(x, post[1]))
	}
	for _, stm := range [][][]string{{{"x"}}, {{"x", "x", "y"}}} {
		got := predictionsJSON(t, p.pr.predict(p.kb, stm, 0, 10))
		want := predictionsJSON(t, oraclePredict(&Processor{kb: p.kb, work: work{cfg: Config{MaxPredictions: 10}}}, stm))
		if got != want {
			t.Fatalf("STM %q: indexed ≠ full scan", stm)
		}
	}
}
