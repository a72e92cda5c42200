// Instance ids and names: their rules, checking and sanitizing them, and the
// default id of a node.

package coord

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// MaxIDLen and MaxNameLen bound instance ids and names (DESIGN.md §3).
const (
	MaxIDLen   = 64
	MaxNameLen = 128
)

// ValidID reports whether id follows the rules [A-Za-z0-9_-]{1,64}.
func ValidID(id string) bool {
	if len(id) == 0 || len(id) > MaxIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !idByte(id[i]) {
			return false
		}
	}
	return true
}

// CheckID returns nil for a valid id and an ErrInvalidID error naming the
// problem otherwise.
func CheckID(id string) error {
	if ValidID(id) {
		return nil
	}
	if id == "" {
		return fmt.Errorf("%w: empty", ErrInvalidID)
	}
	if len(id) > MaxIDLen {
		return fmt.Errorf("%w: %q is %d bytes long, at most %d allowed", ErrInvalidID, id, len(id), MaxIDLen)
	}
	return fmt.Errorf("%w: %q may only hold letters, digits, '_' and '-'", ErrInvalidID, id)
}

func idByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// SanitizeID turns free input into a valid id: spaces and dots become '-',
// every other character outside [A-Za-z0-9_-] is dropped, and the result is
// cut to MaxIDLen bytes. changed tells the caller to show the user the id that
// is used. An id that is empty after sanitizing is an error.
func SanitizeID(in string) (id string, changed bool, err error) {
	var b strings.Builder
	for _, r := range in {
		if b.Len() == MaxIDLen {
			break
		}
		switch {
		case r < 0x80 && idByte(byte(r)):
			b.WriteRune(r)
		case r == ' ' || r == '.':
			b.WriteByte('-')
		}
	}
	id = b.String()
	if id == "" {
		return "", false, fmt.Errorf("%w: %q has no usable character (letters, digits, '_', '-')", ErrInvalidID, in)
	}
	return id, id != in, nil
}

// DefaultID is the id of a node started without --id: the host name, and
// for a data dir other than the default one a short hash of its absolute
// path, so that a restart on the same host with the same data dir finds the
// same instance and model, and two data dirs on one host do not clash.
func DefaultID(host, dataDir, defaultDataDir string) string {
	h, _, err := SanitizeID(host)
	if err != nil {
		h = "node"
	}
	abs := func(p string) string {
		if a, err := filepath.Abs(p); err == nil {
			return filepath.Clean(a)
		}
		return filepath.Clean(p)
	}
	if dataDir == "" || abs(dataDir) == abs(defaultDataDir) {
		return h
	}
	sum := sha256.Sum256([]byte(abs(dataDir)))
	suffix := "-" + hex.EncodeToString(sum[:4])
	if len(h)+len(suffix) > MaxIDLen {
		h = h[:MaxIDLen-len(suffix)]
	}
	return h + suffix
}

// Hostname returns the host name, or "unknown".
func Hostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "unknown"
	}
	return h
}

// CheckName validates a free-text instance name.
func CheckName(name string) error {
	if n := len([]rune(name)); n > MaxNameLen {
		return fmt.Errorf("coord: instance name is %d characters long, at most %d allowed", n, MaxNameLen)
	}
	return nil
}
