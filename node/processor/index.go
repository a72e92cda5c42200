package processor

// This file is the predictor and its indexed matcher (D15): finding through
// the inverted index the models that can pass the threshold.

import (
	"encoding/hex"
	"math"
)

// The indexed matcher (D15). difflib's ratio is 2M/(len a + len b), and the
// matched count M never exceeds the multiset overlap O = Σ_s min(count of s
// in the model, count of s in the state). So a model can pass the threshold
// only if 2O/(len a + len b) does, and it needs O ≥ 1 to have a block at all
// (D7). The inverted index (symbol → models holding it, in pattern order,
// with counts) yields O for exactly the models that share a symbol with the
// state, by merging the posting lists of the state's symbols; every other
// model is skipped without being looked at. The bound is computed with the
// ratio's own float expression, and float division is monotonic, so the
// skipped models are exactly models that cannot pass: the result is the
// full scan's, not an approximation.
//
// Models with O = 1 have M = 1 and a fixed block; ranking evaluates them
// only if they can reach the top max_predictions (resolveSingles). The
// others go through difflib (evalGeneric).

// single is a candidate of overlap 1, not evaluated yet: its potential is
// known up to its itfdf_similarity, so rank evaluates it only if it can
// reach the top max_predictions.
type single struct {
	pat   int32
	slot  int32 // the one state symbol it shares
	plen  int32
	evLen uint16
	freq  int64
}

// cursor walks one posting list of the state.
type cursor struct {
	list []posting
	sym  int32
	slot int32
	cs   int32 // count of the symbol in the state
}

// chunkSize is how many patterns the accumulator covers at a time; its
// entries (24 bytes each) stay in the L1 cache.
const chunkSize = 1024

// accEntry accumulates one pattern of the current chunk. slot and evLen
// come from the last posting that touched it: for overlap 1 the only one.
type accEntry struct {
	overlap int32
	plen    int32
	slot    int32
	evLen   uint16
	freq    int64
}

// predictor owns the scratch of predictions; it is used under the
// processor's write lock only.
type predictor struct {
	q       query
	ev      evaluator
	cands   []cand   // evaluated candidates
	singles []single // overlap-1 candidates, evaluated lazily
	bounds  []float64
	vals    []float64
	cursors []cursor
	multi   []int32
	acc     []accEntry
	touched []int32
	maxLen  []int32
	sink    int32 // see kb.warm
	matched int   // candidates of the last prediction (for benchmarks)

	// match fills cands and singles; indexCandidates unless a test swaps
	// in the full-scan oracle.
	match func(pr *predictor, thr float64)
}

func newPredictor() *predictor {
	return &predictor{match: (*predictor).indexCandidates}
}

// predict computes the predictions for stm (7.1-7.8).
func (pr *predictor) predict(k *kb, stm [][]string, thr float64, maxPred int) []Prediction {
	pr.q.build(&k.syms, stm)
	pr.ev.reset(k, &pr.q)
	pr.cands, pr.singles = pr.cands[:0], pr.singles[:0]
	pr.match(pr, thr)
	pr.matched = len(pr.cands) + len(pr.singles)
	return pr.rank(maxPred)
}

// indexCandidates finds the candidates through the inverted index. Their
// order does not matter: ranking breaks ties by pattern index.
func (pr *predictor) indexCandidates(thr float64) {
	k, q := pr.ev.k, &pr.q
	// The bound: overlap o passes for model lengths up to maxLen[o].
	ls := len(q.state)
	pr.maxLen = pr.maxLen[:0]
	for o := 0; o <= ls; o++ {
		pr.maxLen = append(pr.maxLen, maxPassingLength(o, ls, thr))
	}
	// Walk the posting lists of the state's symbols together, one chunk of
	// pattern indexes at a time: the lists are read in order and the
	// accumulator of a chunk stays in cache.
	cs := pr.cursors[:0]
	next := int32(math.MaxInt32) // lowest pattern index left in any list
	for s, id := range q.slotIDs {
		if id >= 0 && int(id) < len(k.post) && len(k.post[id]) > 0 {
			cs = append(cs, cursor{list: k.post[id], sym: id, slot: int32(s), cs: q.slotCnt[s]})
			next = min(next, k.post[id][0].pat)
		}
	}
	if len(pr.acc) < chunkSize {
		pr.acc = make([]accEntry, chunkSize)
	}
	acc := pr.acc
	for next != math.MaxInt32 {
		base := next / chunkSize * chunkSize
		end := base + chunkSize
		touched := pr.touched[:0]
		next = math.MaxInt32
		for i := range cs {
			c := &cs[i]
			list := c.list
			for len(list) > 0 && list[0].pat < end {
				p := list[0]
				list = list[1:]
				a := &acc[p.pat-base]
				if a.overlap == 0 {
					touched = append(touched, p.pat-base)
					a.plen, a.freq = k.plen[p.pat], k.pfreq[p.pat]
				}
				a.overlap += min(k.countOf(c.sym, p), c.cs)
				a.slot, a.evLen = c.slot, p.evLen
			}
			c.list = list
			if len(list) > 0 {
				next = min(next, list[0].pat)
			}
		}
		for _, off := range touched {
			a := acc[off]
			acc[off] = accEntry{}
			if a.plen > pr.maxLen[a.overlap] {
				continue
			}
			pat := base + off
			if a.overlap == 1 {
				pr.singles = append(pr.singles, single{pat: pat, slot: a.slot, plen: a.plen, evLen: a.evLen, freq: a.freq})
			} else {
				pr.multi = append(pr.multi, pat)
			}
		}
		pr.touched = touched[:0]
	}
	pr.cursors = cs[:0]
	// The others go through difflib, their memory fetched in one sweep first.
	pr.sink += k.warm(pr.multi)
	for _, pat := range pr.multi {
		if c, ok := pr.ev.evalGeneric(pat, thr); ok {
			pr.cands = append(pr.cands, c)
		}
	}
	pr.multi = pr.multi[:0]
}

// maxPassingLength returns the largest model length L for which
// ratioPasses(o, L, ls, thr) holds (-1 for none); the ratio falls as L grows.
func maxPassingLength(o, ls int, thr float64) int32 {
	if !ratioPasses(o, 1, ls, thr) {
		return -1
	}
	lo, hi := 1, math.MaxInt32 // ratioPasses(o, lo) holds
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if ratioPasses(o, mid, ls, thr) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return int32(lo)
}

func hexName(h [20]byte) string { return hex.EncodeToString(h[:]) }
