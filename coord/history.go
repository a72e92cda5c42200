// Message history: the bounded in-memory list of the messages an instance
// received, and publishing and reading it at history/<id>.

package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// History bounds: a node keeps and publishes its last MaxHistory received
// messages, each body cut to HistoryBodyMax bytes, so the published value
// stays below 32 KiB whatever the messages were.
const (
	MaxHistory     = 50
	HistoryBodyMax = 256
)

// ReceivedMessage is a message an instance has received and acknowledged,
// as its history shows it.
type ReceivedMessage struct {
	ID         string    `json:"id"`
	From       string    `json:"from"`
	Kind       string    `json:"kind"`
	Body       string    `json:"body"`
	Truncated  bool      `json:"truncated,omitempty"` // the body was cut to HistoryBodyMax bytes
	SentAt     time.Time `json:"sent_at"`
	ReceivedAt time.Time `json:"received_at"`
}

// History is the bounded, in-memory list of the messages an instance
// received, newest last. It is safe for concurrent use.
type History struct {
	mu      sync.Mutex
	list    []ReceivedMessage
	version uint64 // counts changes, for publishers
}

// Add records a received message, dropping the oldest beyond MaxHistory.
func (h *History) Add(m Message, at time.Time) {
	r := ReceivedMessage{ID: m.ID, From: m.From, Kind: m.Kind, Body: m.Body, SentAt: m.SentAt, ReceivedAt: at.UTC()}
	if len(r.Body) > HistoryBodyMax {
		cut := HistoryBodyMax
		for cut > 0 && !utf8.RuneStart(r.Body[cut]) {
			cut--
		}
		r.Body, r.Truncated = r.Body[:cut], true
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.list) == MaxHistory {
		copy(h.list, h.list[1:])
		h.list = h.list[:MaxHistory-1]
	}
	h.list = append(h.list, r)
	h.version++
}

// List returns a copy of the history, oldest first, and its version.
func (h *History) List() ([]ReceivedMessage, uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]ReceivedMessage{}, h.list...), h.version
}

// historyRecord is the stored value of history/<id>.
type historyRecord struct {
	V        int               `json:"v"`
	Messages []ReceivedMessage `json:"messages"`
}

// PutHistory publishes an instance's history at history/<id> under the
// session's lease, so that it goes with the instance.
func PutHistory(ctx context.Context, s *Session, id string, list []ReceivedMessage) error {
	if len(list) > MaxHistory {
		list = list[len(list)-MaxHistory:]
	}
	b, err := json.Marshal(historyRecord{V: SchemaVersion, Messages: list})
	if err != nil {
		return err
	}
	if _, err := s.cli.Put(ctx, HistoryKey(id), string(b), clientv3.WithLease(s.Lease())); err != nil {
		return fmt.Errorf("coord: publish message history of %s: %w", id, err)
	}
	return nil
}

// GetHistory reads the history an instance published: empty when it
// published none (it received nothing yet, or it is not running).
func GetHistory(ctx context.Context, kv clientv3.KV, id string) ([]ReceivedMessage, error) {
	if err := CheckID(id); err != nil {
		return nil, err
	}
	resp, err := kv.Get(ctx, HistoryKey(id))
	if err != nil {
		return nil, fmt.Errorf("coord: read message history of %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return []ReceivedMessage{}, nil
	}
	var rec historyRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return nil, fmt.Errorf("coord: message history of %s: %w", id, err)
	}
	if rec.V != SchemaVersion {
		return nil, fmt.Errorf("coord: message history of %s has schema version %d, this build reads %d", id, rec.V, SchemaVersion)
	}
	if len(rec.Messages) > MaxHistory {
		rec.Messages = rec.Messages[len(rec.Messages)-MaxHistory:]
	}
	return rec.Messages, nil
}
