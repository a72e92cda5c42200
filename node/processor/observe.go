package processor

// This file is an observation: decoding and checking an observe request, and
// the percept it becomes.

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
)

// Observation is one observe request (PROCESSOR.md 3.1).
type Observation struct {
	// Strings are the symbols, in input order.
	Strings []string
	// Vectors are numeric lists of equal length, as given.
	Vectors [][]Number
	// Emotives are name → number, in input order, names unique.
	Emotives []EmotiveValue
	// UniqueID is the request's unique_id ("" when none was given). The
	// processor only echoes it; generating one is the HTTP layer's job.
	UniqueID string
	// Path is a JSON list echoed in percept data (nil: none).
	Path json.RawMessage
	// Metadata is a JSON object echoed in percept data (nil: none).
	Metadata json.RawMessage

	checked bool // by DecodeObservation or check: valid, echo fields canonical
}

// DecodeObservation decodes an observe body: the observation object itself,
// or {"data": {...}} when the top level has none of strings, vectors and
// emotives (8.2). Integers and floats stay apart (json.Number would too, but
// this decoder also keeps key order and lone surrogates as Python does).
// Errors wrap ErrBadJSON (not JSON at all) or ErrBadObservation (missing
// keys, wrong types, non-finite numbers, vectors of different lengths).
//
// Decoding is linear in the body and builds only what the observation
// keeps: a member of the wrong shape is rejected at its first wrong token,
// and members the observation ignores are only checked (see jsondec.go). A
// key given twice takes its last value, as in a Python dict, but each
// occurrence must have the right shape. The result is checked; Observe does
// not check it again.
func DecodeObservation(body []byte) (Observation, error) {
	p := newDecoder(body)
	hasFields := false
	err := p.checkSyntax(func(key string) {
		switch key {
		case "strings", "vectors", "emotives":
			hasFields = true
		}
	})
	if err != nil {
		return Observation{}, err
	}
	if k := p.kindAt(); k != jObj {
		return Observation{}, shapeErr(ErrBadObservation, "body", "an object", k)
	}
	var d obsDecoder
	if hasFields {
		err = p.members(func(key string) error { return d.field(p, key) })
	} else {
		err = p.members(func(key string) error {
			if key != "data" {
				return p.skip(1)
			}
			if k := p.kindAt(); k != jObj {
				return shapeErr(ErrBadObservation, "data", "an object", k)
			}
			d = obsDecoder{}
			return p.members(func(key string) error { return d.field(p, key) })
		})
	}
	if err != nil {
		return Observation{}, err
	}
	for i, key := range []string{"strings", "vectors", "emotives"} {
		if !d.seen[i] {
			return Observation{}, fmt.Errorf("%w: missing required key %q", ErrBadObservation, key)
		}
	}
	d.obs.checked = true
	return d.obs, nil
}

// obsDecoder decodes the members of an observation object.
type obsDecoder struct {
	obs  Observation
	seen [3]bool // strings, vectors, emotives
}

func (d *obsDecoder) field(p *jparser, key string) error {
	var err error
	switch key {
	case "strings":
		d.seen[0] = true
		d.obs.Strings, err = decodeStrings(p)
	case "vectors":
		d.seen[1] = true
		d.obs.Vectors, err = decodeVectors(p)
	case "emotives":
		d.seen[2] = true
		d.obs.Emotives, err = decodeEmotives(p)
	case "unique_id":
		d.obs.UniqueID = ""
		switch k := p.kindAt(); k {
		case jNull:
			return p.skip(1)
		case jStr:
			id, _ := p.str()
			if id == "" {
				return fmt.Errorf("%w: unique_id must be a non-empty string", ErrBadObservation)
			}
			d.obs.UniqueID = strings.Clone(id)
		default:
			return shapeErr(ErrBadObservation, "unique_id", "a non-empty string", k)
		}
	case "path":
		d.obs.Path, err = decodeEcho(p, "path", jArr)
	case "metadata":
		d.obs.Metadata, err = decodeEcho(p, "metadata", jObj)
	default:
		return p.skip(1)
	}
	return err
}

