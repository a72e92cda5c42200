package processor

// This file builds a processor from stored records handed over one at a
// time (Builder), so a large model is loaded without a list of its records
// next to the index built from them; Load is a Builder fed from lists.

import (
	"crypto/sha1" //nolint:gosec // model names, see names.go
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"
)

// Builder builds a processor from stored pattern and vector records, added
// one at a time in any order, as Load does from lists. Patterns added in
// ascending (Seq, Name) order, and vectors likewise (a snapshot's order),
// go straight into the knowledge base under construction: nothing else is
// kept. Once a record
// comes out of that order (a store that lists records by name), the records
// of its kind added so far are taken back out as records, and every later
// one is kept, to be sorted and added at Build (what Load costs).
//
// The first record that does not check out gives an error wrapping
// ErrCorrupt, from AddPattern or AddVector as soon as it is known (the
// caller can stop reading) and from Build. Build gives the error Load would
// give for the same records. A Builder is not safe for concurrent use and
// builds one processor.
type Builder struct {
	k    *kb
	pats recordStream[PatternRecord]
	vecs recordStream[VectorRecord]
	done bool
}

// recordStream tracks the order of the records of one kind.
type recordStream[R any] struct {
	lastSeq  uint64 // key of the last record taken in order
	lastName string
	any      bool
	failed   *R    // the record that failed, when in order
	err      error // its error
	sorting  bool  // out of order: records are kept in pending
	pending  []R
}

// inOrder reports whether a record with this key comes after the last one
// taken in order, or has the same key (Load's sort may put it either side;
// it fails as a duplicate either way).
func (s *recordStream[R]) inOrder(seq uint64, name string) bool {
	return !s.sorting && (!s.any || cmpSeq(seq, s.lastSeq, name, s.lastName) >= 0)
}

func (s *recordStream[R]) took(seq uint64, name string) {
	s.lastSeq, s.lastName, s.any = seq, name, true
}

// errBuilt is the error of a Builder used after Build.
var errBuilt = errors.New("processor: Builder used after Build")

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder { return &Builder{k: newKB()} }

// Grow makes room for about patterns more patterns and vectors more
// vectors (a snapshot's counts), so that the build does not grow its
// arrays and indexes as the records arrive. Counts that are wrong cost
// memory or time, nothing else.
func (b *Builder) Grow(patterns, vectors int) {
	if b.done {
		return
	}
	b.k.reserve(max(patterns, 0), max(vectors, 0))
}

// AddPattern adds a stored pattern record. Its Name may be empty: it is then
// computed from Events (ModelName); a Name that is given must be the hash
// of Events. A record taken in order is not kept: the knowledge base copies
// its new symbols and emotive names, so they may point into a larger
// buffer.
func (b *Builder) AddPattern(r PatternRecord) error {
	if b.done {
		return errBuilt
	}
	var sum *[sha1.Size]byte
	if r.Name == "" {
		h := modelHash(r.Events)
		r.Name, sum = hex.EncodeToString(h[:]), &h
	}
	s := &b.pats
	switch {
	case s.inOrder(r.Seq, r.Name) && s.failed == nil:
	case s.inOrder(r.Seq, r.Name):
		return s.err // Load would stop at the failed record, before this one
	case s.sorting:
		s.pending = append(s.pending, r)
		return nil
	default:
		b.sortPatterns()
		s.pending = append(s.pending, r)
		return nil
	}
	s.took(r.Seq, r.Name)
	if err := b.k.loadPattern(r, sum); err != nil {
		failed := r // a copy: r itself stays on the stack
		s.failed, s.err = &failed, err
		return err
	}
	return nil
}

// sortPatterns switches patterns to sorting at Build: the patterns built so
// far (and the one that failed) become pending records again.
func (b *Builder) sortPatterns() {
	old := b.k
	s := &b.pats
	s.sorting = true
	s.pending = make([]PatternRecord, 0, len(old.pats)+1)
	for pi := range old.pats {
		s.pending = append(s.pending, old.record(int32(pi)))
	}
	if s.failed != nil {
		s.pending = append(s.pending, *s.failed)
		s.failed, s.err = nil, nil
	}
	b.k = newKB()
	b.k.vectors, b.k.nextVec = old.vectors, old.nextVec
}

