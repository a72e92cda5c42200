package processor

// This file is a small JSON parser that reads values as Python's json.loads
// does.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// A small JSON parser that reads values the way Python's json.loads does:
// objects keep their key order (a repeated key keeps its first position and
// takes the last value, like a dict), numbers keep their literal so integers
// and floats stay apart, and strings may hold lone surrogates (\ud800), kept
// in WTF-8 form. encoding/json can do none of these.

type jkind uint8

const (
	jNull jkind = iota
	jBool
	jNum
	jStr
	jArr
	jObj
)

func (k jkind) String() string {
	return [...]string{"null", "boolean", "number", "string", "list", "object"}[k]
}

// jvalue is a parsed JSON value.
type jvalue struct {
	kind jkind
	b    bool
	s    string // string value, or the literal of a number
	arr  []jvalue
	obj  []jmember
}

type jmember struct {
	key string
	val jvalue
}

// maxJSONDepth bounds nesting (Python's json gives up near its recursion limit).
const maxJSONDepth = 1000

// parseJSON parses one JSON document. A leading UTF-8 byte-order mark is
// skipped, as Python does for bytes input. Errors wrap ErrBadJSON.
func parseJSON(data []byte) (jvalue, error) {
	p := jparser{s: string(data)}
	p.s = strings.TrimPrefix(p.s, "\uFEFF")
	p.ws()
	v, err := p.value(0)
	if err != nil {
		return jvalue{}, err
	}
	p.ws()
	if p.i != len(p.s) {
		return jvalue{}, p.fail("extra data")
	}
	return v, nil
}

type jparser struct {
	s string
	i int
	// lastKey is the offset of the last object key read by members.
	lastKey int
}

func (p *jparser) fail(what string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrBadJSON, what, p.i)
}

func (p *jparser) ws() {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jparser) value(depth int) (jvalue, error) {
	if depth > maxJSONDepth {
		return jvalue{}, p.fail("nesting too deep")
	}
	if p.i >= len(p.s) {
		return jvalue{}, p.fail("unexpected end")
	}
	switch c := p.s[p.i]; {
	case c == '{':
		return p.object(depth)
	case c == '[':
		return p.array(depth)
	case c == '"':
		s, err := p.str()
		return jvalue{kind: jStr, s: s}, err
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	case strings.HasPrefix(p.s[p.i:], "true"):
		p.i += 4
		return jvalue{kind: jBool, b: true}, nil
	case strings.HasPrefix(p.s[p.i:], "false"):
		p.i += 5
		return jvalue{kind: jBool}, nil
	case strings.HasPrefix(p.s[p.i:], "null"):
		p.i += 4
		return jvalue{kind: jNull}, nil
	}
	return jvalue{}, p.fail("unexpected character")
}

func (p *jparser) object(depth int) (jvalue, error) {
	v := jvalue{kind: jObj}
	var idx keyIndex
	err := p.members(func(key string) error {
		val, err := p.value(depth + 1)
		if err != nil {
			return err
		}
		// A repeated key keeps its first position and takes the last
		// value, like a Python dict.
		if i, seen := idx.lookup(key, len(v.obj)); seen {
			v.obj[i].val = val
		} else {
			v.obj = append(v.obj, jmember{key, val})
		}
		return nil
	})
	if err != nil {
		return jvalue{}, err
	}
	return v, nil
}

// next reads what follows a list element or object member: ',' (more
// follow) or the closing bracket (done).
func (p *jparser) next(closing byte) (done bool, err error) {
	p.ws()
	if p.i >= len(p.s) {
		return false, p.fail("unexpected end")
	}
	switch p.s[p.i] {
	case ',':
		p.i++
		return false, nil
	case closing:
		p.i++
		return true, nil
	}
	return false, p.fail("expected ',' or '" + string(closing) + "'")
}

func (p *jparser) array(depth int) (jvalue, error) {
	p.i++ // '['
	v := jvalue{kind: jArr, arr: []jvalue{}}
	p.ws()
	if p.i < len(p.s) && p.s[p.i] == ']' {
		p.i++
		return v, nil
	}
	for {
		p.ws()
		el, err := p.value(depth + 1)
		if err != nil {
			return jvalue{}, err
		}
		v.arr = append(v.arr, el)
		if done, err := p.next(']'); done || err != nil {
			return v, err
		}
	}
}

func (p *jparser) number() (jvalue, error) {
	start := p.i
	if p.s[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.s) && p.s[p.i] == '0':
		p.i++
	case p.i < len(p.s) && p.s[p.i] >= '1' && p.s[p.i] <= '9':
		p.digits()
	default:
		return jvalue{}, p.fail("bad number")
	}
	if p.i < len(p.s) && p.s[p.i] == '.' {
		p.i++
		if p.digits() == 0 {
			return jvalue{}, p.fail("bad number")
		}
	}
	if p.i < len(p.s) && (p.s[p.i] == 'e' || p.s[p.i] == 'E') {
		p.i++
		if p.i < len(p.s) && (p.s[p.i] == '+' || p.s[p.i] == '-') {
			p.i++
		}
		if p.digits() == 0 {
			return jvalue{}, p.fail("bad number")
		}
	}
	return jvalue{kind: jNum, s: p.s[start:p.i]}, nil
}

