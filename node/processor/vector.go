package processor

// This file is vectors: their values, names and numpy-style text, and the
// pool of stored vectors with its nearest-vector search.

import (
	"crypto/sha1" //nolint:gosec // KATO names vectors by SHA-1; not used for security
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// VectorPrefix starts every vector symbol.
const VectorPrefix = "VECTOR|"

// Vector is a numeric array the way numpy holds a JSON list: int64 when every
// element was written as an integer, float64 otherwise (PROCESSOR.md 6.1).
// Exactly one of Ints and Floats is used, chosen by Float.
type Vector struct {
	Float  bool
	Ints   []int64
	Floats []float64
}

// IntVector returns an integer vector.
func IntVector(v ...int64) Vector { return Vector{Ints: v} }

// FloatVector returns a float vector.
func FloatVector(v ...float64) Vector { return Vector{Float: true, Floats: v} }

// Len returns the number of elements.
func (v Vector) Len() int {
	if v.Float {
		return len(v.Floats)
	}
	return len(v.Ints)
}

func (v Vector) f64(i int) float64 {
	if v.Float {
		return v.Floats[i]
	}
	return float64(v.Ints[i])
}

// vectorOf converts one JSON list like numpy.array does: float64 if any
// element is a float, int64 otherwise.
func vectorOf(ns []Number) Vector {
	for _, n := range ns {
		if n.isFloat {
			fs := make([]float64, len(ns))
			for i, m := range ns {
				fs[i] = m.f
			}
			return FloatVector(fs...)
		}
	}
	is := make([]int64, len(ns))
	for i, m := range ns {
		is[i] = m.i
	}
	return IntVector(is...)
}

// add returns v + w element-wise with numpy's promotion (int+int wraps in
// int64; anything with a float is float64). Lengths must match.
func (v Vector) add(w Vector) Vector {
	if !v.Float && !w.Float {
		out := make([]int64, len(v.Ints))
		for i := range out {
			out[i] = v.Ints[i] + w.Ints[i]
		}
		return IntVector(out...)
	}
	out := make([]float64, v.Len())
	for i := range out {
		out[i] = v.f64(i) + w.f64(i)
	}
	return FloatVector(out...)
}

// combineVectors adds the vectors of one observation into the percept vector,
// left to right as KATO's reduce does.
func combineVectors(vs [][]Number) (Vector, error) {
	p := vectorOf(vs[0])
	for _, ns := range vs[1:] {
		if len(ns) != p.Len() {
			return Vector{}, fmt.Errorf("%w: vectors of different lengths (%d and %d)", ErrBadObservation, p.Len(), len(ns))
		}
		p = p.add(vectorOf(ns))
	}
	if p.Float {
		for _, f := range p.Floats {
			if math.IsInf(f, 0) || math.IsNaN(f) {
				return Vector{}, fmt.Errorf("%w: vector sum overflows", ErrBadObservation)
			}
		}
	}
	return p, nil
}

// VectorName returns "VECTOR|" + hex SHA-1 of numpy's str(v) (PROCESSOR.md 6.2).
func VectorName(v Vector) string {
	sum := sha1.Sum([]byte(NumpyStr(v))) //nolint:gosec // see import
	return VectorPrefix + hex.EncodeToString(sum[:])
}

// Numpy's default print options.
const (
	npPrecision = 8
	npLineWidth = 75
	npThreshold = 1000
	npEdgeItems = 3
)

// NumpyStr returns str(numpy.array(v)) with numpy's default print options
// (numpy >= 1.14, legacy printing off): int arrays right-aligned, float arrays
// in positional or scientific mode with the widths of numpy's FloatingFormat,
// lines wrapped at 75 columns, and arrays of more than 1000 elements
// summarised by their first and last 3.
func NumpyStr(v Vector) string {
	n := v.Len()
	if n == 0 {
		return "[]"
	}
	idx := make([]int, 0, min(n, 2*npEdgeItems))
	summary := n > npThreshold
	if summary {
		for i := 0; i < npEdgeItems; i++ {
			idx = append(idx, i)
		}
		for i := n - npEdgeItems; i < n; i++ {
			idx = append(idx, i)
		}
	} else {
		for i := 0; i < n; i++ {
			idx = append(idx, i)
		}
	}
	var words []string
	if v.Float {
		vals := make([]float64, len(idx))
		for k, i := range idx {
			vals[k] = v.Floats[i]
		}
		words = formatFloats(vals)
	} else {
		words = formatInts(v.Ints, idx)
	}
	if summary {
		words = slices.Insert(words, npEdgeItems, "...")
	}
	return assembleLine(words)
}

// assembleLine is numpy's _formatArray for one axis: words separated by one
// space, wrapped before a word that would pass column 74.
func assembleLine(words []string) string {
	const hanging = " "
	elemWidth := npLineWidth - 1 // minus len("]")
	var s strings.Builder
	line := hanging
	for k, w := range words {
		if len(line)+len(w) > elemWidth && len(line) > len(hanging) {
			s.WriteString(strings.TrimRight(line, " "))
			s.WriteByte('\n')
			line = hanging
		}
		line += w
		if k < len(words)-1 {
			line += " "
		}
	}
	s.WriteString(line)
	return "[" + s.String()[len(hanging):] + "]"
}

func formatInts(vals []int64, idx []int) []string {
	words := make([]string, len(idx))
	width := 0
	for k, i := range idx {
		words[k] = strconv.FormatInt(vals[i], 10)
		width = max(width, len(words[k]))
	}
	for k, w := range words {
		words[k] = strings.Repeat(" ", width-len(w)) + w
	}
	return words
}

// formatFloats is numpy's FloatingFormat in 'maxprec' mode with precision 8.
func formatFloats(vals []float64) []string {
	expMode := false
	var maxNZ, minNZ float64
	seen := false
	for _, x := range vals {
		if x == 0 || math.IsNaN(x) || math.IsInf(x, 0) {
			continue
		}
		a := math.Abs(x)
		if !seen {
			maxNZ, minNZ, seen = a, a, true
		}
		maxNZ, minNZ = max(maxNZ, a), min(minNZ, a)
	}
	if seen && (maxNZ >= 1e8 || minNZ < 1e-4 || maxNZ/minNZ > 1000) {
		expMode = true
	}
	words := make([]string, len(vals))
	padLeft, padRight, expSize, prec := 0, 0, 0, 0
	finite := false
	for _, x := range vals {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			continue
		}
		finite = true
		if expMode {
			mant, exp, _ := strings.Cut(sciShortest(x), "e")
			ip, fp, _ := strings.Cut(mant, ".")
			expSize = max(expSize, len(exp)-1)
			prec = max(prec, len(fp))
			padLeft = max(padLeft, len(ip))
		} else {
			ip, fp, _ := strings.Cut(posShortest(x), ".")
			padLeft = max(padLeft, len(ip))
			padRight = max(padRight, len(fp))
		}
	}
	if expMode && finite {
		padRight = expSize + 2 + prec
	}
	// Non-finite values may widen the integer part.
	hasNonFinite, negInf := false, false
	for _, x := range vals {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			hasNonFinite = true
			negInf = negInf || math.IsInf(x, -1)
		}
	}
	if hasNonFinite {
		infLen := 3
		if negInf {
			infLen++
		}
		offset := padRight + 1
		padLeft = max(padLeft, 3-offset, infLen-offset)
	}
	for k, x := range vals {
		var w string
		switch {
		case math.IsNaN(x) || math.IsInf(x, 0):
			ret := "nan"
			if math.IsInf(x, 1) {
				ret = "inf"
			} else if math.IsInf(x, -1) {
				ret = "-inf"
			}
			w = strings.Repeat(" ", max(0, padLeft+padRight+1-len(ret))) + ret
		case expMode:
			w = sciPadded(x, prec, padLeft, expSize)
		default:
			ip, fp, _ := strings.Cut(posShortest(x), ".")
			w = strings.Repeat(" ", padLeft-len(ip)) + ip + "." + fp + strings.Repeat(" ", padRight-len(fp))
		}
		words[k] = w
	}
	return words
}