// decodeStrings decodes a list of strings. Each string is copied out of the
// body, so that symbols kept in memory do not hold the whole body.
func decodeStrings(p *jparser) ([]string, error) {
	if k := p.kindAt(); k != jArr {
		return nil, shapeErr(ErrBadObservation, "strings", "a list", k)
	}
	n, k, ok := p.countKind(jStr)
	if !ok {
		return nil, shapeErr(ErrBadObservation, fmt.Sprintf("strings[%d]", n), "a string", k)
	}
	out := make([]string, 0, n)
	err := p.elems(func() error {
		s, _ := p.str()
		out = append(out, strings.Clone(s))
		return nil
	})
	return out, err
}

func vectorElement() string { return "vector element" }

// decodeVectors decodes a list of equally long lists of finite numbers.
func decodeVectors(p *jparser) ([][]Number, error) {
	if k := p.kindAt(); k != jArr {
		return nil, shapeErr(ErrBadObservation, "vectors", "a list", k)
	}
	n, k, ok := p.countKind(jArr)
	if !ok {
		return nil, shapeErr(ErrBadObservation, "vector", "a list of numbers", k)
	}
	out := make([][]Number, 0, n)
	err := p.elems(func() error {
		n, k, ok := p.countKind(jNum)
		if !ok {
			return shapeErr(ErrBadObservation, vectorElement(), "a number", k)
		}
		if len(out) > 0 && n != len(out[0]) {
			return fmt.Errorf("%w: vectors of different lengths (%d and %d)", ErrBadObservation, len(out[0]), n)
		}
		vec := make([]Number, 0, n)
		err := p.elems(func() error {
			x, err := decodeNumber(p, vectorElement)
			vec = append(vec, x)
			return err
		})
		out = append(out, vec)
		return err
	})
	return out, err
}

// decodeNumber decodes a finite number; what names it in errors.
func decodeNumber(p *jparser, what func() string) (Number, error) {
	if k := p.kindAt(); k != jNum {
		return Number{}, shapeErr(ErrBadObservation, what(), "a number", k)
	}
	v, _ := p.number()
	if n, err := v.number(""); err == nil {
		return n, nil
	}
	return v.number(what())
}

// decodeEmotives decodes an object of numbers; a repeated name keeps its
// first position and takes its last value.
func decodeEmotives(p *jparser) ([]EmotiveValue, error) {
	if k := p.kindAt(); k != jObj {
		return nil, shapeErr(ErrBadObservation, "emotives", "an object", k)
	}
	n, k, ok := p.countKind(jNum)
	if !ok {
		return nil, shapeErr(ErrBadObservation, fmt.Sprintf("emotive %d", n), "a number", k)
	}
	out := make([]EmotiveValue, 0, n)
	var idx keyIndex
	err := p.members(func(key string) error {
		x, err := decodeNumber(p, func() string { return "emotives " + PyRepr(key) })
		if err != nil {
			return err
		}
		if i, seen := idx.lookup(key, len(out)); seen {
			out[i].Value = x
		} else {
			out = append(out, EmotiveValue{strings.Clone(key), x})
		}
		return nil
	})
	return out, err
}

// decodeEcho decodes a member echoed back in percept data (null: none) into
// the JSON Python would write.
func decodeEcho(p *jparser, what string, kind jkind) ([]byte, error) {
	switch k := p.kindAt(); k {
	case jNull:
		return nil, p.skip(1)
	case kind:
		b, err := p.echo(nil)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadObservation, what, err)
		}
		return b, nil
	default:
		return nil, shapeErr(ErrBadObservation, what, "a "+kind.String(), k)
	}
}

