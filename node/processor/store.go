package processor

// This file is the stored form of a model (PatternRecord, VectorRecord), the
// Changes a call returns to be stored, the Store interface and MemStore.

import (
	"context"
	"crypto/sha1" //nolint:gosec // model names, see names.go
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
)

// PatternRecord is the stored form of a model: everything needed to rebuild
// it, keyed by Name. Records handed out by the processor are read-only.
type PatternRecord struct {
	// Name is the bare hash (no "MODEL|").
	Name string
	// Events is the sequence of events as learned (sorted as observed).
	Events [][]string
	// Length is the number of symbols.
	Length int
	// Frequency is how often the model was learned.
	Frequency int64
	// Emotives is the window of the last `persistence` emotive averages;
	// possibly empty, never an object (D8).
	Emotives []Emotives
	// Seq is the learn sequence number: candidates are enumerated in
	// ascending Seq (first-learned order, D3). Re-learns keep it.
	Seq uint64
}

// check validates a record read back from a store and returns its hash.
func (r PatternRecord) check() ([sha1.Size]byte, error) { return r.checkWith(nil) }

// checkWith is check; sum, if not nil, is the hash of r.Events, from which
// r.Name was made.
func (r PatternRecord) checkWith(sum *[sha1.Size]byte) ([sha1.Size]byte, error) {
	var none [sha1.Size]byte
	n := 0
	for _, ev := range r.Events {
		if len(ev) == 0 {
			return none, fmt.Errorf("%w: pattern %s has an empty event", ErrCorrupt, r.Name)
		}
		for _, s := range ev {
			if !validWTF8(s) {
				return none, fmt.Errorf("%w: pattern %s has a symbol that is not UTF-8", ErrCorrupt, r.Name)
			}
		}
		n += len(ev)
	}
	switch {
	case n < 2:
		return none, fmt.Errorf("%w: pattern %s has %d symbols", ErrCorrupt, r.Name, n)
	case n != r.Length:
		return none, fmt.Errorf("%w: pattern %s has length %d, events hold %d", ErrCorrupt, r.Name, r.Length, n)
	case r.Frequency < 1:
		return none, fmt.Errorf("%w: pattern %s has frequency %d", ErrCorrupt, r.Name, r.Frequency)
	}
	if sum != nil {
		return *sum, nil
	}
	h := modelHash(r.Events)
	var hx [2 * sha1.Size]byte
	if hex.Encode(hx[:], h[:]); string(hx[:]) != r.Name {
		return none, fmt.Errorf("%w: pattern %s does not hash to its name", ErrCorrupt, r.Name)
	}
	return h, nil
}

// MarshalJSON writes {"name","sequence","length","frequency","emotives","seq"}
// with Python-style floats.
func (r PatternRecord) MarshalJSON() ([]byte, error) {
	dst := []byte(`{"name":`)
	dst = appendJSONString(dst, r.Name)
	dst = append(dst, `,"sequence":`...)
	dst = appendEvents(dst, r.Events)
	dst = append(dst, `,"length":`...)
	dst = strconv.AppendInt(dst, int64(r.Length), 10)
	dst = append(dst, `,"frequency":`...)
	dst = strconv.AppendInt(dst, r.Frequency, 10)
	dst = append(dst, `,"emotives":`...)
	dst, err := appendEmotiveList(dst, r.Emotives)
	if err != nil {
		return nil, err
	}
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	return append(dst, '}'), nil
}

func appendEmotiveList(dst []byte, list []Emotives) ([]byte, error) {
	return appendList(dst, list, func(dst []byte, e Emotives) ([]byte, error) { return e.appendJSON(dst) })
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *PatternRecord) UnmarshalJSON(b []byte) error {
	v, err := parseJSON(b)
	if err != nil {
		return err
	}
	if v.kind != jObj {
		return fmt.Errorf("%w: pattern record is not an object", ErrCorrupt)
	}
	var out PatternRecord
	name, _ := v.member("name")
	seq, _ := v.member("sequence")
	emo, _ := v.member("emotives")
	if name.kind != jStr || seq.kind != jArr || (emo.kind != jArr && emo.kind != jNull) {
		return fmt.Errorf("%w: pattern record has wrong field types", ErrCorrupt)
	}
	out.Name = name.s
	out.Emotives = []Emotives{}
	for _, ev := range seq.arr {
		ss, err := stringsOf(ev, "event")
		if err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		out.Events = append(out.Events, ss)
	}
	for _, e := range emo.arr {
		var d Emotives
		if err := d.fromJSON(e); err != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		out.Emotives = append(out.Emotives, d)
	}
	length, err1 := intMember(v, "length")
	freq, err2 := intMember(v, "frequency")
	sq, err3 := intMember(v, "seq")
	if err1 != nil || err2 != nil || err3 != nil || length < 0 || sq < 0 {
		return fmt.Errorf("%w: pattern record has bad counts", ErrCorrupt)
	}
	out.Length, out.Frequency, out.Seq = int(length), freq, uint64(sq)
	*r = out
	return nil
}