// posShortest is dragon4_positional(x, precision=8, unique=True, trim='.'):
// the shortest round-trip digits, cut to 8 fractional digits (correctly
// rounded) when longer, trailing zeros removed, the point always kept.
func posShortest(x float64) string {
	s := strconv.FormatFloat(x, 'f', -1, 64)
	if _, fp, ok := strings.Cut(s, "."); ok && len(fp) > npPrecision {
		s = strings.TrimRight(strconv.FormatFloat(x, 'f', npPrecision, 64), "0")
	}
	if !strings.Contains(s, ".") {
		s += "."
	}
	return s
}

// sciShortest is dragon4_scientific(x, precision=8, unique=True, trim='.'):
// like posShortest for the mantissa, exponent with at least two digits.
func sciShortest(x float64) string {
	s := strconv.FormatFloat(x, 'e', -1, 64)
	mant, exp, _ := strings.Cut(s, "e")
	if _, fp, ok := strings.Cut(mant, "."); ok && len(fp) > npPrecision {
		mant, exp, _ = strings.Cut(strconv.FormatFloat(x, 'e', npPrecision, 64), "e")
		mant = strings.TrimRight(mant, "0")
	}
	if !strings.Contains(mant, ".") {
		mant += "."
	}
	return mant + "e" + exp
}

