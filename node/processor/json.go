package processor

// This file writes JSON the way Python's json.dumps does (D13): floats in
// repr form (1.0, 0.5714285714285714, 1e-05), integers as integers, and text
// unescaped except where JSON requires it.

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf8"
)

var errNonFinite = errors.New("processor: non-finite float has no JSON form")

// PyFloat is a float64 that marshals like Python's repr(float): the shortest
// digits that round-trip, with ".0" on integral values and exponent form when
// the decimal exponent is below -4 or at least 16.
type PyFloat float64

// MarshalJSON implements json.Marshaler. NaN and ±Inf are an error: Python
// would write the invalid tokens NaN/Infinity.
func (f PyFloat) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(f)) || math.IsInf(float64(f), 0) {
		return nil, errNonFinite
	}
	return appendPyFloat(nil, float64(f)), nil
}

// String returns the Python repr of f.
func (f PyFloat) String() string { return string(appendPyFloat(nil, float64(f))) }

// appendPyFloat appends Python's repr(f). Non-finite values are written as
// Python writes them (nan, inf, -inf); callers that need JSON reject them first.
func appendPyFloat(dst []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(dst, "nan"...)
	case math.IsInf(f, 1):
		return append(dst, "inf"...)
	case math.IsInf(f, -1):
		return append(dst, "-inf"...)
	case f == 0:
		if math.Signbit(f) {
			return append(dst, "-0.0"...)
		}
		return append(dst, "0.0"...)
	}
	var buf [32]byte
	s := strconv.AppendFloat(buf[:0], f, 'e', -1, 64) // [-]d[.ddd]e±dd
	if s[0] == '-' {
		dst = append(dst, '-')
		s = s[1:]
	}
	e := 0
	for e < len(s) && s[e] != 'e' {
		e++
	}
	mant, exp := s[:e], s[e+1:]
	digits := make([]byte, 0, len(mant))
	for _, c := range mant {
		if c != '.' {
			digits = append(digits, c)
		}
	}
	x, _ := strconv.Atoi(string(exp))
	decpt := x + 1 // position of the decimal point relative to the digits
	if decpt <= -4 || decpt > 16 {
		dst = append(dst, digits[0])
		if len(digits) > 1 {
			dst = append(dst, '.')
			dst = append(dst, digits[1:]...)
		}
		dst = append(dst, 'e')
		if x < 0 {
			dst = append(dst, '-')
			x = -x
		} else {
			dst = append(dst, '+')
		}
		if x < 10 {
			dst = append(dst, '0')
		}
		return strconv.AppendInt(dst, int64(x), 10)
	}
	switch {
	case decpt <= 0:
		dst = append(dst, '0', '.')
		for i := 0; i < -decpt; i++ {
			dst = append(dst, '0')
		}
		dst = append(dst, digits...)
	case decpt >= len(digits):
		dst = append(dst, digits...)
		for i := len(digits); i < decpt; i++ {
			dst = append(dst, '0')
		}
		dst = append(dst, '.', '0')
	default:
		dst = append(dst, digits[:decpt]...)
		dst = append(dst, '.')
		dst = append(dst, digits[decpt:]...)
	}
	return dst
}

// round12 is Python's round(x, 12): the exact binary value rounded to 12
// decimals, ties to even (PROCESSOR.md 7.7).
func round12(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return x
	}
	// Fast path: s = x·1e12 is within ulp(s)/2 of the exact product, so
	// unless the product is that close to a half-integer, the nearest integer
	// n is known, and n/1e12 (both exact, one correctly rounded division) is
	// the double nearest to the 12-decimal result.
	if math.Abs(x) < 4096 {
		s := x * 1e12
		fl := math.Floor(s)
		frac := s - fl // exact: s and fl share their high bits
		if margin := math.Nextafter(math.Abs(s), math.Inf(1)) - math.Abs(s); math.Abs(frac-0.5) > margin {
			n := fl
			if frac > 0.5 {
				n++
			}
			if n == 0 {
				return math.Copysign(0, x)
			}
			return n / 1e12
		}
	}
	return round12Slow(x)
}

// round12Slow is round12 through decimal text.
func round12Slow(x float64) float64 {
	var buf [64]byte
	r, err := strconv.ParseFloat(string(strconv.AppendFloat(buf[:0], x, 'f', 12, 64)), 64)
	if err != nil { // cannot happen for a finite float
		return x
	}
	return r
}

// Number is a JSON number that remembers whether it was written as an integer
// (1) or a float (1.0, 1e2), as Python's json module does. Vector names depend
// on the difference (PROCESSOR.md 6.1).
type Number struct {
	f       float64
	i       int64
	isFloat bool
}

// Int returns an integer Number.
func Int(v int64) Number { return Number{i: v, f: float64(v)} }

// Float returns a float Number.
func Float(v float64) Number { return Number{f: v, isFloat: true} }

// IsFloat reports whether n is a float.
func (n Number) IsFloat() bool { return n.isFloat }

// Float64 returns n as a float64 (integers converted with round-half-even).
func (n Number) Float64() float64 { return n.f }

