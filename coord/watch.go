// The one resumable watch of coord: list a key or prefix at a revision, watch
// from the next one, resume a broken watch after the last revision delivered,
// and list again when that revision was compacted (as client-go's reflector
// does). The registry, the inbox, the lock directory and the lock monitor are
// built on it.

package coord

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// resumableWatch follows one key, or every key under a prefix, without ever
// skipping a change.
type resumableWatch struct {
	cli  *clientv3.Client
	lg   *zap.Logger
	what string // for the log
	key  string
	// opts are the options of the watch besides the start revision (WithPrefix,
	// WithFilterDelete, ...).
	opts []clientv3.OpOption

	// list reads the state and reports it; it returns the revision read.
	list func(ctx context.Context) (int64, error)
	// events handles one response's events, in revision order; an error ends
	// run with it.
	events func(evs []*clientv3.Event) error
	// progress, if set, is told the revision of each progress notification
	// (the watch is in sync up to it).
	progress func(rev int64)
	// retryable, if set, says whether a failure of list or of the watch is
	// worth retrying; run returns the others. Unset: every failure is retried.
	retryable func(error) bool
}

// errWatchCompacted ends a watch whose start revision etcd has compacted away.
var errWatchCompacted = errors.New("coord: watch start revision compacted")

// run lists (when from <= 0) and then watches from revision from (or the one
// after the listing) until ctx ends (ctx.Err()), events fails, or a failure
// is not retryable. A broken watch resumes after the last revision delivered
// (or the last progress notification), after a backoff; a compacted one lists
// again.
func (w *resumableWatch) run(ctx context.Context, from int64) error {
	var bo Backoff
	next := from
	for {
		if next <= 0 {
			rev, err := w.listed(ctx)
			if err != nil {
				return err
			}
			next = rev + 1
		}
		progressed, err := w.watch(ctx, &next)
		if errors.Is(err, errWatchCompacted) {
			w.lg.Info("watch revision compacted; listing the "+w.what+" again", zap.Int64("from", next))
			next = 0
			continue
		}
		if progressed {
			bo.Reset()
		}
		if err := w.failed(ctx, &bo, "watch", err); err != nil {
			return err
		}
	}
}

// listed lists, again after a backoff while that fails, and returns the
// revision read, or why it gave up.
func (w *resumableWatch) listed(ctx context.Context) (int64, error) {
	var bo Backoff
	for {
		rev, err := w.list(ctx)
		if err == nil {
			return rev, nil
		}
		if err := w.failed(ctx, &bo, "list", err); err != nil {
			return 0, err
		}
	}
}

// failed says whether to go on after err (nil, once the backoff waited) or
// returns why not.
func (w *resumableWatch) failed(ctx context.Context, bo *Backoff, op string, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var herr *watchHandlerError
	if errors.As(err, &herr) {
		return herr.err
	}
	if w.retryable != nil && !w.retryable(err) {
		return err
	}
	w.lg.Debug(w.what+": "+op+" failed; retrying", zap.Error(err))
	return bo.Wait(ctx)
}

// watchHandlerError carries an error of events out of run.
type watchHandlerError struct{ err error }

func (e *watchHandlerError) Error() string { return e.err.Error() }

// watch runs one watch from *next, advancing *next past every response it
// delivers, until the watch breaks. progressed tells whether the watch
// delivered any response.
func (w *resumableWatch) watch(ctx context.Context, next *int64) (progressed bool, err error) {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	opts := append([]clientv3.OpOption{clientv3.WithRev(*next)}, w.opts...)
	wch := w.cli.Watch(wctx, w.key, opts...)
	for {
		// Return as soon as ctx ends, not when the client has closed the
		// watch: Unlock waits for the lock monitor to return.
		var wr clientv3.WatchResponse
		var ok bool
		select {
		case <-ctx.Done():
			return progressed, ctx.Err()
		case wr, ok = <-wch:
		}
		if !ok {
			break
		}
		if wr.CompactRevision != 0 {
			return progressed, errWatchCompacted
		}
		if err := wr.Err(); err != nil {
			return progressed, err
		}
		progressed = true
		if len(wr.Events) > 0 {
			if err := w.events(wr.Events); err != nil {
				return progressed, &watchHandlerError{err}
			}
			// Resume after the last event delivered. A response's header
			// revision can be ahead of its events while a lagging watcher
			// catches up, so only a progress notification (sent when the
			// watcher is in sync) advances past the events.
			*next = wr.Events[len(wr.Events)-1].Kv.ModRevision + 1
		} else if wr.IsProgressNotify() {
			if wr.Header.Revision >= *next {
				*next = wr.Header.Revision + 1
			}
			if w.progress != nil {
				w.progress(wr.Header.Revision)
			}
		}
	}
	if err := ctx.Err(); err != nil {
		return progressed, err
	}
	if err := w.cli.Ctx().Err(); err != nil {
		return progressed, fmt.Errorf("coord: %s: watch closed: etcd client closed: %w", w.what, err)
	}
	return progressed, fmt.Errorf("coord: %s: watch closed", w.what)
}

// Watch follows key (with opts: WithPrefix, WithRange, ...) from revision
// from on, without ever skipping a change, for packages outside coord: a
// broken watch resumes after the last revision delivered (after a backoff),
// and a compacted start revision calls relist, whose revision the watch then
// goes on from (relist may instead return an error, which ends Watch).
// events is given each watch response's events, in revision order; progress
// the revision of each progress notification. Watch returns when ctx ends,
// events or relist fail, or the etcd client is closed.
func Watch(ctx context.Context, cli *clientv3.Client, lg *zap.Logger, key string, opts []clientv3.OpOption, from int64,
	relist func(ctx context.Context) (int64, error), events func([]*clientv3.Event) error, progress func(rev int64)) error {
	var relistErr error
	w := &resumableWatch{cli: cli, lg: lg, what: key, key: key, opts: opts, events: events, progress: progress,
		retryable: func(err error) bool { return cli.Ctx().Err() == nil && !errors.Is(err, errRelist) }}
	w.list = func(ctx context.Context) (int64, error) {
		rev, err := relist(ctx)
		if err != nil {
			relistErr = err
			return 0, errRelist
		}
		return rev, nil
	}
	if err := w.run(ctx, from); !errors.Is(err, errRelist) {
		return err
	}
	return relistErr
}

// errRelist marks an error of Watch's relist: not retried.
var errRelist = errors.New("coord: relist")
