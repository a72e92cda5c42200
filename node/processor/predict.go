package processor

// This file ranks predictions: evaluating each candidate model against the
// state, the ensemble's scores, and the top predictions with their fields
// (PROCESSOR.md 7.4-7.8).

import (
	"math"
	"slices"
)

// cand is a model that passed the threshold, with what the ensemble needs
// (PROCESSOR.md 7.4-7.6): the matched symbol count, the number of matching
// blocks, the present events after the boundary correction, and the number
// of extras.
type cand struct {
	pat       int32
	m         int32 // len(matches)
	blocks    int32 // matching blocks (fragmentation + 1)
	ps, pe    int32 // present = events[ps:pe]
	extras    int32
	itfdf     float64
	potential float64
}

// evaluator computes per-candidate results for one query. It is not safe
// for concurrent use.
type evaluator struct {
	k  *kb
	q  *query
	sm seqMatcher

	// Per-symbol scratch, valid where stamp matches.
	cnt   []int32
	mark  []uint32
	stamp uint32
	dist  []int32

	// Per-symbol logarithms of the current query, valid where logMark == logGen.
	lnP, log10P []float64
	logMark     []uint32
	logGen      uint32

	// Output arenas, replaced for every prediction list.
	strs  strArena
	evbuf [][]string
}

func (ev *evaluator) reset(k *kb, q *query) {
	ev.k, ev.q = k, q
	ev.sm.reset(q)
	if n := len(k.syms.names); len(ev.cnt) < n {
		ev.cnt = append(ev.cnt, make([]int32, n-len(ev.cnt))...)
		ev.mark = append(ev.mark, make([]uint32, n-len(ev.mark))...)
		ev.lnP = append(ev.lnP, make([]float64, n-len(ev.lnP))...)
		ev.log10P = append(ev.log10P, make([]float64, n-len(ev.log10P))...)
		ev.logMark = append(ev.logMark, make([]uint32, n-len(ev.logMark))...)
	}
	ev.logGen++
	if ev.logGen == 0 {
		clear(ev.logMark)
		ev.logGen = 1
	}
	ev.strs, ev.evbuf = strArena{}, nil
}

// nextStamp starts a new use of the per-symbol scratch.
func (ev *evaluator) nextStamp() uint32 {
	ev.stamp++
	if ev.stamp == 0 {
		clear(ev.mark)
		ev.stamp = 1
	}
	return ev.stamp
}

// countDistinct sets ev.dist to the distinct symbols of r in order of first
// occurrence and ev.cnt[s] to the count of each.
func (ev *evaluator) countDistinct(r []int32) {
	stamp := ev.nextStamp()
	ev.dist = ev.dist[:0]
	for _, id := range r {
		if ev.mark[id] != stamp {
			ev.mark[id], ev.cnt[id] = stamp, 0
			ev.dist = append(ev.dist, id)
		}
		ev.cnt[id]++
	}
}

// ratioPasses is the threshold test of 7.3 on difflib's float ratio
// 2.0*M/(len a + len b): with matched ≥ 1 (D7).
func ratioPasses(matched, la, lb int, thr float64) bool {
	return matched > 0 && float64(2*matched)/float64(la+lb) >= thr
}

// evalGeneric runs difflib on pattern pi and returns its candidate record if
// it passes the threshold. This is the reference path: the full-scan oracle
// uses it for every pattern, the indexed matcher for those sharing more than
// one symbol with the state.
func (ev *evaluator) evalGeneric(pi int32, thr float64) (cand, bool) {
	a := ev.k.symsOf(pi)
	slots := ev.sm.slotsOf(a)
	bs := ev.sm.matchingBlocks(slots)
	m := matchedCount(bs)
	if !ratioPasses(int(m), len(a), len(ev.q.state), thr) {
		return cand{}, false
	}
	i0 := bs[0].i
	last := bs[len(bs)-1]
	iend := last.i + last.n
	c := cand{pat: pi, m: m, blocks: int32(len(bs))}
	// Extras: the state symbols that the present does not cover (7.4).
	covered := matchedCount(ev.sm.matchingBlocks(slots[i0:iend]))
	c.extras = int32(len(ev.q.state)) - covered
	c.ps, c.pe = ev.mapEvents(pi, i0, iend-i0)
	return c, true
}

// evalSingle is evalGeneric for a pattern that shares exactly one symbol
// occurrence with the state (multiset overlap 1), without difflib: the only
// block is (first occurrence in the model, first in the state, 1), the
// present is the event holding it, and every other state symbol is an extra.
// The caller has checked the threshold with M = 1.
func (ev *evaluator) evalSingle(pi int32) cand {
	a := ev.k.symsOf(pi)
	i := 0
	for ev.q.slotOf(a[i]) < 0 {
		i++
	}
	ends := ev.k.endsOf(pi)
	e := int32(0)
	for ends[e] <= int32(i) {
		e++
	}
	return cand{pat: pi, m: 1, blocks: 1, ps: e, pe: e + 1, extras: int32(len(ev.q.state)) - 1}
}

