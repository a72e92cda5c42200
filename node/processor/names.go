package processor

// This file names models: the SHA-1 of Python's repr of their events
// (PROCESSOR.md 5.2, D4), and that repr.

import (
	"crypto/sha1" //nolint:gosec // KATO names models by SHA-1; not used for security
	"encoding/hex"
	"unicode"
)

// ModelPrefix is the prefix the API shows before a model's hash.
const ModelPrefix = "MODEL|"

// ModelName returns the bare model name of a sequence of events: the
// lowercase hex SHA-1 of the UTF-8 of Python's repr of the list of lists of
// strings (PROCESSOR.md 5.2, D4). Emotives never enter the name.
func ModelName(events [][]string) string {
	sum := modelHash(events)
	return hex.EncodeToString(sum[:])
}

func modelHash(events [][]string) [sha1.Size]byte {
	// Most names' repr fits: no allocation.
	var buf [256]byte
	return sha1.Sum(appendPyEvents(buf[:0], events)) //nolint:gosec // see import
}

// PyRepr returns Python's repr of the string s. s may hold surrogate code
// points in WTF-8 form; a byte that belongs to no code point is shown as the
// lone surrogate U+DC80+byte (Python's surrogateescape), so every Go string
// has a name.
func PyRepr(s string) string { return string(appendPyRepr(nil, s)) }

// appendPyEvents appends repr(events): "[[" ... "], [" ... "]]".
func appendPyEvents(dst []byte, events [][]string) []byte {
	dst = append(dst, '[')
	for i, ev := range events {
		if i > 0 {
			dst = append(dst, ',', ' ')
		}
		dst = append(dst, '[')
		for j, s := range ev {
			if j > 0 {
				dst = append(dst, ',', ' ')
			}
			dst = appendPyRepr(dst, s)
		}
		dst = append(dst, ']')
	}
	return append(dst, ']')
}

// appendPyRepr appends Python's repr(str). The quote is ' unless the string
// holds ' and no ", in which case it is "; only the chosen quote is escaped.
func appendPyRepr(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	hasSingle, hasDouble := false, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\'':
			hasSingle = true
		case '"':
			hasDouble = true
		}
	}
	quote := byte('\'')
	if hasSingle && !hasDouble {
		quote = '"'
	}
	dst = append(dst, quote)
	for i := 0; i < len(s); {
		r, size, ok := decodeWTF8(s, i)
		if !ok {
			r = 0xDC00 + rune(s[i])
		}
		switch {
		case r == rune(quote) || r == '\\':
			dst = append(dst, '\\', byte(r))
		case r == '\t':
			dst = append(dst, '\\', 't')
		case r == '\n':
			dst = append(dst, '\\', 'n')
		case r == '\r':
			dst = append(dst, '\\', 'r')
		case r < ' ' || r == 0x7f:
			dst = append(dst, '\\', 'x', hex[r>>4], hex[r&0xf])
		case r < 0x7f:
			dst = append(dst, byte(r))
		case pyPrintable(r):
			dst = appendWTF8(dst, r)
		case r <= 0xff:
			dst = append(dst, '\\', 'x', hex[r>>4], hex[r&0xf])
		case r <= 0xffff:
			dst = append(dst, '\\', 'u', hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		default:
			dst = append(dst, '\\', 'U', '0', '0', hex[r>>20&0xf], hex[r>>16&0xf],
				hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf])
		}
		i += size
	}
	return append(dst, quote)
}

// pyPrintable is Python's str.isprintable for one non-ASCII code point:
// false for the categories Cc, Cf, Cs, Co, Cn, Zl, Zp and Zs, that is, true
// exactly for letters, marks, numbers, punctuation and symbols. Go's Unicode
// tables (15.0) may know a few code points that an older Python treats as
// unassigned.
func pyPrintable(r rune) bool {
	return unicode.In(r, unicode.L, unicode.M, unicode.N, unicode.P, unicode.S)
}
