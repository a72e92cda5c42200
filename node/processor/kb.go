package processor

// This file is the in-memory knowledge base: the symbol table and its
// statistics, the patterns, their postings in the inverted index, and
// learning a pattern into it.

import (
	"crypto/sha1" //nolint:gosec // model names, see names.go
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strings"
)

// symtab interns the symbols of the knowledge base and keeps their
// statistics, derived from the patterns (D14):
// freq(s) = Σ count of s in p × frequency(p), mmf(s) = Σ [s in p] × frequency(p).
type symtab struct {
	ids   denseIndex // symbol → id, over names
	names []string
	freq  []int64
	mmf   []int64
	bulk  bool // a load in progress: grow by doubling (see roomFor)
}

func (t *symtab) lookup(s string) (int32, bool) {
	return t.find(s, t.ids.hashString(s))
}

// find returns the id of s, whose hash is h.
func (t *symtab) find(s string, h uint64) (int32, bool) {
	return t.ids.find(h, func(id int32) bool { return t.names[id] == s })
}

// intern returns the id of s, adding it if it is new. A new symbol is
// copied: s may be a substring of a larger text (a decoded record or
// request) that the knowledge base must not keep alive.
func (t *symtab) intern(s string) int32 {
	h := t.ids.hashString(s)
	if id, ok := t.find(s, h); ok {
		return id
	}
	id := int32(len(t.names))
	if t.bulk {
		t.names, t.freq, t.mmf = roomFor(t.names, 1), roomFor(t.freq, 1), roomFor(t.mmf, 1)
	}
	t.names = append(t.names, strings.Clone(s))
	t.freq = append(t.freq, 0)
	t.mmf = append(t.mmf, 0)
	t.ids.add(id, h)
	return id
}

// pattern holds the cold data of one learned model that never changes once
// it is added. What the matcher reads is dense, indexed by pattern:
// kb.plen, kb.pfreq, and kb.loc, the start of the pattern's region in
// kb.arena, laid out for locality as [number of events, event ends...,
// symbols...] (event ends relative to the first symbol). The emotive window
// is in kb.emoWins, for the patterns that have one.
type pattern struct {
	name [sha1.Size]byte
	seq  uint64 // learn sequence number: first-learned order (D3)
}

// posting says that pattern pat holds a symbol cnt times, and that the
// event of its first occurrence has evLen symbols: with the pattern's length
// and frequency (kb.plen, kb.pfreq: the matcher reads them a chunk of
// patterns at a time, in order) all it needs before it looks at the pattern
// itself. Values that do not fit are saturated: the true count is in
// kb.bigCnt, and a saturated evLen only means "at least that many".
type posting struct {
	pat   int32
	cnt   uint16
	evLen uint16
}

const saturated = 1<<16 - 1

// kb is the knowledge base: patterns in first-learned order, the inverted
// index, symbol statistics, totals and the vector pool.
//
// What Freeze shares with a Frozen view must not change in place: pats,
// plen, loc, arena, syms.names and vectors.entries are only appended to
// (never written below their length), and the knowledge base is replaced,
// not emptied, by a clear. pfreq, emoOf and emoWins change in place; Freeze
// copies them. An emotive window itself is never written below its length.
type kb struct {
	syms    symtab
	pats    []pattern
	plen    []int32  // symbols per pattern
	pfreq   []int64  // frequency per pattern
	loc     []uint32 // start of the pattern's region in arena
	arena   []int32
	byName  denseIndex // pattern name → pattern index, over pats
	emoOf   []int32    // per pattern up to the last with a window: 0 for none, else 1 + its index in emoWins
	emoWins [][]Emotives
	emoKeys map[string]string // emotive names, copied once (see ownEmotives)
	post    [][]posting       // by symbol id, ascending pattern index
	bigCnt  map[uint64]int32  // counts of saturated postings, by symbol<<32 | pattern

	totalModelFreq       int64 // T_m = Σ frequency(p)
	totalSymbolFreq      int64 // Σ length(p) × frequency(p)
	totalSymbolsInModels int64 // T_s = Σ distinct(p) × frequency(p) = Σ mmf(s)

	vectors vectorPool
	nextSeq uint64 // next learn sequence number
	nextVec uint64 // next vector sequence number

	scratch        []symPos // distinct-symbol counting
	lastDistinct   []symCount
	lastDistinctOf int32
}

func newKB() *kb { return &kb{} }