// AddVector adds a stored vector record.
func (b *Builder) AddVector(r VectorRecord) error {
	if b.done {
		return errBuilt
	}
	s := &b.vecs
	switch {
	case s.inOrder(r.Seq, r.Name) && s.failed == nil:
	case s.inOrder(r.Seq, r.Name):
		return s.err
	case s.sorting:
		s.pending = append(s.pending, r)
		return nil
	default:
		b.sortVectors()
		s.pending = append(s.pending, r)
		return nil
	}
	s.took(r.Seq, r.Name)
	if err := b.k.loadVector(r); err != nil {
		failed := r // a copy: r itself stays on the stack
		s.failed, s.err = &failed, err
		return err
	}
	return nil
}

// sortVectors is sortPatterns for vectors.
func (b *Builder) sortVectors() {
	s := &b.vecs
	s.sorting = true
	s.pending = make([]VectorRecord, 0, len(b.k.vectors.entries)+1)
	for _, e := range b.k.vectors.entries {
		s.pending = append(s.pending, VectorRecord{Name: e.name, Vector: e.v, Seq: e.seq})
	}
	if s.failed != nil {
		s.pending = append(s.pending, *s.failed)
		s.failed, s.err = nil, nil
	}
	b.k.vectors, b.k.nextVec = vectorPool{}, 0
}

// Build returns the processor with the given genes, instance id and name
// and the knowledge base of the records added, as Load would: candidates
// are enumerated by learn sequence number and symbol statistics derived
// from the patterns (D14). Errors: those of Load, patterns' before
// vectors'. The Builder cannot be used afterwards.
func (b *Builder) Build(cfg Config, id, name string) (*Processor, error) {
	if b.done {
		return nil, errBuilt
	}
	b.done = true
	k := b.k
	b.k = nil
	if err := checkInstance(cfg, id, name); err != nil {
		return nil, err
	}
	if err := finish(&b.pats, patternKey, func(r PatternRecord) error { return k.loadPattern(r, nil) }); err != nil {
		return nil, err
	}
	if err := finish(&b.vecs, vectorKey, k.loadVector); err != nil {
		return nil, err
	}
	k.compact()
	p := &Processor{id: id, name: name, work: work{cfg: cfg}, kb: k, pr: newPredictor()}
	p.publish()
	return p, nil
}

// finish adds the pending records of a stream in (Seq, Name) order and
// returns the stream's error.
func finish[R any](s *recordStream[R], key func(R) (uint64, string), load func(R) error) error {
	if !s.sorting {
		return s.err
	}
	sortRecords(s.pending, key)
	for _, r := range s.pending {
		if err := load(r); err != nil {
			return err
		}
	}
	s.pending = nil
	return nil
}

// sortRecords sorts records by sequence number, then name.
func sortRecords[R any](rs []R, key func(R) (uint64, string)) {
	slices.SortFunc(rs, func(a, b R) int {
		as, an := key(a)
		bs, bn := key(b)
		return cmpSeq(as, bs, an, bn)
	})
}

func patternKey(r PatternRecord) (uint64, string) { return r.Seq, r.Name }

func vectorKey(r VectorRecord) (uint64, string) { return r.Seq, r.Name }

// checkInstance validates what Load and Build check before any record.
func checkInstance(cfg Config, id, name string) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if id == "" || !validWTF8(id) {
		return fmt.Errorf("%w: the instance id must be non-empty UTF-8", ErrInvalid)
	}
	if name == "" || utf8.RuneCountInString(name) > 128 || !validWTF8(name) {
		return fmt.Errorf("%w: the instance name must be 1 to 128 characters", ErrInvalid)
	}
	return nil
}
