package processor

// This file holds denseIndex, the hash index that finds a pattern by name
// and a symbol by its string without a Go map's copy of every key.

import (
	"hash/maphash"
)

// denseIndex finds the dense index (0..n-1) of a key among keys its owner
// keeps in a slice, by open addressing with linear probing. A slot is 8
// bytes: the low 32 bits of the key's hash and 1 + the index (0 is a free
// slot), so a probe looks at the owner's key only when the hash bits match.
// A key's home slot is its hash modulo the table size (at most 2^32 slots,
// so the bits a slot keeps place it): growing the table moves slots
// without hashing, or even reading, a key again. The table is at most 3/4
// full. The hash is seeded per index, so keys chosen to collide cannot slow
// it down. Keys are never removed: a clear replaces the knowledge base.
type denseIndex struct {
	seed  maphash.Seed // set by the first hash
	slots []uint64
	n     int
}

const slotIndexBits = 1<<32 - 1

func (x *denseIndex) seeded() {
	if x.seed == (maphash.Seed{}) {
		x.seed = maphash.MakeSeed()
	}
}

// hashString returns the hash of a string key.
func (x *denseIndex) hashString(s string) uint64 {
	x.seeded()
	return maphash.String(x.seed, s)
}

// hashBytes returns the hash of a byte key.
func (x *denseIndex) hashBytes(b []byte) uint64 {
	x.seeded()
	return maphash.Bytes(x.seed, b)
}

// find returns the index whose key has hash h and for which eq holds.
func (x *denseIndex) find(h uint64, eq func(int32) bool) (int32, bool) {
	if x.n == 0 {
		return 0, false
	}
	mask := uint64(len(x.slots) - 1)
	tag := h << 32
	for i := h & mask; ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 {
			return 0, false
		}
		if s&^slotIndexBits == tag && eq(int32(s)-1) {
			return int32(s) - 1, true
		}
	}
}

// add adds index i, whose key (of hash h) is not in the index yet.
func (x *denseIndex) add(i int32, h uint64) {
	if 4*(x.n+1) > 3*len(x.slots) {
		x.resize(max(16, 2*len(x.slots)))
	}
	x.put(h<<32 | uint64(uint32(i+1)))
	x.n++
}

// reserve makes room for n keys in all, so that adding up to n grows the
// table no more.
func (x *denseIndex) reserve(n int) {
	size := max(16, len(x.slots))
	for 4*n > 3*size {
		size *= 2
	}
	if size > len(x.slots) {
		x.resize(size)
	}
}

// resize moves the slots to a table of size slots (a power of 2).
func (x *denseIndex) resize(size int) {
	old := x.slots
	x.slots = make([]uint64, size)
	for _, s := range old {
		if s != 0 {
			x.put(s)
		}
	}
}

func (x *denseIndex) put(s uint64) {
	mask := uint64(len(x.slots) - 1)
	j := s >> 32 & mask
	for x.slots[j] != 0 {
		j = (j + 1) & mask
	}
	x.slots[j] = s
}