func intMember(v jvalue, key string) (int64, error) {
	m, _ := v.member(key)
	n, err := m.number(key)
	if err != nil {
		return 0, err
	}
	i, ok := n.Int64()
	if !ok {
		return 0, fmt.Errorf("%w: %s is not an integer", ErrCorrupt, key)
	}
	return i, nil
}

// VectorRecord is a stored vector, keyed by Name ("VECTOR|<sha1>").
type VectorRecord struct {
	Name   string
	Vector Vector
	// Seq orders the nearest-vector pool (ties go to the earlier vector).
	Seq uint64
}

// MarshalJSON writes {"name","vector","seq"}; float vectors always show a
// point or exponent on every element so that they read back as floats.
func (r VectorRecord) MarshalJSON() ([]byte, error) {
	dst := []byte(`{"name":`)
	dst = appendJSONString(dst, r.Name)
	dst = append(dst, `,"vector":`...)
	vb, err := r.Vector.MarshalJSON()
	if err != nil {
		return nil, err
	}
	dst = append(dst, vb...)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, r.Seq, 10)
	return append(dst, '}'), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *VectorRecord) UnmarshalJSON(b []byte) error {
	v, err := parseJSON(b)
	if err != nil {
		return err
	}
	name, _ := v.member("name")
	vec, _ := v.member("vector")
	if v.kind != jObj || name.kind != jStr || vec.kind != jArr {
		return fmt.Errorf("%w: bad vector record", ErrCorrupt)
	}
	ns, err := numbersOf(vec, "vector")
	if err != nil {
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	}
	sq, err := intMember(v, "seq")
	if err != nil || sq < 0 {
		return fmt.Errorf("%w: bad vector seq", ErrCorrupt)
	}
	*r = VectorRecord{Name: name.s, Vector: vectorOf(ns), Seq: uint64(sq)}
	return nil
}

// MarshalJSON writes the elements as integers or Python-style floats.
func (v Vector) MarshalJSON() ([]byte, error) {
	dst := []byte{'['}
	for i := 0; i < v.Len(); i++ {
		if i > 0 {
			dst = append(dst, ',')
		}
		if v.Float {
			if math.IsNaN(v.Floats[i]) || math.IsInf(v.Floats[i], 0) {
				return nil, errNonFinite
			}
			dst = appendPyFloat(dst, v.Floats[i])
		} else {
			dst = strconv.AppendInt(dst, v.Ints[i], 10)
		}
	}
	return append(dst, ']'), nil
}

// UnmarshalJSON reads a list of numbers as numpy.array would.
func (v *Vector) UnmarshalJSON(b []byte) error {
	jv, err := parseJSON(b)
	if err != nil {
		return err
	}
	ns, err := numbersOf(jv, "vector")
	if err != nil {
		return err
	}
	*v = vectorOf(ns)
	return nil
}

// ChangeKind says what a Change does.
type ChangeKind uint8

const (
	// PutPattern stores Change.Pattern under its name, replacing any older
	// record of that name.
	PutPattern ChangeKind = iota + 1
	// PutVector stores Change.Vector under its name.
	PutVector
	// ClearAll deletes every pattern and vector (clear-all-memory).
	ClearAll
)

func (k ChangeKind) String() string {
	switch k {
	case PutPattern:
		return "put-pattern"
	case PutVector:
		return "put-vector"
	case ClearAll:
		return "clear-all"
	}
	return "ChangeKind(" + strconv.Itoa(int(k)) + ")"
}

// Change is one absolute change to the stored model.
type Change struct {
	Kind    ChangeKind
	Pattern PatternRecord // PutPattern
	Vector  VectorRecord  // PutVector
}

// Changes lists changes in the order they happened. Applying them in order to
// a store that held the model before the call leaves it holding the model
// after the call (D14).
type Changes []Change