// mapEvents maps past_flat = model[:p] and present_flat = model[p:p+q] onto
// events (7.5), including KATO's boundary correction and its known flaw (D11).
func (ev *evaluator) mapEvents(pi, p, q int32) (ps, pe int32) {
	ends := ev.k.endsOf(pi)
	n := int32(len(ends))
	var c, e int32
	for e < n && c < p {
		c = ends[e]
		e++
	}
	ps = e
	for e < n && c < p+q {
		c = ends[e]
		e++
	}
	pe = e
	if ps > 0 {
		a := ev.k.symsOf(pi)
		first := a[p] // == matches[0]
		from, to := ev.k.eventSpan(pi, ps-1, ps)
		if slices.Contains(a[from:to], first) {
			ps--
		}
	}
	return ps, pe
}

// rank scores the candidates and builds the predictions of the best maxPred
// (7.7, 7.8).
func (pr *predictor) rank(maxPred int) []Prediction {
	ev := &pr.ev
	if len(pr.cands)+len(pr.singles) == 0 {
		return []Prediction{}
	}
	en := ev.newEnsemble(pr.cands, pr.singles)
	for i := range pr.cands {
		ev.score(en, &pr.cands[i])
	}
	if len(pr.singles) > 0 && maxPred > 0 {
		pr.resolveSingles(en, maxPred)
	}
	best := top(pr.cands, maxPred)
	out := make([]Prediction, len(best))
	for i := range best {
		out[i] = ev.prediction(en, &best[i])
	}
	return out
}

// resolveSingles evaluates the singles that can reach the top maxPred and
// adds them to the candidates. A single's potential is exact up to its
// itfdf_similarity: with A = (evidence + confidence)·snr it is
// r(A + itfdf + 1), itfdf lies in [r(1 - frequency/F), 1] because the
// cosine distance lies in [0, 1], and every step is monotonic. So
// UB(A) = r(A + 1 + 1) bounds it from above and, with the largest frequency
// fmax of any single, LB(A) = r(A + r(1 - fmax/F) + 1) from below. Let T be
// the maxPred-th largest of the exact potentials and the singles' LB: at
// least maxPred candidates reach T, so a single with UB(A) < T ranks after
// all of them and cannot be in the result.
func (pr *predictor) resolveSingles(en *ensemble, maxPred int) {
	extras := int32(len(pr.q.state)) - 1
	snr := float64(2-extras) / float64(2+extras)
	as := pr.bounds[:0]
	var fmax int64
	for _, s := range pr.singles {
		a := math.Inf(1) // a saturated evLen is not known: always evaluate
		if s.evLen != saturated {
			a = float64((1/float64(s.plen) + 1/float64(s.evLen)) * snr)
		}
		as = append(as, a)
		fmax = max(fmax, s.freq)
	}
	pr.bounds = as
	threshold := math.Inf(-1)
	if len(pr.cands)+len(pr.singles) > maxPred {
		// The maxPred largest LB come from the maxPred largest A.
		vals := append(pr.vals[:0], as...)
		defer func() { pr.vals = vals[:0] }()
		if len(vals) > maxPred {
			vals = selectBest(vals, maxPred, func(a, b *float64) bool { return *a > *b })
		}
		itfdfMin := round12(1 - float64(fmax)/float64(en.f))
		for i, a := range vals {
			vals[i] = round12(float64(a+itfdfMin) + 1)
		}
		for _, c := range pr.cands {
			vals = append(vals, c.potential)
		}
		threshold = selectBest(vals, maxPred, func(a, b *float64) bool { return *a > *b })[0]
	}
	for i, s := range pr.singles {
		a := as[i]
		// r() moves a value by at most 5e-13: skip clear cases without it.
		if a+2+1e-9 < threshold || round12(float64(a+1)+1) < threshold {
			continue
		}
		pr.multi = append(pr.multi, s.pat)
	}
	pr.sink += pr.ev.k.warm(pr.multi)
	for _, pat := range pr.multi {
		c := pr.ev.evalSingle(pat)
		pr.ev.score(en, &c)
		pr.cands = append(pr.cands, c)
	}
	pr.multi = pr.multi[:0]
}