// Int64 returns the integer value and true, or 0 and false for a float.
func (n Number) Int64() (int64, bool) {
	if n.isFloat {
		return 0, false
	}
	return n.i, true
}

// String returns the number as Python would print it.
func (n Number) String() string { return string(n.appendJSON(nil)) }

func (n Number) appendJSON(dst []byte) []byte {
	if n.isFloat {
		return appendPyFloat(dst, n.f)
	}
	return strconv.AppendInt(dst, n.i, 10)
}

// MarshalJSON implements json.Marshaler.
func (n Number) MarshalJSON() ([]byte, error) {
	if n.isFloat && (math.IsNaN(n.f) || math.IsInf(n.f, 0)) {
		return nil, errNonFinite
	}
	return n.appendJSON(nil), nil
}

// UnmarshalJSON implements json.Unmarshaler, keeping the int/float distinction.
func (n *Number) UnmarshalJSON(b []byte) error {
	v, err := parseJSON(b)
	if err != nil {
		return err
	}
	x, err := v.number("number")
	if err != nil {
		return err
	}
	*n = x
	return nil
}

// appendJSONString appends s as a JSON string. Text is written unescaped
// except for '"', '\\' and control characters (Python's escapes). Surrogate
// code points, which this package carries in WTF-8 form, are written as
// \udXXX escapes; bytes that are not UTF-8 at all become \ufffd.
func appendJSONString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"':
				dst = append(dst, '\\', '"')
			case c == '\\':
				dst = append(dst, '\\', '\\')
			case c == '\n':
				dst = append(dst, '\\', 'n')
			case c == '\r':
				dst = append(dst, '\\', 'r')
			case c == '\t':
				dst = append(dst, '\\', 't')
			case c == '\b':
				dst = append(dst, '\\', 'b')
			case c == '\f':
				dst = append(dst, '\\', 'f')
			case c < 0x20:
				dst = append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				dst = append(dst, c)
			}
			i++
			continue
		}
		r, size, ok := decodeWTF8(s, i)
		switch {
		case !ok:
			dst = append(dst, `\ufffd`...)
		case r >= 0xD800 && r <= 0xDFFF:
			dst = append(dst, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		default:
			dst = append(dst, s[i:i+size]...)
		}
		i += size
	}
	return append(dst, '"')
}

// decodeWTF8 decodes the code point at s[i]. Besides valid UTF-8 it accepts
// the 3-byte encodings of surrogates (U+D800..U+DFFF), which Python strings
// may hold. ok is false for a byte that starts no code point (size 1).
func decodeWTF8(s string, i int) (r rune, size int, ok bool) {
	r, size = utf8.DecodeRuneInString(s[i:])
	if r != utf8.RuneError || size > 1 {
		return r, size, true
	}
	if i+2 < len(s) && s[i] == 0xED && s[i+1] >= 0xA0 && s[i+1] <= 0xBF && s[i+2] >= 0x80 && s[i+2] <= 0xBF {
		return 0xD000 | rune(s[i+1]&0x3F)<<6 | rune(s[i+2]&0x3F), 3, true
	}
	return utf8.RuneError, 1, false
}

// appendWTF8 appends the encoding of r, surrogates included.
func appendWTF8(dst []byte, r rune) []byte {
	if r >= 0xD800 && r <= 0xDFFF {
		return append(dst, 0xED, byte(0x80|(r>>6)&0x3F), byte(0x80|r&0x3F))
	}
	return utf8.AppendRune(dst, r)
}

// validWTF8 reports whether every byte of s belongs to a code point.
func validWTF8(s string) bool {
	for i := 0; i < len(s); {
		if s[i] < utf8.RuneSelf {
			i++
			continue
		}
		_, size, ok := decodeWTF8(s, i)
		if !ok {
			return false
		}
		i += size
	}
	return true
}

// appendList appends a JSON list (never null) of xs written by f.
func appendList[T any](dst []byte, xs []T, f func([]byte, T) ([]byte, error)) ([]byte, error) {
	dst = append(dst, '[')
	for i, x := range xs {
		if i > 0 {
			dst = append(dst, ',')
		}
		var err error
		if dst, err = f(dst, x); err != nil {
			return nil, err
		}
	}
	return append(dst, ']'), nil
}

// appendStrings appends a JSON list of strings.
func appendStrings(dst []byte, ss []string) []byte {
	dst, _ = appendList(dst, ss, func(dst []byte, s string) ([]byte, error) { return appendJSONString(dst, s), nil })
	return dst
}

// appendEvents appends a JSON list of events.
func appendEvents(dst []byte, evs [][]string) []byte {
	dst, _ = appendList(dst, evs, func(dst []byte, ev []string) ([]byte, error) { return appendStrings(dst, ev), nil })
	return dst
}

// appendFloatField appends ,"key":value with a Python-style float.
func appendFloatField(dst []byte, key string, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return dst, fmt.Errorf("%w: field %s", errNonFinite, key)
	}
	dst = append(dst, ',', '"')
	dst = append(dst, key...)
	dst = append(dst, '"', ':')
	return appendPyFloat(dst, f), nil
}
