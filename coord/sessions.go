// KATO 3 session keys: their layout under sessions/<model>/, and new session
// ids that carry their model.

package coord

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
)

// KATO 3 sessions (DESIGN.md §4): sessions/<model>/<sid>, each under the
// session's own lease, written by the model's holder fenced by its lock.
const sessionsDir = "sessions/"

// SessionsPrefix is the prefix of every KATO 3 session.
func SessionsPrefix() string { return sessionsDir }

// SessionPrefix is the prefix of a model's sessions.
func SessionPrefix(model string) string { return sessionsDir + model + "/" }

// SessionKey is the key of one session.
func SessionKey(model, sid string) string { return SessionPrefix(model) + sid }

// NewSessionID returns a new session id: the model name, a dot and 128
// random bits in hex. Any node can route a request by its id alone (the
// model is in it), and the random part makes it unguessable.
func NewSessionID(model string) string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return model + "." + hex.EncodeToString(b[:])
}

// SessionModel returns the model of a session id, and false for a string
// that is not a session id.
func SessionModel(sid string) (string, bool) {
	model, random, ok := strings.Cut(sid, ".")
	if !ok || !ValidID(model) || len(random) != 32 {
		return "", false
	}
	for i := 0; i < len(random); i++ {
		if c := random[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return "", false
		}
	}
	return model, true
}
