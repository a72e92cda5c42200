package processor

// This file gives a frozen view of the knowledge base (Freeze), for a
// checkpoint written while the processor goes on learning.

import "slices"

// Frozen is the knowledge base as it was when Freeze was called, whatever
// the processor learns, replays or clears afterwards. It is safe for
// concurrent use. It keeps the knowledge base's arrays of that time alive
// (and, after a clear, the whole old knowledge base): drop it once written.
type Frozen struct {
	k *kb // the arrays of the time, cut to their length; only read
}

// Freeze returns a frozen view of the knowledge base. It costs a copy of
// the per-pattern frequencies and emotive window references (about 12 bytes
// a pattern, and 24 a window) and nothing per symbol or vector: everything
// else is shared with the processor, which only appends to it (see kb).
// It waits for a learn, replay or clear in progress.
func (p *Processor) Freeze() *Frozen {
	p.kbMu.RLock()
	defer p.kbMu.RUnlock()
	k := p.kb
	return &Frozen{k: &kb{
		syms:    symtab{names: slices.Clip(k.syms.names)},
		pats:    slices.Clip(k.pats),
		plen:    slices.Clip(k.plen),
		pfreq:   slices.Clone(k.pfreq),
		loc:     slices.Clip(k.loc),
		arena:   slices.Clip(k.arena),
		emoOf:   slices.Clone(k.emoOf),
		emoWins: slices.Clone(k.emoWins),
		vectors: vectorPool{entries: slices.Clip(k.vectors.entries)},
	}}
}

// Counts returns the number of patterns and vectors.
func (f *Frozen) Counts() (patterns, vectors int) {
	return len(f.k.pats), len(f.k.vectors.entries)
}

// Patterns yields the stored form of every pattern in ascending Seq (an
// iter.Seq), as Processor.Patterns returned them at Freeze.
func (f *Frozen) Patterns(yield func(PatternRecord) bool) {
	for pi := range f.k.pats {
		if !yield(f.k.record(int32(pi))) {
			return
		}
	}
}

// Vectors yields every stored vector in ascending Seq (an iter.Seq), as
// Processor.Vectors returned them at Freeze.
func (f *Frozen) Vectors(yield func(VectorRecord) bool) {
	for _, e := range f.k.vectors.entries {
		if !yield(VectorRecord{Name: e.name, Vector: e.v, Seq: e.seq}) {
			return
		}
	}
}
