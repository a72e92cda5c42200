package processor

// This file holds denseIndex, the hash index that finds a pattern by name
// and a symbol by its string without a Go map's copy of every key.

import (
	"crypto/sha1" //nolint:gosec // model names, see names.go
	"hash/maphash"
)

// denseIndex finds the dense index (0..n-1) of a key among keys its owner
// keeps in a slice, by open addressing with linear probing. A slot is 8
// bytes: the high 32 bits of the key's hash and 1 + the index (0 is a free
// slot), so a probe looks at the owner's key only when the hash bits match.
// The table is at most 3/4 full. The hash is seeded per index, so keys
// chosen to collide cannot slow it down. Keys are never removed: a clear
// replaces the knowledge base.
type denseIndex struct {
	seed  maphash.Seed // set by the first add
	slots []uint64
	n     int
}

func stringKey(s string) func(maphash.Seed) uint64 {
	return func(seed maphash.Seed) uint64 { return maphash.String(seed, s) }
}

func nameKey(h *[sha1.Size]byte) func(maphash.Seed) uint64 {
	return func(seed maphash.Seed) uint64 { return maphash.Bytes(seed, h[:]) }
}

// find returns the index whose key hashes as key does and for which eq
// holds.
func (x *denseIndex) find(key func(maphash.Seed) uint64, eq func(int32) bool) (int32, bool) {
	if x.n == 0 {
		return 0, false
	}
	h := key(x.seed)
	mask := uint64(len(x.slots) - 1)
	tag := h >> 32 << 32
	for i := h & mask; ; i = (i + 1) & mask {
		s := x.slots[i]
		if s == 0 {
			return 0, false
		}
		if s&^(1<<32-1) == tag && eq(int32(s)-1) {
			return int32(s) - 1, true
		}
	}
}

// add adds index i, whose key is not in the index yet; keyOf hashes the
// key of index i and of every index added before.
func (x *denseIndex) add(i int32, keyOf func(maphash.Seed, int32) uint64) {
	if x.slots == nil {
		x.seed = maphash.MakeSeed()
	}
	if 4*(x.n+1) > 3*len(x.slots) {
		old := x.slots
		x.slots = make([]uint64, max(16, 2*len(old)))
		for _, s := range old {
			if s != 0 {
				x.put(keyOf(x.seed, int32(s)-1), int32(s)-1)
			}
		}
	}
	x.put(keyOf(x.seed, i), i)
	x.n++
}

func (x *denseIndex) put(h uint64, i int32) {
	mask := uint64(len(x.slots) - 1)
	j := h & mask
	for x.slots[j] != 0 {
		j = (j + 1) & mask
	}
	x.slots[j] = h>>32<<32 | uint64(uint32(i+1))
}
