package processor

// This file is the knowledge base's side of a load (Builder): adding
// stored records in order, making room up front, and giving back spare
// capacity at the end.

import (
	"crypto/sha1" //nolint:gosec // model names, see names.go
	"fmt"
	"slices"
)

// loadPattern adds a stored record to a knowledge base being loaded, in
// learn sequence order. sum, if not nil, is the hash of r.Events, from
// which r.Name was made.
func (k *kb) loadPattern(r PatternRecord, sum *[sha1.Size]byte) error {
	if _, dup := k.find(r.Name); dup {
		return fmt.Errorf("%w: pattern %s stored twice", ErrCorrupt, r.Name)
	}
	name, err := r.checkWith(sum)
	if err != nil {
		return err
	}
	// r.Name is the hex of name, which find did not find.
	return k.applyPattern(r, name, 0, false)
}

// reserve makes room for more patterns and vectors, so that a load of a
// known size does not grow the per-pattern arrays and the indexes as it
// goes, and has the arrays that grow with the load double (roomFor) until
// compact.
func (k *kb) reserve(patterns, vectors int) {
	k.pats, k.plen, k.pfreq, k.loc = slices.Grow(k.pats, patterns), slices.Grow(k.plen, patterns),
		slices.Grow(k.pfreq, patterns), slices.Grow(k.loc, patterns)
	k.byName.reserve(len(k.pats) + patterns)
	k.vectors.reserve(vectors)
	k.syms.bulk = true
}

// roomFor returns s with room for n more elements: when it has none, its
// capacity doubles. append grows a large slice by a quarter, so a load
// that grows an array from empty would copy it over and over; compact
// gives back what doubling leaves spare.
func roomFor[T any](s []T, n int) []T {
	if cap(s)-len(s) < n {
		s = slices.Grow(s, max(n, len(s)))
	}
	return s
}

// loadVector adds a stored vector record to a knowledge base being loaded,
// in store order.
func (k *kb) loadVector(r VectorRecord) error {
	if k.vectors.has(r.Name) {
		return fmt.Errorf("%w: vector %s stored twice", ErrCorrupt, r.Name)
	}
	return k.replayVector(r)
}

// compact gives back the spare capacity that appending left in a freshly
// built knowledge base (a fifth of the posting lists, up to a quarter of
// the other arrays; up to half after a reserve), and ends the doubling.
func (k *kb) compact() {
	k.syms.bulk = false
	for id, list := range k.post {
		k.post[id] = clip(list)
	}
	k.arena, k.pats, k.plen, k.pfreq, k.loc = clip(k.arena), clip(k.pats), clip(k.plen), clip(k.pfreq), clip(k.loc)
	k.syms.names, k.syms.freq, k.syms.mmf, k.post = clip(k.syms.names), clip(k.syms.freq), clip(k.syms.mmf), clip(k.post)
}

// clip returns s, or a copy without its spare capacity if that is more
// than a sixteenth of its length.
func clip[T any](s []T) []T {
	if cap(s)-len(s) > len(s)/16 {
		return slices.Clone(s)
	}
	return s
}