func (p *jparser) digits() int {
	n := 0
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
		n++
	}
	return n
}

// str parses a string literal at p.i (which holds '"').
func (p *jparser) str() (string, error) {
	p.i++
	start := p.i
	// Fast path: no escapes.
	for p.i < len(p.s) {
		c := p.s[p.i]
		if c == '"' {
			s := p.s[start:p.i]
			if !validWTF8(s) {
				return "", p.fail("invalid UTF-8")
			}
			p.i++
			return s, nil
		}
		if c == '\\' || c < 0x20 {
			break
		}
		p.i++
	}
	var b []byte
	b = append(b, p.s[start:p.i]...)
	for p.i < len(p.s) {
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			if !validWTF8(string(b)) {
				return "", p.fail("invalid UTF-8")
			}
			return string(b), nil
		case c < 0x20:
			return "", p.fail("control character in string")
		case c != '\\':
			b = append(b, c)
			p.i++
			continue
		}
		p.i++ // backslash
		if p.i >= len(p.s) {
			break
		}
		e := p.s[p.i]
		p.i++
		switch e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := p.hex4()
			if !ok {
				return "", p.fail("bad \\u escape")
			}
			if r >= 0xD800 && r <= 0xDBFF && strings.HasPrefix(p.s[p.i:], `\u`) {
				save := p.i
				p.i += 2
				lo, ok := p.hex4()
				if ok && lo >= 0xDC00 && lo <= 0xDFFF {
					r = 0x10000 + (r-0xD800)<<10 + (lo - 0xDC00)
				} else {
					p.i = save
				}
			}
			b = appendWTF8(b, r)
		default:
			return "", p.fail("bad escape")
		}
	}
	return "", p.fail("unterminated string")
}

func (p *jparser) hex4() (rune, bool) {
	if p.i+4 > len(p.s) {
		return 0, false
	}
	var r rune
	for _, c := range []byte(p.s[p.i : p.i+4]) {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}

// member returns the value of key and whether it is present.
func (v jvalue) member(key string) (jvalue, bool) {
	for _, m := range v.obj {
		if m.key == key {
			return m.val, true
		}
	}
	return jvalue{}, false
}

// number converts a number value to a Number; what names the value in errors.
// Integers must fit int64 and floats must be finite.
func (v jvalue) number(what string) (Number, error) {
	if v.kind != jNum {
		return Number{}, fmt.Errorf("%w: %s must be a number, not %s", ErrBadObservation, what, v.kind)
	}
	if !strings.ContainsAny(v.s, ".eE") {
		i, err := strconv.ParseInt(v.s, 10, 64)
		if err != nil {
			return Number{}, fmt.Errorf("%w: %s: integer %s out of range", ErrBadObservation, what, v.s)
		}
		return Int(i), nil
	}
	f, err := strconv.ParseFloat(v.s, 64)
	if err != nil || math.IsInf(f, 0) {
		return Number{}, fmt.Errorf("%w: %s: number %s out of range", ErrBadObservation, what, v.s)
	}
	return Float(f), nil
}

// appendPy appends v as Python's json.dumps would write what json.loads
// read: integers canonical, floats in repr form. It fails on a float literal
// that overflows (Python would write the invalid token Infinity).
func (v jvalue) appendPy(dst []byte) ([]byte, error) {
	var err error
	switch v.kind {
	case jNull:
		return append(dst, "null"...), nil
	case jBool:
		if v.b {
			return append(dst, "true"...), nil
		}
		return append(dst, "false"...), nil
	case jStr:
		return appendJSONString(dst, v.s), nil
	case jNum:
		if !strings.ContainsAny(v.s, ".eE") {
			s := strings.TrimPrefix(v.s, "-")
			if s != "0" && v.s[0] == '-' {
				dst = append(dst, '-')
			}
			return append(dst, s...), nil
		}
		f, perr := strconv.ParseFloat(v.s, 64)
		if perr != nil || math.IsInf(f, 0) {
			return dst, fmt.Errorf("%w: number %s out of range", ErrBadObservation, v.s)
		}
		return appendPyFloat(dst, f), nil
	case jArr:
		dst = append(dst, '[')
		for i, el := range v.arr {
			if i > 0 {
				dst = append(dst, ',')
			}
			if dst, err = el.appendPy(dst); err != nil {
				return dst, err
			}
		}
		return append(dst, ']'), nil
	default:
		dst = append(dst, '{')
		for i, m := range v.obj {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, m.key)
			dst = append(dst, ':')
			if dst, err = m.val.appendPy(dst); err != nil {
				return dst, err
			}
		}
		return append(dst, '}'), nil
	}
}