// lookupName returns the index of the pattern named h.
func (k *kb) lookupName(h [sha1.Size]byte) (int32, bool) {
	return k.byName.find(k.byName.hashBytes(h[:]), func(pi int32) bool { return k.pats[pi].name == h })
}

// window returns the emotive window of pattern pi (nil for none).
func (k *kb) window(pi int32) []Emotives {
	if int(pi) < len(k.emoOf) && k.emoOf[pi] > 0 {
		return k.emoWins[k.emoOf[pi]-1]
	}
	return nil
}

// setWindow replaces the emotive window of pattern pi.
func (k *kb) setWindow(pi int32, win []Emotives) {
	if int(pi) < len(k.emoOf) && k.emoOf[pi] > 0 {
		k.emoWins[k.emoOf[pi]-1] = win
		return
	}
	if len(win) == 0 {
		return
	}
	if n := int(pi) + 1 - len(k.emoOf); n > 0 {
		k.emoOf = append(k.emoOf, make([]int32, n)...)
	}
	k.emoWins = append(k.emoWins, win)
	k.emoOf[pi] = int32(len(k.emoWins))
}

// symsOf returns the flattened symbols of pattern pi.
func (k *kb) symsOf(pi int32) []int32 {
	off := k.loc[pi]
	from := off + 1 + uint32(k.arena[off])
	to := from + uint32(k.plen[pi])
	return k.arena[from:to:to]
}

// endsOf returns the event end offsets of pattern pi.
func (k *kb) endsOf(pi int32) []int32 {
	off := k.loc[pi]
	to := off + 1 + uint32(k.arena[off])
	return k.arena[off+1 : to : to]
}

// warm loads the memory of patterns pis in independent sweeps, so that the
// cache misses overlap instead of coming one by one during evaluation. The
// result means nothing; it keeps the loads from being optimised away.
func (k *kb) warm(pis []int32) (sink int32) {
	for _, pi := range pis {
		sink += int32(k.loc[pi]) + k.plen[pi]
	}
	for _, pi := range pis {
		off := k.loc[pi]
		sink += k.arena[off] + k.arena[min(int(off)+16, len(k.arena)-1)]
	}
	return sink
}

// eventSpan returns the symbol range [from, to) of events [e1, e2) of pi.
func (k *kb) eventSpan(pi, e1, e2 int32) (from, to int32) {
	ends := k.endsOf(pi)
	if e1 > 0 {
		from = ends[e1-1]
	}
	if e2 > 0 {
		to = ends[e2-1]
	}
	if to < from {
		to = from
	}
	return from, to
}

// events materialises the events of pattern pi as strings.
func (k *kb) events(pi int32) [][]string {
	syms := k.symsOf(pi)
	flat := make([]string, len(syms))
	for i, id := range syms {
		flat[i] = k.syms.names[id]
	}
	ends := k.endsOf(pi)
	evs := make([][]string, len(ends))
	var from int32
	for e, to := range ends {
		evs[e] = flat[from:to:to]
		from = to
	}
	return evs
}

// symCount is a distinct symbol of a pattern, how often it occurs there and
// the length of the event of its first occurrence.
type symCount struct {
	id    int32
	cnt   int32
	evLen int32
}

type symPos struct{ id, pos, evLen int32 }

// distinctCounts returns the distinct symbols of pattern pi, sorted by id.
// The last result is kept: learning a new pattern asks twice.
func (k *kb) distinctCounts(pi int32) []symCount {
	if k.lastDistinct != nil && k.lastDistinctOf == pi {
		return k.lastDistinct
	}
	syms, ends := k.symsOf(pi), k.endsOf(pi)
	k.scratch = k.scratch[:0]
	var from int32
	for _, to := range ends {
		for i := from; i < to; i++ {
			k.scratch = append(k.scratch, symPos{syms[i], i, to - from})
		}
		from = to
	}
	slices.SortFunc(k.scratch, func(a, b symPos) int {
		if a.id != b.id {
			return int(a.id - b.id)
		}
		return int(a.pos - b.pos)
	})
	out := k.lastDistinct[:0] // callers do not keep the result
	for i := 0; i < len(k.scratch); {
		j := i
		for j < len(k.scratch) && k.scratch[j].id == k.scratch[i].id {
			j++
		}
		out = append(out, symCount{id: k.scratch[i].id, cnt: int32(j - i), evLen: k.scratch[i].evLen})
		i = j
	}
	k.lastDistinct, k.lastDistinctOf = out, pi
	return out
}

