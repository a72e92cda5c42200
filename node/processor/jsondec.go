package processor

// This file decodes request bodies in two linear passes (see below).

import (
	"errors"
	"fmt"
	"strings"
)

// Request bodies are decoded in two linear passes over the bytes, before the
// processor's lock is taken: the first only checks that the body is JSON
// (it builds nothing), the second decodes it against the shape its route
// accepts, straight into the result, and stops at the first value of a
// shape no field accepts (an array where a number goes). Nothing is built
// for what the route ignores, so the memory a body costs is a small multiple
// of its size whatever it holds; objects with many keys cost a map lookup
// per key, not a scan.

// smallObject is the member count up to which key lookups scan a slice;
// larger objects get a map.
const smallObject = 8

// keyIndex maps the keys already seen in one object to an int each, in
// constant time per key.
type keyIndex struct {
	keys []string
	vals []int
	m    map[string]int
}

// lookup returns the value of key, or adds key with value v when new.
func (k *keyIndex) lookup(key string, v int) (int, bool) {
	if k.m != nil {
		if old, ok := k.m[key]; ok {
			return old, true
		}
		k.m[key] = v
		return v, false
	}
	for i, s := range k.keys {
		if s == key {
			return k.vals[i], true
		}
	}
	k.keys, k.vals = append(k.keys, key), append(k.vals, v)
	if len(k.keys) > smallObject {
		k.m = make(map[string]int, 2*len(k.keys))
		for i, s := range k.keys {
			k.m[s] = k.vals[i]
		}
		k.keys, k.vals = nil, nil
	}
	return v, false
}

// newDecoder starts a decoder on a body (a leading byte-order mark skipped).
func newDecoder(body []byte) *jparser {
	return &jparser{s: strings.TrimPrefix(string(body), "\uFEFF")}
}

// checkSyntax is the first pass: the body is exactly one JSON value. top,
// when not nil, is called with each key of a top-level object.
func (p *jparser) checkSyntax(top func(key string)) error {
	p.ws()
	var err error
	if top != nil && p.i < len(p.s) && p.s[p.i] == '{' {
		err = p.members(func(key string) error {
			top(key)
			return p.skip(1)
		})
	} else {
		err = p.skip(0)
	}
	if err != nil {
		return err
	}
	p.ws()
	if p.i != len(p.s) {
		return p.fail("extra data")
	}
	p.i = 0
	return nil
}

// kindAt returns the kind of the value at p.i; the syntax was checked.
func (p *jparser) kindAt() jkind {
	p.ws()
	switch c := p.s[p.i]; c {
	case '{':
		return jObj
	case '[':
		return jArr
	case '"':
		return jStr
	case 't', 'f':
		return jBool
	case 'n':
		return jNull
	}
	return jNum
}

// members calls fn for each member of the object at p.i, with p.i at the
// member's value; fn consumes the value.
func (p *jparser) members(fn func(key string) error) error {
	p.i++ // '{'
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return nil
	}
	for {
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != '"' {
			return p.fail("expected a key")
		}
		p.lastKey = p.i
		key, err := p.str()
		if err != nil {
			return err
		}
		p.ws()
		if p.i >= len(p.s) || p.s[p.i] != ':' {
			return p.fail("expected ':'")
		}
		p.i++
		p.ws()
		if err := fn(key); err != nil {
			return err
		}
		if done, err := p.next('}'); done || err != nil {
			return err
		}
	}
}

// elems calls fn for each element of the array at p.i, with p.i at the
// element; fn consumes it.
func (p *jparser) elems(fn func() error) error {
	p.i++ // '['
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return nil
	}
	for {
		p.ws()
		if err := fn(); err != nil {
			return err
		}
		if done, err := p.next(']'); done || err != nil {
			return err
		}
	}
}

// skip checks and passes over one value without keeping it.
func (p *jparser) skip(depth int) error {
	if depth > maxJSONDepth {
		return p.fail("nesting too deep")
	}
	if p.i >= len(p.s) {
		return p.fail("unexpected end")
	}
	switch p.s[p.i] {
	case '{':
		return p.members(func(string) error { return p.skip(depth + 1) })
	case '[':
		return p.elems(func() error { return p.skip(depth + 1) })
	}
	_, err := p.value(depth)
	return err
}