// sciPadded formats x in scientific mode with prec fractional mantissa digits
// (zero padded), the integer part right-aligned to padLeft and the exponent
// zero-padded to expDigits digits.
func sciPadded(x float64, prec, padLeft, expDigits int) string {
	mant, exp, _ := strings.Cut(sciShortest(x), "e")
	ip, fp, _ := strings.Cut(mant, ".")
	fp += strings.Repeat("0", prec-len(fp))
	sign, digits := exp[:1], exp[1:]
	if len(digits) < expDigits {
		digits = strings.Repeat("0", expDigits-len(digits)) + digits
	}
	return strings.Repeat(" ", max(0, padLeft-len(ip))) + ip + "." + fp + "e" + sign + digits
}

// poolEntry is one stored vector in the nearest-vector pool.
type poolEntry struct {
	name string
	v    Vector
	seq  uint64
}

// vectorPool is the CVC search pool: every stored vector once (D5), in the
// order it was stored, so that ties go to the earlier entry.
type vectorPool struct {
	entries []poolEntry
	byName  map[string]int
}

func (pl *vectorPool) has(name string) bool {
	_, ok := pl.byName[name]
	return ok
}

// reserve makes room for n more entries.
func (pl *vectorPool) reserve(n int) {
	if n == 0 {
		return
	}
	if pl.byName == nil {
		pl.byName = make(map[string]int, n)
	}
	pl.entries = slices.Grow(pl.entries, n)
}

func (pl *vectorPool) add(e poolEntry) {
	if pl.byName == nil {
		pl.byName = make(map[string]int)
	}
	pl.byName[e.name] = len(pl.entries)
	pl.entries = append(pl.entries, e)
}

// checkDims reports a percept that numpy could not subtract from some pool
// entry (lengths differ and neither is 1).
func (pl *vectorPool) checkDims(p Vector) error {
	for _, e := range pl.entries {
		if n, m := p.Len(), e.v.Len(); n != m && n != 1 && m != 1 {
			return fmt.Errorf("%w: vector of length %d does not match stored vector %s of length %d",
				ErrBadObservation, n, e.name, m)
		}
	}
	return nil
}

// distance is numpy.linalg.norm(p - v), with numpy's broadcasting of a
// length-1 operand and its int64 arithmetic when both are integer arrays.
func distance(p, v Vector) float64 {
	n := max(p.Len(), v.Len())
	if p.Len() == 0 || v.Len() == 0 { // (0,) broadcasts with (1,) to (0,)
		n = 0
	}
	at := func(x Vector, i int) int {
		if x.Len() == 1 {
			return 0
		}
		return i
	}
	var ss float64
	for i := 0; i < n; i++ {
		var d float64
		if !p.Float && !v.Float {
			d = float64(p.Ints[at(p, i)] - v.Ints[at(v, i)])
		} else {
			d = p.f64(at(p, i)) - v.f64(at(v, i))
		}
		ss += float64(d * d)
	}
	return math.Sqrt(ss)
}

// nearest returns the names of the (up to) 3 pool entries nearest to p,
// ties going to the earlier entry.
func (pl *vectorPool) nearest(p Vector) []string {
	type hit struct {
		d float64
		i int
	}
	var best []hit
	for i, e := range pl.entries {
		d := distance(p, e.v)
		k := len(best)
		for k > 0 && d < best[k-1].d {
			k--
		}
		if k < 3 {
			best = slices.Insert(best, k, hit{d, i})
			if len(best) > 3 {
				best = best[:3]
			}
		}
	}
	names := make([]string, len(best))
	for k, h := range best {
		names[k] = pl.entries[h.i].name
	}
	return names
}

// vectorSymbols returns the symbols of percept p: the names of its nearest
// stored vectors plus its own name, without duplicates, sorted (6.4).
func (pl *vectorPool) vectorSymbols(p Vector, own string) []string {
	syms := pl.nearest(p)
	if !slices.Contains(syms, own) {
		syms = append(syms, own)
	}
	slices.Sort(syms)
	return slices.Compact(syms)
}