// countOf returns how often the pattern of posting p holds its symbol.
func (k *kb) countOf(sym int32, p posting) int32 {
	if p.cnt == saturated {
		return k.bigCnt[uint64(sym)<<32|uint64(p.pat)]
	}
	return int32(p.cnt)
}

// addPattern appends a new pattern with frequency 0 and indexes it.
func (k *kb) addPattern(name [sha1.Size]byte, events [][]string, seq uint64) int32 {
	pi := int32(len(k.pats))
	size := 1 + len(events)
	for _, ev := range events {
		size += len(ev)
	}
	if len(k.arena) > math.MaxUint32-size {
		panic("processor: the knowledge base's arena would pass 2^32 entries")
	}
	if k.syms.bulk {
		k.arena = roomFor(k.arena, size)
	}
	k.loc = append(k.loc, uint32(len(k.arena)))
	k.arena = append(k.arena, int32(len(events)))
	var n int32
	for _, ev := range events {
		n += int32(len(ev))
		k.arena = append(k.arena, n)
	}
	for _, ev := range events {
		for _, s := range ev {
			k.arena = append(k.arena, k.syms.intern(s))
		}
	}
	k.pats = append(k.pats, pattern{name: name, seq: seq})
	k.plen = append(k.plen, n)
	k.pfreq = append(k.pfreq, 0)
	k.byName.add(pi, k.byName.hashBytes(name[:]))
	for _, d := range k.distinctCounts(pi) {
		for int(d.id) >= len(k.post) {
			if k.syms.bulk {
				k.post = roomFor(k.post, 1)
			}
			k.post = append(k.post, nil)
		}
		pst := posting{pat: pi, cnt: uint16(min(d.cnt, saturated)), evLen: uint16(min(d.evLen, saturated))}
		if pst.cnt == saturated {
			if k.bigCnt == nil {
				k.bigCnt = make(map[uint64]int32)
			}
			k.bigCnt[uint64(d.id)<<32|uint64(pi)] = d.cnt
		}
		if k.syms.bulk {
			k.post[d.id] = roomFor(k.post[d.id], 1)
		}
		k.post[d.id] = append(k.post[d.id], pst)
	}
	if seq >= k.nextSeq {
		k.nextSeq = seq + 1
	}
	return pi
}

// count adds times learns of pattern pi to its frequency, the symbol
// statistics and the totals (5.4).
func (k *kb) count(pi int32, times int64) {
	k.pfreq[pi] += times
	distinct := k.distinctCounts(pi)
	for _, d := range distinct {
		k.syms.freq[d.id] += int64(d.cnt) * times
		k.syms.mmf[d.id] += times
	}
	k.totalModelFreq += times
	k.totalSymbolFreq += int64(k.plen[pi]) * times
	k.totalSymbolsInModels += int64(len(distinct)) * times
}

// learn stores events (≥ 2 symbols) as a model, or counts one more learn of
// it, and returns the absolute record to persist (5.3, 5.4).
func (k *kb) learn(events [][]string, avg Emotives, persistence int) PatternRecord {
	name := modelHash(events)
	pi, known := k.lookupName(name)
	if !known {
		pi = k.addPattern(name, events, k.nextSeq)
	}
	k.count(pi, 1)
	if len(avg) > 0 {
		// Appending writes past the window's length only: a frozen view
		// of the old window is not changed.
		win := append(k.window(pi), k.ownEmotives(dropZeros(avg)))
		if len(win) > persistence {
			win = append([]Emotives(nil), win[len(win)-persistence:]...)
		}
		k.setWindow(pi, win)
	}
	return k.record(pi)
}

// record returns the stored form of pattern pi.
func (k *kb) record(pi int32) PatternRecord {
	return k.recordOf(pi, k.pfreq[pi], k.window(pi))
}

// recordOf returns the stored form of pattern pi with the given frequency
// and emotive window.
func (k *kb) recordOf(pi int32, freq int64, window []Emotives) PatternRecord {
	p := &k.pats[pi]
	em := make([]Emotives, len(window))
	for i, e := range window {
		em[i] = e.clone()
	}
	return PatternRecord{
		Name:      hex.EncodeToString(p.name[:]),
		Events:    k.events(pi),
		Length:    int(k.plen[pi]),
		Frequency: freq,
		Emotives:  em,
		Seq:       p.seq,
	}
}

