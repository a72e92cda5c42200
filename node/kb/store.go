package kb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// Record is one stored key of a model, relative to models/<model>/.
type Record struct {
	Key   string
	Value []byte // nil for a keys-only load
	// ModRev is the etcd revision of the record's last write (read side only).
	ModRev int64
}

// pageSize is how many keys Load reads per request.
const pageSize = 1000

// Load reads every record of model at one revision, page by page, calling fn
// for each in key order, and returns the revision read. It logs progress for
// large models.
func Load(ctx context.Context, kv clientv3.KV, lg *zap.Logger, model string, fn func(Record) error) (int64, error) {
	return scan(ctx, kv, lg, model, false, fn)
}

// LoadKeys is Load without the values: keys and mod revisions only, to find
// what changed since a copy was made.
func LoadKeys(ctx context.Context, kv clientv3.KV, lg *zap.Logger, model string, fn func(Record) error) (int64, error) {
	return scan(ctx, kv, lg, model, true, fn)
}

func scan(ctx context.Context, kv clientv3.KV, lg *zap.Logger, model string, keysOnly bool, fn func(Record) error) (int64, error) {
	prefix := coord.ModelPrefix(model)
	end := clientv3.GetPrefixRangeEnd(prefix)
	var rev, n int64
	total := int64(-1)
	start, lastLog := time.Now(), time.Now()
	key := prefix
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(pageSize)}
		if keysOnly {
			opts = append(opts, clientv3.WithKeysOnly())
		}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := kv.Get(ctx, key, opts...)
		if err != nil {
			return 0, fmt.Errorf("kb: load model %s: %w", model, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
			total = resp.Count
		}
		for _, item := range resp.Kvs {
			if err := fn(Record{Key: string(item.Key[len(prefix):]), Value: item.Value, ModRev: item.ModRevision}); err != nil {
				return 0, fmt.Errorf("kb: load model %s: record %s: %w", model, item.Key[len(prefix):], err)
			}
		}
		n += int64(len(resp.Kvs))
		if time.Since(lastLog) > 2*time.Second {
			lastLog = time.Now()
			lg.Info("loading model", zap.String("model", model), zap.Int64("records", n), zap.Int64("of", total))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	if n >= pageSize || time.Since(start) > time.Second {
		lg.Info("model loaded", zap.String("model", model), zap.Int64("records", n), zap.Duration("took", time.Since(start)))
	}
	return rev, nil
}

// Event is a change of a followed model: a record put, or deleted (Value
// nil). A Progress event carries no record: the follower has seen every
// change up to Revision (etcd's progress notification, see RequestProgress).
type Event struct {
	Record
	Deleted  bool
	Progress bool
	Revision int64
}

// RequestProgress asks etcd to tell every Follow of this client how far it
// is (a Progress event), so a caller can wait until a follower has seen a
// revision.
func RequestProgress(ctx context.Context, cli *clientv3.Client) error {
	return cli.RequestProgress(clientv3.WithRequireLeader(ctx))
}

// Follow calls fn for every change of model from fromRev on, in revision
// order, until ctx ends or fn fails. A broken watch resumes after the last
// event; a compacted history returns ErrCompacted.
func Follow(ctx context.Context, cli *clientv3.Client, model string, fromRev int64, fn func(Event) error) error {
	prefix := coord.ModelPrefix(model)
	next := fromRev
	for {
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(next))
		err := func() error {
			for resp := range wch {
				if err := resp.Err(); err != nil {
					return err
				}
				if resp.IsProgressNotify() {
					if err := fn(Event{Progress: true, Revision: resp.Header.Revision}); err != nil {
						return &handlerError{err}
					}
					continue
				}
				for _, ev := range resp.Events {
					e := Event{Record: Record{Key: string(ev.Kv.Key[len(prefix):]), Value: ev.Kv.Value, ModRev: ev.Kv.ModRevision},
						Deleted: ev.Type == clientv3.EventTypeDelete, Revision: ev.Kv.ModRevision}
					if e.Deleted {
						e.Value = nil
					}
					if err := fn(e); err != nil {
						return &handlerError{err}
					}
				}
				// A revision's events arrive in one response: resume after it.
				if n := len(resp.Events); n > 0 {
					next = resp.Events[n-1].Kv.ModRevision + 1
				}
			}
			return nil
		}()
		cancel()
		var herr *handlerError
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case errors.As(err, &herr):
			return herr.err
		case errors.Is(err, rpctypes.ErrCompacted):
			return ErrCompacted
		}
		// The watch broke (leader lost, connection reset): resume after a pause.
		t := time.NewTimer(100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

type handlerError struct{ err error }

func (h *handlerError) Error() string { return h.err.Error() }
