package kb

// This file is the binary record codec of snapshot chunks and log entries:
// a body is a sequence of records, each a kind byte and its fields. Decoding
// checks every length against the bytes left, so a bad body costs at most
// its own size and never panics.

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/kato-coord/kato/node/processor"
)

// Record kinds.
const (
	recPattern = 1 // seq, frequency, events, emotive windows (the name is the hash of the events)
	recVector  = 2 // name, seq, float flag, elements
	recClear   = 3 // clear-all: nothing before it in the log survives
)

const vectorPrefix = "VECTOR|"

// appendChange appends the record of one change.
func appendChange(dst []byte, ch processor.Change) ([]byte, error) {
	switch ch.Kind {
	case processor.PutPattern:
		r := ch.Pattern
		dst = append(dst, recPattern)
		dst = binary.AppendUvarint(dst, r.Seq)
		if r.Frequency < 1 {
			return nil, fmt.Errorf("kb: pattern %s has frequency %d", r.Name, r.Frequency)
		}
		dst = binary.AppendUvarint(dst, uint64(r.Frequency))
		dst = binary.AppendUvarint(dst, uint64(len(r.Events)))
		for _, ev := range r.Events {
			dst = binary.AppendUvarint(dst, uint64(len(ev)))
			for _, s := range ev {
				dst = appendString(dst, s)
			}
		}
		dst = binary.AppendUvarint(dst, uint64(len(r.Emotives)))
		for _, e := range r.Emotives {
			dst = binary.AppendUvarint(dst, uint64(len(e)))
			for _, x := range e {
				if math.IsNaN(x.Value) || math.IsInf(x.Value, 0) {
					return nil, fmt.Errorf("kb: pattern %s has a non-finite emotive", r.Name)
				}
				dst = appendString(dst, x.Name)
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(x.Value))
			}
		}
	case processor.PutVector:
		r := ch.Vector
		dst = append(dst, recVector)
		dst = appendString(dst, strings.TrimPrefix(r.Name, vectorPrefix))
		dst = binary.AppendUvarint(dst, r.Seq)
		if r.Vector.Float {
			dst = append(dst, 1)
			dst = binary.AppendUvarint(dst, uint64(len(r.Vector.Floats)))
			for _, f := range r.Vector.Floats {
				if math.IsNaN(f) || math.IsInf(f, 0) {
					return nil, fmt.Errorf("kb: vector %s has a non-finite element", r.Name)
				}
				dst = binary.LittleEndian.AppendUint64(dst, math.Float64bits(f))
			}
		} else {
			dst = append(dst, 0)
			dst = binary.AppendUvarint(dst, uint64(len(r.Vector.Ints)))
			for _, i := range r.Vector.Ints {
				dst = binary.AppendVarint(dst, i)
			}
		}
	case processor.ClearAll:
		dst = append(dst, recClear)
	default:
		return nil, fmt.Errorf("kb: unknown change kind %v", ch.Kind)
	}
	return dst, nil
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

// decoder reads records from a body.
type reader struct {
	b   []byte
	err error
	// text, when set, is the whole body as a string: str then returns
	// substrings of it instead of a string per call (a body's records are
	// handed on, and their symbols copied by whoever keeps them).
	text string
	// strs and evs are slabs the records' events are cut from, a few
	// allocations per body instead of one per event.
	strs []string
	evs  [][]string
}

// slabSize is how many elements a slab of reader holds.
const slabSize = 1024

// strings returns n empty strings to fill, cut from a slab.
func (r *reader) strings(n int) []string {
	if n > len(r.strs) {
		r.strs = make([]string, max(n, slabSize))
	}
	s := r.strs[:n:n]
	r.strs = r.strs[n:]
	return s
}

// events returns n empty events to fill, cut from a slab.
func (r *reader) events(n int) [][]string {
	if n > len(r.evs) {
		r.evs = make([][]string, max(n, slabSize))
	}
	s := r.evs[:n:n]
	r.evs = r.evs[n:]
	return s
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: bad record body (%s)", ErrCorrupt, what)
	}
	r.b = nil
}

func (r *reader) uvarint(what string) uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail(what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a number of elements, each taking at least min bytes.
func (r *reader) count(what string, min int) int {
	v := r.uvarint(what)
	if v > uint64(len(r.b)/min) {
		r.fail(what)
		return 0
	}
	return int(v)
}

func (r *reader) str(what string) string {
	n := r.count(what, 1)
	if r.err != nil {
		return ""
	}
	var s string
	if r.text != "" {
		off := len(r.text) - len(r.b)
		s = r.text[off : off+n]
	} else {
		s = string(r.b[:n])
	}
	r.b = r.b[n:]
	return s
}

func (r *reader) u64(what string) uint64 {
	if len(r.b) < 8 {
		r.fail(what)
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// decodeChanges calls fn with every record of body, in order. A pattern's
// name is computed from its events when named is set, and left empty
// otherwise (processor.Builder computes it).
func decodeChanges(body []byte, named bool, fn func(processor.Change) error) error {
	r := &reader{b: body, text: string(body)}
	for len(r.b) > 0 {
		kind := r.b[0]
		r.b = r.b[1:]
		var ch processor.Change
		switch kind {
		case recPattern:
			p := processor.PatternRecord{Seq: r.uvarint("seq")}
			freq := r.uvarint("frequency")
			if freq > math.MaxInt64 {
				r.fail("frequency")
			}
			p.Frequency = int64(freq)
			p.Events = r.events(r.count("events", 1))
			for i := range p.Events {
				ev := r.strings(r.count("symbols", 1))
				for j := range ev {
					ev[j] = r.str("symbol")
				}
				p.Events[i] = ev
				p.Length += len(ev)
			}
			p.Emotives = make([]processor.Emotives, r.count("emotives", 1))
			for i := range p.Emotives {
				e := make(processor.Emotives, r.count("emotive", 9))
				for j := range e {
					e[j] = processor.Emotive{Name: r.str("emotive name"), Value: math.Float64frombits(r.u64("emotive"))}
				}
				p.Emotives[i] = e
			}
			if named && r.err == nil {
				p.Name = processor.ModelName(p.Events)
			}
			ch = processor.Change{Kind: processor.PutPattern, Pattern: p}
		case recVector:
			v := processor.VectorRecord{Name: vectorPrefix + r.str("vector name"), Seq: r.uvarint("vector seq")}
			if len(r.b) == 0 {
				r.fail("vector")
				break
			}
			isFloat := r.b[0]
			r.b = r.b[1:]
			switch isFloat {
			case 1:
				fs := make([]float64, r.count("vector", 8))
				for i := range fs {
					fs[i] = math.Float64frombits(r.u64("vector element"))
				}
				v.Vector = processor.FloatVector(fs...)
			case 0:
				is := make([]int64, r.count("vector", 1))
				for i := range is {
					x, n := binary.Varint(r.b)
					if n <= 0 {
						r.fail("vector element")
						break
					}
					is[i] = x
					r.b = r.b[n:]
				}
				v.Vector = processor.IntVector(is...)
			default:
				r.fail("vector type")
			}
			ch = processor.Change{Kind: processor.PutVector, Vector: v}
		case recClear:
			ch = processor.Change{Kind: processor.ClearAll}
		default:
			r.fail(fmt.Sprintf("record kind %d", kind))
		}
		if r.err != nil {
			return r.err
		}
		if err := fn(ch); err != nil {
			return err
		}
	}
	return r.err
}
