package kb

// This file summarises a stored model without reading its records: what
// `katoctl models ls` and the console show.

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/coord"
)

// Summary is what a model holds, from count-only reads and its head and
// meta records.
type Summary struct {
	// Patterns and Vectors are the counts at the last snapshot (or of the
	// old layout's records); LogEntries the log entries written since.
	Patterns, Vectors int64
	LogEntries        int64
	// Keys counts every key of the model; SnapshotBytes is the stored size
	// of its snapshot.
	Keys          int64
	SnapshotBytes int64
	Head          *Head
	// Meta is the last writer's record (zero without one), MetaRev its mod
	// revision.
	Meta    Meta
	MetaRev int64
}

// Meta is the meta record: who wrote the model last, under which fence.
type Meta struct {
	V         int       `json:"v"`
	Format    int       `json:"format"`
	Model     string    `json:"model"`
	Writer    string    `json:"writer"`
	Host      string    `json:"host"`
	Fence     int64     `json:"fence"`
	WrittenAt time.Time `json:"written_at"`
}

// Encode returns the record, stamped now.
func (m Meta) Encode() []byte {
	m.Format = FormatVersion
	m.WrittenAt = time.Now().UTC()
	b, _ := json.Marshal(m)
	return b
}

// Summarize reads the summary of model at one revision.
func Summarize(ctx context.Context, kv clientv3.KV, model string) (Summary, error) {
	p := coord.ModelPrefix(model)
	count := func(key string) clientv3.Op {
		return clientv3.OpGet(key, clientv3.WithPrefix(), clientv3.WithCountOnly())
	}
	resp, err := kv.Txn(ctx).Then(clientv3.OpGet(p+HeadKey), clientv3.OpGet(p+MetaKey),
		count(p+legacyPatterns), count(p+legacyVectorDir), count(p+logDir), count(p)).Commit()
	if err != nil {
		return Summary{}, fmt.Errorf("kb: summarize model %s: %w", model, err)
	}
	r := func(i int) int64 { return resp.Responses[i].GetResponseRange().Count }
	s := Summary{Patterns: r(2), Vectors: r(3), LogEntries: r(4), Keys: r(5)}
	if kvs := resp.Responses[0].GetResponseRange().Kvs; len(kvs) > 0 {
		h, err := decodeHead(model, kvs[0].Value)
		if err != nil {
			return Summary{}, err
		}
		s.Head = &h
		s.Patterns += h.Patterns
		s.Vectors += h.Vectors
		s.SnapshotBytes = h.Bytes
	}
	if kvs := resp.Responses[1].GetResponseRange().Kvs; len(kvs) > 0 {
		s.MetaRev = kvs[0].ModRevision
		_ = json.Unmarshal(kvs[0].Value, &s.Meta) // a meta record that does not decode shows no writer
	}
	return s, nil
}

// ScanRanges returns the key ranges of a model, relative to its prefix,
// that hold everything but its snapshot chunks ([from, to) each): what a
// reader of sizes can afford to read whole.
func ScanRanges() [][2]string {
	return [][2]string{{"", snapDir}, {clientv3.GetPrefixRangeEnd(snapDir), "\xff"}}
}
