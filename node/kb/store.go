package kb

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kato-coord/kato/coord"
)

// Record is one stored key of a model, relative to models/<model>/.
type Record struct {
	Key   string
	Value []byte
	// ModRev is the etcd revision of the record's last write (read side only).
	ModRev int64
}

// Load streams every record of model at one revision (etcd's RangeStream:
// no page makes etcd count the rest of the range, so a load costs one pass
// over the model), calling fn for each in key order as it arrives, and
// returns the revision read. progress, if not nil, is told the number of
// records read after every chunk; the log gets a line every 2 s for large
// models. An etcd older than 3.7 has no RangeStream: then Load reads pages
// of 1000 keys at one revision instead (each page makes etcd count the rest
// of the range, so that costs O(n²/1000)) and logs a warning.
func Load(ctx context.Context, kv clientv3.KV, lg *zap.Logger, model string, fn func(Record) error, progress func(records int64)) (int64, error) {
	prefix := coord.ModelPrefix(model)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := kv.GetStream(sctx, prefix, clientv3.WithRange(clientv3.GetPrefixRangeEnd(prefix)))
	if status.Code(err) == codes.Unimplemented {
		return loadPaged(ctx, kv, lg, model, fn, progress, err)
	}
	if err != nil {
		return 0, fmt.Errorf("kb: load model %s: %w", model, err)
	}
	// Whatever ends the load, the stream's goroutines end once it is drained.
	defer func() {
		cancel()
		for range stream {
		}
	}()
	var rev, n int64
	start, lastLog := time.Now(), time.Now()
	for resp := range stream {
		if err := resp.Err(); err != nil {
			if n == 0 && status.Code(err) == codes.Unimplemented {
				return loadPaged(ctx, kv, lg, model, fn, progress, err)
			}
			return 0, fmt.Errorf("kb: load model %s after %d records: %w", model, n, err)
		}
		for _, item := range resp.Kvs {
			if err := fn(Record{Key: string(item.Key[len(prefix):]), Value: item.Value, ModRev: item.ModRevision}); err != nil {
				return 0, fmt.Errorf("kb: load model %s: record %s: %w", model, item.Key[len(prefix):], err)
			}
		}
		n += int64(len(resp.Kvs))
		if resp.Header != nil {
			rev = resp.Header.Revision
		}
		if progress != nil {
			progress(n)
		}
		if time.Since(lastLog) > 2*time.Second {
			lastLog = time.Now()
			lg.Info("loading model", zap.String("model", model), zap.Int64("records", n), zap.Duration("for", time.Since(start)))
		}
	}
	if rev == 0 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("kb: load model %s: the stream ended without its revision", model)
	}
	if n >= 1000 || time.Since(start) > time.Second {
		lg.Info("model loaded", zap.String("model", model), zap.Int64("records", n), zap.Int64("revision", rev), zap.Duration("took", time.Since(start)))
	}
	return rev, nil
}

// loadPaged is Load for an etcd without RangeStream: pages of 1000 keys at
// the revision of the first.
func loadPaged(ctx context.Context, kv clientv3.KV, lg *zap.Logger, model string, fn func(Record) error, progress func(int64), why error) (int64, error) {
	lg.Warn("etcd cannot stream a range (RangeStream needs etcd 3.7); loading the model page by page, which is slow for large models",
		zap.String("model", model), zap.Error(why))
	prefix := coord.ModelPrefix(model)
	end := clientv3.GetPrefixRangeEnd(prefix)
	key, rev, n := prefix, int64(0), int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := kv.Get(ctx, key, opts...)
		if err != nil {
			return 0, fmt.Errorf("kb: load model %s after %d records: %w", model, n, err)
		}
		if rev == 0 {
			rev = resp.Header.Revision // later pages read at it
		}
		for _, item := range resp.Kvs {
			if err := fn(Record{Key: string(item.Key[len(prefix):]), Value: item.Value, ModRev: item.ModRevision}); err != nil {
				return 0, fmt.Errorf("kb: load model %s: record %s: %w", model, item.Key[len(prefix):], err)
			}
		}
		n += int64(len(resp.Kvs))
		if progress != nil {
			progress(n)
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return rev, nil
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}

// Event is a change of a followed model: a record put, or deleted (Value
// nil).
type Event struct {
	Record
	Deleted bool
}

// RequestProgress asks etcd to tell every Follow of this client how far it
// is (a call with no events), so a caller can wait until a follower has seen
// a revision.
func RequestProgress(ctx context.Context, cli *clientv3.Client) error {
	return cli.RequestProgress(clientv3.WithRequireLeader(ctx))
}

// Follow calls fn with every revision that changed model from fromRev on,
// in order, with all the events of that revision (one transaction) at once,
// until ctx ends or fn fails. A call with no events is a progress
// notification: every change up to rev was delivered. A broken watch
// resumes after the last revision delivered; a compacted history returns
// ErrCompacted (load again, then follow from the load's revision + 1).
func Follow(ctx context.Context, cli *clientv3.Client, model string, fromRev int64, fn func(rev int64, events []Event) error) error {
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
					if err := fn(resp.Header.Revision, nil); err != nil {
						return &handlerError{err}
					}
					continue
				}
				// etcd sends a revision's events in one response.
				evs := resp.Events
				for len(evs) > 0 {
					rev := evs[0].Kv.ModRevision
					k := 1
					for k < len(evs) && evs[k].Kv.ModRevision == rev {
						k++
					}
					batch := make([]Event, k)
					for i, ev := range evs[:k] {
						batch[i] = Event{Record: Record{Key: string(ev.Kv.Key[len(prefix):]), ModRev: ev.Kv.ModRevision},
							Deleted: ev.Type == clientv3.EventTypeDelete}
						if !batch[i].Deleted {
							batch[i].Value = ev.Kv.Value
						}
					}
					if err := fn(rev, batch); err != nil {
						return &handlerError{err}
					}
					next = rev + 1
					evs = evs[k:]
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