// find returns the index of the pattern named name ("MODEL|" optional).
func (k *kb) find(name string) (int32, bool) {
	var h [sha1.Size]byte
	bare := name
	if len(bare) > len(ModelPrefix) && bare[:len(ModelPrefix)] == ModelPrefix {
		bare = bare[len(ModelPrefix):]
	}
	if len(bare) != 2*sha1.Size {
		return 0, false
	}
	for i := range h {
		hi, ok1 := lowerHex(bare[2*i])
		lo, ok2 := lowerHex(bare[2*i+1])
		if !ok1 || !ok2 { // upper-case hex is not a name
			return 0, false
		}
		h[i] = hi<<4 | lo
	}
	return k.lookupName(h)
}

// lowerHex returns the value of a lower-case hex digit.
func lowerHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// storeVector adds a percept vector to the store and the pool if its name is
// new (6.5, D5) and returns the record to persist.
func (k *kb) storeVector(name string, v Vector) (VectorRecord, bool) {
	if k.vectors.has(name) {
		return VectorRecord{}, false
	}
	rec := VectorRecord{Name: name, Vector: v, Seq: k.nextVec}
	k.nextVec++
	k.vectors.add(poolEntry{name: name, v: v, seq: rec.Seq})
	return rec, true
}

// replayPattern applies a stored pattern record: a new pattern must come
// after every known one in learn sequence order; a known one takes the
// record's frequency (never lower) and emotive window.
func (k *kb) replayPattern(r PatternRecord) error {
	name, err := r.check()
	if err != nil {
		return err
	}
	pi, known := k.lookupName(name)
	return k.applyPattern(r, name, pi, known)
}

// applyPattern applies a stored pattern record that checked out and hashes
// to name, the pattern pi if known.
func (k *kb) applyPattern(r PatternRecord, name [sha1.Size]byte, pi int32, known bool) error {
	if !known {
		if n := len(k.pats); n > 0 && r.Seq <= k.pats[n-1].seq {
			return fmt.Errorf("%w: pattern %s (seq %d) arrives after seq %d", ErrCorrupt, r.Name, r.Seq, k.pats[n-1].seq)
		}
		pi = k.addPattern(name, r.Events, r.Seq)
	}
	if r.Frequency < k.pfreq[pi] {
		return fmt.Errorf("%w: pattern %s goes back to frequency %d from %d", ErrCorrupt, r.Name, r.Frequency, k.pfreq[pi])
	}
	k.count(pi, r.Frequency-k.pfreq[pi])
	em := make([]Emotives, len(r.Emotives))
	for i, e := range r.Emotives {
		em[i] = k.ownEmotives(e)
	}
	k.setWindow(pi, em)
	return nil
}

// ownEmotives returns a copy of e whose names are the knowledge base's own
// copies: a name may be a substring of a larger text (a decoded record or
// request) that the knowledge base must not keep alive.
func (k *kb) ownEmotives(e Emotives) Emotives {
	if e == nil {
		return nil
	}
	out := make(Emotives, len(e))
	for i, x := range e {
		name, ok := k.emoKeys[x.Name]
		if !ok {
			if k.emoKeys == nil {
				k.emoKeys = make(map[string]string)
			}
			name = strings.Clone(x.Name)
			k.emoKeys[name] = name
		}
		out[i] = Emotive{name, x.Value}
	}
	return out
}

// replayVector applies a stored vector record: a known name is kept as it
// is (D5), a new one must come after every known one in store order.
func (k *kb) replayVector(r VectorRecord) error {
	if want := VectorName(r.Vector); r.Name != want {
		return fmt.Errorf("%w: vector %s has the values of %s", ErrCorrupt, r.Name, want)
	}
	if k.vectors.has(r.Name) {
		return nil
	}
	if n := len(k.vectors.entries); n > 0 && r.Seq <= k.vectors.entries[n-1].seq {
		return fmt.Errorf("%w: vector %s (seq %d) arrives after seq %d", ErrCorrupt, r.Name, r.Seq, k.vectors.entries[n-1].seq)
	}
	k.vectors.add(poolEntry{name: r.Name, v: r.Vector, seq: r.Seq})
	k.nextVec = max(k.nextVec, r.Seq+1)
	return nil
}

// cmpSeq orders records by sequence number, then name.
func cmpSeq(aSeq, bSeq uint64, aName, bName string) int {
	if aSeq != bSeq {
		if aSeq < bSeq {
			return -1
		}
		return 1
	}
	return strings.Compare(aName, bName)
}
