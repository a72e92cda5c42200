package kb

// This file reads a model from keys in memory instead of etcd: for tools
// that replay etcd's history (the fault suite's checker).

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/processor"
)

// LoadKeys reads model from kvs (keys relative to the root prefix, with
// their values) as Load reads it from etcd.
func LoadKeys(model string, kvs map[string][]byte, l Loader) (State, error) {
	prefix := coord.ModelPrefix(model)
	m := memSource{vals: map[string][]byte{}}
	for k, v := range kvs {
		if strings.HasPrefix(k, prefix) {
			m.keys = append(m.keys, k)
			m.vals[k] = v
		}
	}
	sort.Strings(m.keys)
	return loadFrom(context.Background(), m, zap.NewNop(), model, l, nil, loadOpts{snapshot: true, log: true})
}

type memSource struct {
	keys []string
	vals map[string][]byte
}

func (m memSource) get(k string) *mvccpb.KeyValue {
	v, ok := m.vals[k]
	if !ok {
		return nil
	}
	return &mvccpb.KeyValue{Key: []byte(k), Value: v, ModRevision: 1}
}

func (m memSource) first(_ context.Context, prefix string, _ int64) (head, meta *mvccpb.KeyValue, at int64, err error) {
	return m.get(prefix + HeadKey), m.get(prefix + MetaKey), 1, nil
}

func (m memSource) each(_ context.Context, prefix string, _ int64, fn func(*mvccpb.KeyValue) error, tick func()) error {
	for i := sort.SearchStrings(m.keys, prefix); i < len(m.keys) && strings.HasPrefix(m.keys[i], prefix); i++ {
		if err := fn(m.get(m.keys[i])); err != nil {
			return err
		}
	}
	tick()
	return nil
}

func (m memSource) count(_ context.Context, prefix string, _ int64) (int64, error) {
	n := int64(0)
	for i := sort.SearchStrings(m.keys, prefix); i < len(m.keys) && strings.HasPrefix(m.keys[i], prefix); i++ {
		n++
	}
	return n, nil
}

// LogDecoder reassembles the log entries of one model, given in the order
// they were written, into the changes of each group they complete.
type LogDecoder struct {
	model  string
	prefix string
	g      *groups
}

// NewLogDecoder returns a decoder for model's log.
func NewLogDecoder(model string) *LogDecoder {
	return &LogDecoder{model: model, prefix: coord.ModelPrefix(model)}
}

// Put takes one put of a key (relative to the root prefix; keys that are
// not log entries of the model are ignored). It returns the changes of the
// group the entry completes, nil otherwise.
func (d *LogDecoder) Put(key string, value []byte) (processor.Changes, error) {
	rel, ok := strings.CutPrefix(key, d.prefix)
	if !ok || !strings.HasPrefix(rel, logDir) {
		return nil, nil
	}
	e, err := openLogEntry(d.model, rel, value)
	if err != nil {
		return nil, err
	}
	if d.g == nil || e.seq != d.g.next && e.first == e.seq {
		// The first entry seen, or a log begun again (the model was
		// removed or replaced).
		d.g = &groups{model: d.model, next: e.seq}
	}
	return d.g.changes(e)
}

// LogEntry returns the key (relative to the root prefix) and value of a log
// entry at seq holding changes as one whole group, as a Committer writes
// it: for tools and tests that build a model's history by hand.
func LogEntry(model string, seq uint64, changes processor.Changes) (string, []byte, error) {
	var body []byte
	for _, ch := range changes {
		var err error
		if body, err = appendChange(body, ch); err != nil {
			return "", nil, err
		}
	}
	z, codec := compress(body)
	if len(z) > maxPartBytes {
		return "", nil, fmt.Errorf("%w: %d bytes in one log entry", ErrTooLarge, len(z))
	}
	return coord.ModelPrefix(model) + logKey(seq), frameLogEntry(codec, seq, true, z), nil
}