// validate checks what the type system does not: text that is not UTF-8,
// repeated emotive names, non-finite numbers, vectors of different lengths,
// and echo fields that are not a list / an object.
func (o Observation) validate() error {
	for i, s := range o.Strings {
		if !validWTF8(s) {
			return fmt.Errorf("%w: strings[%d] is not UTF-8", ErrBadObservation, i)
		}
	}
	for i, vec := range o.Vectors {
		if len(vec) != len(o.Vectors[0]) {
			return fmt.Errorf("%w: vectors of different lengths (%d and %d)", ErrBadObservation, len(o.Vectors[0]), len(vec))
		}
		for _, n := range vec {
			if n.isFloat && (math.IsNaN(n.f) || math.IsInf(n.f, 0)) {
				return fmt.Errorf("%w: vectors[%d] holds a non-finite number", ErrBadObservation, i)
			}
		}
	}
	seen := make(map[string]bool, len(o.Emotives))
	for _, e := range o.Emotives {
		if !validWTF8(e.Name) {
			return fmt.Errorf("%w: an emotive name is not UTF-8", ErrBadObservation)
		}
		if seen[e.Name] {
			return fmt.Errorf("%w: emotive %s given twice", ErrBadObservation, PyRepr(e.Name))
		}
		seen[e.Name] = true
		if e.Value.isFloat && (math.IsNaN(e.Value.f) || math.IsInf(e.Value.f, 0)) {
			return fmt.Errorf("%w: emotive %s is not finite", ErrBadObservation, PyRepr(e.Name))
		}
	}
	return nil
}

// check returns o ready to observe: validated, with Path and Metadata in
// the form Python writes. A decoded observation is returned as it is.
func (o Observation) check() (Observation, error) {
	if o.checked {
		return o, nil
	}
	if err := o.validate(); err != nil {
		return o, err
	}
	var err error
	if o.Path, err = canonicalEcho(o.Path, jArr, "path"); err != nil {
		return o, err
	}
	if o.Metadata, err = canonicalEcho(o.Metadata, jObj, "metadata"); err != nil {
		return o, err
	}
	o.checked = true
	return o, nil
}

// canonicalEcho checks that raw is nil or JSON of the given kind that Python
// could write back, and returns it as Python writes it.
func canonicalEcho(raw json.RawMessage, kind jkind, what string) (json.RawMessage, error) {
	if raw == nil {
		return nil, nil
	}
	p := newDecoder(raw)
	if err := p.checkSyntax(nil); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadObservation, what, err)
	}
	return decodeEcho(p, what, kind)
}

// Percept is the percept data of the last observe call (3.5). The zero
// Percept (after clear-wm, clear-all, or before any observe) is {}.
type Percept struct {
	Strings  []string
	Vectors  [][]Number
	Emotives []EmotiveValue
	Path     json.RawMessage // a JSON list, the processor's step appended
	Metadata json.RawMessage // a JSON object
}

// MarshalJSON writes {"strings","vectors","emotives","path","metadata"}, or
// {} for the zero Percept.
func (p Percept) MarshalJSON() ([]byte, error) {
	if p.Path == nil {
		return []byte("{}"), nil
	}
	dst := []byte(`{"strings":`)
	dst = appendStrings(dst, p.Strings)
	dst = append(dst, `,"vectors":[`...)
	for i, vec := range p.Vectors {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, '[')
		for j, n := range vec {
			if j > 0 {
				dst = append(dst, ',')
			}
			dst = n.appendJSON(dst)
		}
		dst = append(dst, ']')
	}
	dst = append(dst, `],"emotives":{`...)
	for i, e := range p.Emotives {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, e.Name)
		dst = append(dst, ':')
		dst = e.Value.appendJSON(dst)
	}
	dst = append(dst, `},"path":`...)
	dst = append(dst, p.Path...)
	dst = append(dst, `,"metadata":`...)
	dst = append(dst, p.Metadata...)
	return append(dst, '}'), nil
}

// newPercept builds the percept echo; the path gets "<name>-<id>-process".
func newPercept(o Observation, name, id string) Percept {
	// o was checked: Path and Metadata are canonical.
	path := []byte{'['}
	if len(o.Path) > 2 {
		path = append(path, o.Path[1:len(o.Path)-1]...)
		path = append(path, ',')
	}
	path = appendJSONString(path, name+"-"+id+"-process")
	path = append(path, ']')
	meta := json.RawMessage("{}")
	if o.Metadata != nil {
		meta = slices.Clone(o.Metadata)
	}
	vecs := make([][]Number, len(o.Vectors))
	for i, vec := range o.Vectors {
		vecs[i] = slices.Clone(vec)
	}
	return Percept{
		Strings:  append([]string{}, o.Strings...),
		Vectors:  vecs,
		Emotives: slices.Clone(o.Emotives),
		Path:     path,
		Metadata: meta,
	}
}
