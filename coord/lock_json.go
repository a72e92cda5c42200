// The stored values of the model lock: queue entries and the lockinfo record,
// written by hand after a head encoded once.

package coord

import (
	"encoding/json"
	"slices"
	"strconv"
	"time"
)

// queueEntry is the value of a queue key written by a ModelLock. A plain
// concurrency.Mutex writes an empty value.
type queueEntry struct {
	V     int       `json:"v"`
	ID    string    `json:"id"`
	Host  string    `json:"host"`
	Token string    `json:"token"`
	Since time.Time `json:"since,omitzero"` // when the key was created (queued)
}

// holderRecord is the value of lockinfo/<model>.
type holderRecord struct {
	V    int    `json:"v"`
	ID   string `json:"id"`
	Host string `json:"host"`
	Key  string `json:"key"`
	// Rev is the fencing revision. It is left out when the record was written
	// in the same transaction that created the lock key (uncontended Lock):
	// then it is the record's mod revision.
	Rev   int64     `json:"rev,omitempty"`
	Since time.Time `json:"since,omitzero"` // when the lock was taken
}

// jsonHead encodes v, whose last fields are zero and left out, without its
// closing brace: the values are written by appending the fields that change
// (cheaper than encoding them whole on every Lock).
func jsonHead(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // strings and numbers only
	}
	return b[:len(b)-1]
}

// appendSince closes a value begun by jsonHead with its "since" field.
func appendSince(b []byte, t time.Time) string {
	b = append(b, `,"since":"`...)
	b = t.UTC().AppendFormat(b, time.RFC3339Nano)
	return string(append(b, `"}`...))
}

func (l *ModelLock) queueValue() string {
	return appendSince(slices.Clip(l.entryHead), time.Now())
}

func (l *ModelLock) holderValue(rev int64) string {
	b := slices.Clip(l.infoHead)
	if rev != 0 {
		b = append(b, `,"rev":`...)
		b = strconv.AppendInt(b, rev, 10)
	}
	return appendSince(b, time.Now())
}

// info is the lockinfo record of the successor as the holder it becomes.
func (n *successor) info() string {
	b, err := json.Marshal(holderRecord{V: SchemaVersion, ID: n.entry.ID, Host: n.entry.Host, Key: n.key, Rev: n.rev, Since: time.Now().UTC()})
	if err != nil {
		panic(err) // strings and numbers only
	}
	return string(b)
}