// count returns the number of elements or members of the (checked) array
// or object at p.i, leaving p.i where it was.
func (p *jparser) count() int {
	n, _, _ := p.countKind(anyKind)
	return n
}

// anyKind makes countKind accept every kind.
const anyKind jkind = 255

// countKind is count for an array or object whose values must all be of
// kind want: it stops at the first that is not, and returns its index and
// kind (ok false), so that nothing is built for a list of the wrong shape.
func (p *jparser) countKind(want jkind) (n int, got jkind, ok bool) {
	save := p.i
	defer func() { p.i = save }()
	errWrong := errors.New("wrong kind")
	each := func() error {
		if k := p.kindAt(); want != anyKind && k != want {
			got = k
			return errWrong
		}
		n++
		return p.skip(1)
	}
	var err error
	if p.s[p.i] == '{' {
		err = p.members(func(string) error { return each() })
	} else {
		err = p.elems(each)
	}
	return n, got, err == nil
}

// echo appends the (checked) value at p.i as Python's json.dumps would
// write what json.loads read: numbers canonical, and an object that repeats
// a key keeps the key's first position with its last value. A first pass
// over the value finds the repeated keys, the second writes; each byte is
// written once.
func (p *jparser) echo(dst []byte) ([]byte, error) {
	start := p.i
	var dup echoDups
	if err := dup.scan(p, 0); err != nil {
		return dst, err
	}
	p.i = start
	return p.echoValue(dst, &dup)
}

// echoDups says which objects repeat a key (by the offset of their '{'),
// and for the first occurrence of each repeated key (by the offset of the
// key) where its last value is.
type echoDups struct {
	objects map[int]bool
	last    map[int]int
}

func (d *echoDups) scan(p *jparser, depth int) error {
	switch p.kindAt() {
	case jArr:
		return p.elems(func() error { return d.scan(p, depth+1) })
	case jObj:
		at := p.i
		var firstKey keyIndex // key → offset of its first occurrence
		return p.members(func(key string) error {
			if first, seen := firstKey.lookup(key, p.lastKey); seen {
				if d.last == nil {
					d.objects, d.last = map[int]bool{}, map[int]int{}
				}
				d.objects[at] = true
				d.last[first] = p.i
			}
			return d.scan(p, depth+1)
		})
	}
	return p.skip(depth)
}

func (p *jparser) echoValue(dst []byte, d *echoDups) ([]byte, error) {
	switch p.kindAt() {
	case jArr:
		dst = append(dst, '[')
		n := 0
		err := p.elems(func() error {
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			var err error
			dst, err = p.echoValue(dst, d)
			return err
		})
		return append(dst, ']'), err
	case jObj:
		// Only an object that repeats a key needs its keys indexed again.
		var idx *keyIndex
		if d.objects[p.i] {
			idx = &keyIndex{}
		}
		dst = append(dst, '{')
		n := 0
		err := p.members(func(key string) error {
			keyAt := p.lastKey
			if idx != nil {
				if _, seen := idx.lookup(key, n); seen {
					return p.skip(1) // its value went to the first occurrence
				}
			}
			if n > 0 {
				dst = append(dst, ',')
			}
			n++
			dst = appendJSONString(dst, key)
			dst = append(dst, ':')
			at, ok := d.last[keyAt]
			if !ok {
				var err error
				dst, err = p.echoValue(dst, d)
				return err
			}
			own := p.i
			p.i = at
			var err error
			if dst, err = p.echoValue(dst, d); err != nil {
				return err
			}
			p.i = own
			return p.skip(1)
		})
		return append(dst, '}'), err
	}
	v, err := p.value(0)
	if err != nil {
		return dst, err
	}
	return v.appendPy(dst)
}

// shapeErr is the error for a value of the wrong kind.
func shapeErr(category error, what string, want string, got jkind) error {
	return fmt.Errorf("%w: %s must be %s, not %s", category, what, want, got)
}
