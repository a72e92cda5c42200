// Message ids: ULID-like, ordered by time, generated without an outside package.

package coord

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"sync"
	"time"
)

// Message ids are ULID-like and need no outside package:
//
//	<time: 10 chars><seq: 8 chars>-<sender id>
//
// time is the send time in Unix milliseconds and seq a 40-bit counter, both in
// Crockford base32 (whose alphabet is in ASCII order, so ids compare like the
// numbers). One Mailbox never goes back in time and always counts seq up, so
// its ids strictly increase even if the wall clock steps back; seq starts at a
// random value so that two processes sending as the same id (katoctl) do not
// produce the same ids in the same millisecond.
const (
	idTimeLen = 10
	idSeqLen  = 8
	idHeadLen = idTimeLen + idSeqLen
	// MaxMessageIDLen is the longest message id.
	MaxMessageIDLen = idHeadLen + 1 + MaxIDLen
)

const msgIDDigits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

type msgIDGen struct {
	mu     sync.Mutex
	lastMS int64
	seq    uint64
}

func (g *msgIDGen) init() {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("coord: read random bytes: %v", err)) // crypto/rand does not fail on supported systems
	}
	g.seq = binary.BigEndian.Uint64(b[:]) & (1<<39 - 1) // leaves 2^39 ids of headroom in 40 bits
}

// next returns the next id of sender at time now.
func (g *msgIDGen) next(now time.Time, sender string) string {
	g.mu.Lock()
	ms := now.UnixMilli()
	if ms < g.lastMS {
		ms = g.lastMS
	}
	g.lastMS = ms
	g.seq++
	seq := g.seq
	g.mu.Unlock()

	b := make([]byte, idHeadLen, idHeadLen+1+len(sender))
	putMsgIDDigits(b[:idTimeLen], uint64(ms))
	putMsgIDDigits(b[idTimeLen:], seq)
	b = append(b, '-')
	b = append(b, sender...)
	return string(b)
}

func putMsgIDDigits(dst []byte, v uint64) {
	for i := len(dst) - 1; i >= 0; i-- {
		dst[i] = msgIDDigits[v&31]
		v >>= 5
	}
}

// ParseMessageID returns the send time (millisecond precision) and the sender
// encoded in a message id.
func ParseMessageID(id string) (sentAt time.Time, sender string, err error) {
	if len(id) < idHeadLen+2 || id[idHeadLen] != '-' {
		return time.Time{}, "", fmt.Errorf("coord: message id %q: want <18 base32 chars>-<sender>", id)
	}
	var ms uint64
	for i := 0; i < idTimeLen; i++ {
		d := msgIDDigit(id[i])
		if d < 0 {
			return time.Time{}, "", fmt.Errorf("coord: message id %q: %q is not a base32 digit", id, id[i])
		}
		ms = ms<<5 | uint64(d)
	}
	for i := idTimeLen; i < idHeadLen; i++ {
		if msgIDDigit(id[i]) < 0 {
			return time.Time{}, "", fmt.Errorf("coord: message id %q: %q is not a base32 digit", id, id[i])
		}
	}
	sender = id[idHeadLen+1:]
	if err := CheckID(sender); err != nil {
		return time.Time{}, "", fmt.Errorf("coord: message id %q: sender: %w", id, err)
	}
	return time.UnixMilli(int64(ms)).UTC(), sender, nil
}

func msgIDDigit(c byte) int {
	for i := 0; i < len(msgIDDigits); i++ {
		if msgIDDigits[i] == c {
			return i
		}
	}
	return -1
}
