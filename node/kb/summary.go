package kb

// This file summarises a stored model without reading its records: what
// `katoctl models ls` and the console show.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/processor"
)

// Summary is what a model holds, from count-only reads and its head and
// meta records.
type Summary struct {
	// Patterns and Vectors count the model's records: the snapshot's (or
	// the old layout's) and the new ones its log holds. LogEntries counts
	// the log entries written since the snapshot.
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

// Summarize reads the summary of model at one revision. It reads the log
// (bounded by the checkpoint policy) to count the records it adds, unless
// prev is the summary of the same model at the same meta revision: then its
// counts are kept.
func Summarize(ctx context.Context, kv clientv3.KV, model string, prev *Summary) (Summary, error) {
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
	if s.LogEntries == 0 {
		return s, nil
	}
	if prev != nil && prev.MetaRev == s.MetaRev && s.MetaRev != 0 {
		s.Patterns, s.Vectors = prev.Patterns, prev.Vectors
		return s, nil
	}
	// Without a snapshot every record of the log is new (an old layout's
	// records, read before conversion, may be counted twice).
	c := &logCounter{pats: map[string]bool{}, vecs: map[string]bool{}, all: s.Head == nil}
	if s.Head != nil {
		c.maxPat, c.maxVec = s.Head.MaxPatternSeq, s.Head.MaxVectorSeq
	}
	if _, err := load(ctx, kv, zap.NewNop(), model, c, nil, loadOpts{rev: resp.Header.Revision, log: true}); err != nil {
		return Summary{}, fmt.Errorf("kb: summarize model %s: %w", model, err)
	}
	if c.cleared {
		s.Patterns, s.Vectors = 0, 0
	} else if s.Head == nil && s.Patterns+s.Vectors > 0 {
		// The old layout's records are counted already: a log record of
		// the same name re-learned one of them.
		if err := dropStored(ctx, kv, p, resp.Header.Revision, c); err != nil {
			return Summary{}, fmt.Errorf("kb: summarize model %s: %w", model, err)
		}
	}
	s.Patterns += int64(len(c.pats))
	s.Vectors += int64(len(c.vecs))
	return s, nil
}

// logCounter is a Loader of the log that keeps the names of the records it
// adds to the snapshot: records above the snapshot's highest sequence
// numbers, or every record after a clear-all.
type logCounter struct {
	maxPat, maxVec uint64
	all            bool // no snapshot: every record counts
	cleared        bool
	pats, vecs     map[string]bool
}

func (c *logCounter) Record(processor.Change) error { return nil }
func (c *logCounter) Built() error                  { return nil }
func (c *logCounter) Changes(chs processor.Changes) error {
	for _, ch := range chs {
		switch ch.Kind {
		case processor.PutPattern:
			if c.all || c.cleared || ch.Pattern.Seq > c.maxPat {
				c.pats[ch.Pattern.Name] = true
			}
		case processor.PutVector:
			if c.all || c.cleared || ch.Vector.Seq > c.maxVec {
				c.vecs[ch.Vector.Name] = true
			}
		case processor.ClearAll:
			c.cleared = true
			clear(c.pats)
			clear(c.vecs)
		}
	}
	return nil
}

// ScanRanges returns the key ranges of a model, relative to its prefix,
// that hold everything but its snapshot chunks ([from, to) each): what a
// reader of sizes can afford to read whole.
func ScanRanges() [][2]string {
	return [][2]string{{"", snapDir}, {clientv3.GetPrefixRangeEnd(snapDir), "\xff"}}
}

// dropStored removes from c the names stored in the old layout at rev.
func dropStored(ctx context.Context, kv clientv3.KV, prefix string, rev int64, c *logCounter) error {
	var keys, names []string
	var sets []map[string]bool
	for name := range c.pats {
		keys, names, sets = append(keys, prefix+legacyPatterns+name), append(names, name), append(sets, c.pats)
	}
	for name := range c.vecs {
		keys, names, sets = append(keys, prefix+legacyVectorDir+strings.TrimPrefix(name, vectorPrefix)), append(names, name), append(sets, c.vecs)
	}
	const batch = 100
	for from := 0; from < len(keys); from += batch {
		to := min(from+batch, len(keys))
		ops := make([]clientv3.Op, 0, to-from)
		for _, k := range keys[from:to] {
			ops = append(ops, clientv3.OpGet(k, clientv3.WithRev(rev), clientv3.WithCountOnly()))
		}
		resp, err := kv.Txn(ctx).Then(ops...).Commit()
		if err != nil {
			return err
		}
		for i, r := range resp.Responses {
			if r.GetResponseRange().Count > 0 {
				delete(sets[from+i], names[from+i])
			}
		}
	}
	return nil
}