// Coalesce returns changes with the same effect and at most one write per
// key: nothing before the last ClearAll survives except the ClearAll itself,
// and of several puts to one key only the last is kept, at its position.
func (c Changes) Coalesce() Changes {
	start := 0
	for i, ch := range c {
		if ch.Kind == ClearAll {
			start = i
		}
	}
	type key struct {
		kind ChangeKind
		name string
	}
	last := map[key]int{}
	for i := start; i < len(c); i++ {
		switch c[i].Kind {
		case PutPattern:
			last[key{PutPattern, c[i].Pattern.Name}] = i
		case PutVector:
			last[key{PutVector, c[i].Vector.Name}] = i
		}
	}
	var out Changes
	for i := start; i < len(c); i++ {
		switch ch := c[i]; ch.Kind {
		case PutPattern:
			if last[key{PutPattern, ch.Pattern.Name}] == i {
				out = append(out, ch)
			}
		case PutVector:
			if last[key{PutVector, ch.Vector.Name}] == i {
				out = append(out, ch)
			}
		default:
			out = append(out, ch)
		}
	}
	return out
}

// Store keeps a model durably. The processor never calls it: the caller
// applies the Changes a call returned and answers its client afterwards. The
// etcd implementation lives in node/kb; MemStore is the in-memory one.
type Store interface {
	// Apply makes changes durable, in order, atomically if it can.
	Apply(ctx context.Context, changes Changes) error
	// Patterns returns every stored pattern.
	Patterns(ctx context.Context) ([]PatternRecord, error)
	// Vectors returns every stored vector.
	Vectors(ctx context.Context) ([]VectorRecord, error)
}

// MemStore is an in-memory Store, safe for concurrent use.
type MemStore struct {
	mu       sync.Mutex
	patterns map[string]PatternRecord
	vectors  map[string]VectorRecord
}

// NewMemStore returns an empty MemStore.
func NewMemStore() *MemStore {
	return &MemStore{patterns: map[string]PatternRecord{}, vectors: map[string]VectorRecord{}}
}

// Apply implements Store.
func (s *MemStore) Apply(ctx context.Context, changes Changes) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ch := range changes {
		switch ch.Kind {
		case PutPattern:
			s.patterns[ch.Pattern.Name] = ch.Pattern
		case PutVector:
			s.vectors[ch.Vector.Name] = ch.Vector
		case ClearAll:
			clear(s.patterns)
			clear(s.vectors)
		default:
			return fmt.Errorf("processor: unknown change kind %v", ch.Kind)
		}
	}
	return nil
}

// Patterns implements Store; records come in learn sequence order.
func (s *MemStore) Patterns(ctx context.Context) ([]PatternRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedBySeq(s.patterns, func(r PatternRecord) (uint64, string) { return r.Seq, r.Name }), nil
}

// Vectors implements Store; records come in store order.
func (s *MemStore) Vectors(ctx context.Context) ([]VectorRecord, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return sortedBySeq(s.vectors, func(r VectorRecord) (uint64, string) { return r.Seq, r.Name }), nil
}

// sortedBySeq returns the records of m ordered by sequence number, then name.
func sortedBySeq[T any](m map[string]T, key func(T) (uint64, string)) []T {
	out := make([]T, 0, len(m))
	for _, r := range m {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b T) int {
		as, an := key(a)
		bs, bn := key(b)
		return cmpSeq(as, bs, an, bn)
	})
	return out
}

// Stored records are read with the tree parser (parseJSON): they come from
// the model's own store, not from clients.

func stringsOf(v jvalue, what string) ([]string, error) {
	if v.kind != jArr {
		return nil, fmt.Errorf("%w: %s must be a list, not %s", ErrBadObservation, what, v.kind)
	}
	out := make([]string, len(v.arr))
	for i, el := range v.arr {
		if el.kind != jStr {
			return nil, fmt.Errorf("%w: %s[%d] must be a string, not %s", ErrBadObservation, what, i, el.kind)
		}
		out[i] = el.s
	}
	return out, nil
}

func numbersOf(v jvalue, what string) ([]Number, error) {
	if v.kind != jArr {
		return nil, fmt.Errorf("%w: %s must be a list of numbers, not %s", ErrBadObservation, what, v.kind)
	}
	out := make([]Number, len(v.arr))
	for i, el := range v.arr {
		n, err := el.number(what + " element")
		if err != nil {
			return nil, err
		}
		out[i] = n
	}
	return out, nil
}

func emotivesOf(v jvalue, what string) ([]EmotiveValue, error) {
	if v.kind != jObj {
		return nil, fmt.Errorf("%w: %s must be an object, not %s", ErrBadObservation, what, v.kind)
	}
	out := make([]EmotiveValue, len(v.obj))
	for i, m := range v.obj {
		n, err := m.val.number(what + " " + PyRepr(m.key))
		if err != nil {
			return nil, err
		}
		out[i] = EmotiveValue{m.key, n}
	}
	return out, nil
}