// prediction builds the full prediction of c (7.4-7.8). Matches and extras
// are recomputed with difflib, so they never depend on the matcher's shortcuts.
func (ev *evaluator) prediction(en *ensemble, c *cand) Prediction {
	k, q := ev.k, ev.q
	p := &k.pats[c.pat]
	freq, length := k.pfreq[c.pat], k.plen[c.pat]
	a := k.symsOf(c.pat)
	slots := ev.sm.slotsOf(a)
	bs := ev.sm.matchingBlocks(slots)
	inMatches := ev.nextStamp()
	matches := ev.strs.take(int(c.m))[:0]
	for _, b := range bs {
		matches = append(matches, q.names[b.j:b.j+b.n]...)
		for _, id := range a[b.i : b.i+b.n] {
			ev.mark[id] = inMatches
		}
	}
	i0, last := bs[0].i, bs[len(bs)-1]
	iend := last.i + last.n
	extras := ev.strs.take(int(c.extras))[:0]
	pos := int32(0)
	for _, b := range ev.sm.matchingBlocks(slots[i0:iend]) {
		extras = append(extras, q.names[pos:b.j]...)
		pos = b.j + b.n
	}
	extras = append(extras, q.names[pos:]...)

	evs := ev.events(c.pat)
	from, to := k.eventSpan(c.pat, c.ps, c.pe)
	r := a[from:to]
	nMissing := 0
	for _, id := range r {
		if ev.mark[id] != inMatches {
			nMissing++
		}
	}
	missing := ev.strs.take(nMissing)[:0]
	for _, id := range r {
		if ev.mark[id] != inMatches {
			missing = append(missing, k.syms.names[id])
		}
	}

	ev.countDistinct(r) // for the hamiltonian and the distinct symbols of R
	var entropy, ham, logSum, grand float64
	nr := float64(len(r))
	for i, id := range r {
		pr, lnp, log10p := ev.logs(en, id)
		entropy += -float64(pr * (lnp / math.Ln2))
		ham += en.expectation(float64(ev.cnt[id])/nr, math.NaN())
		if i == 0 {
			logSum = log10p
		} else {
			logSum += log10p
		}
	}
	for _, id := range ev.dist {
		pr, lnp, _ := ev.logs(en, id)
		grand += en.expectation(pr, lnp)
	}
	pEH := float64(freq) / en.tm
	return Prediction{
		Type:             "prototypical",
		Name:             ModelPrefix + hexName(p.name),
		Frequency:        freq,
		Emotives:         averageStored(k.window(c.pat)),
		Matches:          matches,
		Past:             evs[:c.ps:c.ps],
		Present:          evs[c.ps:c.pe:c.pe],
		Future:           evs[c.pe:],
		Missing:          missing,
		Extras:           extras,
		Potential:        c.potential,
		Evidence:         float64(c.m) / float64(length),
		Similarity:       float64(2*c.m) / float64(int(length)+len(q.state)),
		Fragmentation:    float64(c.blocks - 1),
		SNR:              float64(2*c.m-c.extras) / float64(2*c.m+c.extras),
		Entropy:          round12(entropy),
		Hamiltonian:      round12(ham),
		GrandHamiltonian: round12(grand),
		Confluence:       round12(float64(pEH * (1 - math.Pow(10, logSum)))),
		Confidence:       float64(c.m) / nr,
		ItfdfSimilarity:  c.itfdf,
	}
}

// logs returns p(s) = mmf(s)/T_s with ln p and log10 p, cached per query.
func (ev *evaluator) logs(en *ensemble, id int32) (p, lnp, log10p float64) {
	p = float64(ev.k.syms.mmf[id]) / en.ts
	if ev.logMark[id] != ev.logGen {
		ev.logMark[id] = ev.logGen
		ev.lnP[id], ev.log10P[id] = math.Log(p), math.Log10(p)
	}
	return p, ev.lnP[id], ev.log10P[id]
}

// expectation is KATO's expectation(p, N): -p·log_N(p) = -p·(ln p / ln N)
// for p > 0 and N > 1. lnp is ln p when known, NaN otherwise.
func (en *ensemble) expectation(p, lnp float64) float64 {
	if p > 0 && en.n > 1 {
		if math.IsNaN(lnp) {
			lnp = math.Log(p)
		}
		return float64(-p * (lnp / en.lnN))
	}
	return 0
}

// events materialises the events of pattern pi from the arenas.
func (ev *evaluator) events(pi int32) [][]string {
	k := ev.k
	syms := k.symsOf(pi)
	flat := ev.strs.take(len(syms))
	for i, id := range syms {
		flat[i] = k.syms.names[id]
	}
	ends := k.endsOf(pi)
	if len(ends) > cap(ev.evbuf)-len(ev.evbuf) {
		ev.evbuf = make([][]string, 0, max(256, len(ends)))
	}
	evs := ev.evbuf[len(ev.evbuf) : len(ev.evbuf)+len(ends) : len(ev.evbuf)+len(ends)]
	ev.evbuf = ev.evbuf[:len(ev.evbuf)+len(ends)]
	var from int32
	for e, to := range ends {
		evs[e] = flat[from:to:to]
		from = to
	}
	return evs
}

// strArena hands out string slices carved from shared chunks, so that a
// prediction list costs a few allocations instead of several per prediction.
// Chunks are never reused: the slices live on in published predictions.
type strArena struct{ buf []string }

func (a *strArena) take(n int) []string {
	if n > cap(a.buf)-len(a.buf) {
		a.buf = make([]string, 0, max(1024, n))
	}
	s := a.buf[len(a.buf) : len(a.buf)+n : len(a.buf)+n]
	a.buf = a.buf[:len(a.buf)+n]
	return s
}
