package processor

// This file scores candidates (PROCESSOR.md 7.7): the ensemble's quantities
// over every candidate, each candidate's similarity and potential, and the
// selection of the best k in rank order (7.8).

import (
	"math"
	"slices"
)

// ensemble holds the quantities of 7.7 that depend on all candidates.
type ensemble struct {
	f      int64     // F: Σ frequency over the candidates
	ts, tm float64   // T_s, T_m
	n      int       // number of distinct symbols in the KB
	lnN    float64   // ln n
	pS     []float64 // p(s) by state slot (0 unless some present holds s)
	uu     float64   // Σ u_s² over the state
}

// newEnsemble computes F and p over the state for the candidates. A
// single's present covers exactly one state symbol, the one it shares.
func (ev *evaluator) newEnsemble(cands []cand, singles []single) *ensemble {
	k, q := ev.k, ev.q
	en := &ensemble{
		ts:  float64(k.totalSymbolsInModels),
		tm:  float64(k.totalModelFreq),
		n:   len(k.syms.names),
		lnN: math.Log(float64(len(k.syms.names))),
		pS:  make([]float64, len(q.slotIDs)),
	}
	covered := make([]bool, len(q.slotIDs))
	left := 0
	for _, id := range q.slotIDs {
		if id >= 0 {
			left++
		}
	}
	for _, s := range singles {
		en.f += s.freq
		if !covered[s.slot] {
			covered[s.slot] = true
			left--
		}
	}
	for i := range cands {
		c := &cands[i]
		en.f += k.pfreq[c.pat]
		if left == 0 {
			continue
		}
		from, to := k.eventSpan(c.pat, c.ps, c.pe)
		for _, id := range k.symsOf(c.pat)[from:to] {
			if s := q.slotOf(id); s >= 0 && !covered[s] {
				covered[s] = true
				left--
			}
		}
	}
	for s, id := range q.slotIDs {
		if covered[s] {
			en.pS[s] = float64(k.syms.mmf[id]) / en.ts
		}
		u := en.pS[s] * float64(q.slotCnt[s])
		en.uu += float64(u * u)
	}
	return en
}

// score computes itfdf_similarity and potential of c (7.7).
func (ev *evaluator) score(en *ensemble, c *cand) {
	k, q := ev.k, ev.q
	from, to := k.eventSpan(c.pat, c.ps, c.pe)
	r := k.symsOf(c.pat)[from:to]
	ev.countDistinct(r)
	var uv, vv float64
	shared := 0
	for _, id := range ev.dist {
		v := float64(k.syms.mmf[id]) / en.ts * float64(ev.cnt[id])
		vv += float64(v * v)
		if s := q.slotOf(id); s >= 0 {
			shared++
			u := en.pS[s] * float64(q.slotCnt[s])
			uv += float64(u * v)
		}
	}
	// scipy's (older) cosine distance, which averages each sum over |A|.
	a := float64(len(ev.dist) + len(q.slotIDs) - shared)
	cos := (uv / a) / math.Sqrt(float64((en.uu/a)*(vv/a)))
	d := math.Abs(1 - cos)
	c.itfdf = round12(1 - float64(d*float64(k.pfreq[c.pat]))/float64(en.f))
	c.potential = potential(c.m, k.plen[c.pat], int32(len(r)), c.extras, c.blocks, c.itfdf)
}

// potential is 7.7's r((evidence + confidence)·snr + itfdf + 1/(fragmentation + 1)).
func potential(m, length, present, extras, blocks int32, itfdf float64) float64 {
	evidence := float64(m) / float64(length)
	confidence := float64(m) / float64(present)
	snr := float64(2*m-extras) / float64(2*m+extras)
	frag := float64(blocks - 1)
	return round12(float64(float64((evidence+confidence)*snr)+itfdf) + 1/(frag+1))
}

// better reports whether a ranks before b: higher potential first, ties in
// enumeration (first-learned) order, as KATO's stable sort does (7.8).
func better(a, b *cand) bool {
	return a.potential > b.potential || (a.potential == b.potential && a.pat < b.pat)
}

// selectBest moves the best k elements of xs to xs[:k], as a heap with the
// worst of them at xs[0], and returns xs[:k]. k must be ≤ len(xs).
func selectBest[T any](xs []T, k int, better func(a, b *T) bool) []T {
	h := xs[:k]
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= k {
				return
			}
			w := l
			if r := l + 1; r < k && better(&h[l], &h[r]) {
				w = r
			}
			if !better(&h[i], &h[w]) {
				return
			}
			h[i], h[w] = h[w], h[i]
			i = w
		}
	}
	for i := k/2 - 1; i >= 0; i-- {
		down(i)
	}
	for i := k; i < len(xs); i++ {
		if better(&xs[i], &h[0]) {
			h[0], xs[i] = xs[i], h[0]
			down(0)
		}
	}
	return h
}

// top returns the best k candidates in rank order. cands is reordered.
func top(cands []cand, k int) []cand {
	if k <= 0 {
		return nil
	}
	if len(cands) > k {
		cands = selectBest(cands, k, better)
	}
	slices.SortFunc(cands, func(a, b cand) int {
		if better(&a, &b) {
			return -1
		}
		if better(&b, &a) {
			return 1
		}
		return 0
	})
	return cands
}
