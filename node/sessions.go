package node

// This file is the table of KATO 3 sessions the holder serves: their records
// in etcd, loading them at a take-over, watching their expiries, and writing
// their records in group commits. The operations on them are in
// session_ops.go.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/metrics"
	"github.com/kato-coord/kato/node/api"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// SessionTTLs bound the TTL of KATO 3 sessions. Zero values take the
// defaults: 1 h, at least 60 s, at most 24 h.
type SessionTTLs struct {
	Default, Min, Max time.Duration
}

func (t *SessionTTLs) applyDefaults() error {
	if t.Default == 0 {
		t.Default = time.Hour
	}
	if t.Min == 0 {
		t.Min = time.Minute
	}
	if t.Max == 0 {
		t.Max = 24 * time.Hour
	}
	if t.Min < time.Second || t.Min > t.Default || t.Default > t.Max {
		return fmt.Errorf("node: session TTLs must satisfy 1s <= min %v <= default %v <= max %v", t.Min, t.Default, t.Max)
	}
	return nil
}

// refreshEvery is the least time between two lease refreshes of a session:
// uses in between do not extend the TTL again.
const refreshEvery = time.Second

// sessionRecord is the value of sessions/<model>/<sid>.
type sessionRecord struct {
	V         int                    `json:"v"`
	SessionID string                 `json:"session_id"`
	Model     string                 `json:"node_id"`
	CreatedAt time.Time              `json:"created_at"`
	TTL       int64                  `json:"ttl_seconds"`
	Metadata  json.RawMessage        `json:"metadata,omitempty"`
	State     processor.SessionState `json:"state"`
}

// liveSession is a session the holder serves.
type liveSession struct {
	mu        sync.Mutex // one call at a time, so writes reach etcd in order
	sid       string
	ps        *processor.Session
	lease     clientv3.LeaseID
	ttl       time.Duration
	created   time.Time
	metadata  json.RawMessage
	refreshed time.Time // last lease refresh; zero after a load (unknown)
}

// sessionTable holds the KATO 3 sessions of the model while the node holds
// its lock. Each session is a key under a lease of its own: etcd removes it
// when nobody uses it for its TTL, and a watch drops it from the table.
type sessionTable struct {
	e     *engine
	cli   *clientv3.Client
	lock  *coord.ModelLock
	p     *processor.Processor
	model string
	ttls  SessionTTLs
	lg    *zap.Logger
	sm    *metrics.Sessions

	mu   sync.Mutex
	byID map[string]*liveSession

	writes chan *sessionWrite // to commitLoop
	cancel context.CancelFunc
	done   chan struct{} // closed when the watch and commitLoop have ended
}

// openSessions loads the model's sessions into p (a take-over continues
// every session where it was) and starts watching for expiries.
func (e *engine) openSessions(ctx context.Context, lock *coord.ModelLock, p *processor.Processor) (*sessionTable, error) {
	t := &sessionTable{e: e, cli: e.cli, lock: lock, p: p, model: e.model, ttls: e.sessionTTLs,
		lg: e.lg.Named("sessions"), sm: e.sm, byID: map[string]*liveSession{}, writes: make(chan *sessionWrite), done: make(chan struct{})}
	resp, err := t.cli.Get(ctx, coord.SessionPrefix(t.model), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("node: load sessions of %s: %w", t.model, err)
	}
	for _, kv := range resp.Kvs {
		var rec sessionRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			t.lg.Warn("session record does not load; left to expire", zap.ByteString("key", kv.Key), zap.Error(err))
			continue
		}
		ps, err := p.RestoreSession(rec.State)
		if err != nil {
			t.lg.Warn("session state does not load; left to expire", zap.ByteString("key", kv.Key), zap.Error(err))
			continue
		}
		t.byID[rec.SessionID] = &liveSession{sid: rec.SessionID, ps: ps, lease: clientv3.LeaseID(kv.Lease),
			ttl: time.Duration(rec.TTL) * time.Second, created: rec.CreatedAt, metadata: rec.Metadata}
	}
	t.sm.Active.WithLabelValues(t.model).Set(float64(len(t.byID)))
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	t.cancel = cancel
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); t.watch(wctx, resp.Header.Revision+1) }()
	go func() { defer wg.Done(); t.commitLoop(wctx) }()
	go func() { wg.Wait(); close(t.done) }()
	return t, nil
}

// close stops the watch and the writes (those still queued fail); the
// sessions stay in etcd for the next holder.
func (t *sessionTable) close() {
	t.cancel()
	<-t.done
	t.sm.Active.WithLabelValues(t.model).Set(0)
}

// watch drops sessions whose key etcd deleted (their lease ran out) until
// ctx ends.
func (t *sessionTable) watch(ctx context.Context, rev int64) {
	prefix := coord.SessionPrefix(t.model)
	for ctx.Err() == nil {
		wch := t.cli.Watch(clientv3.WithRequireLeader(ctx), prefix, clientv3.WithPrefix(), clientv3.WithRev(rev), clientv3.WithFilterPut())
		for wr := range wch {
			if err := wr.Err(); err != nil {
				break
			}
			for _, ev := range wr.Events {
				t.drop(strings.TrimPrefix(string(ev.Kv.Key), prefix), true)
			}
			rev = wr.Header.Revision + 1
		}
		if ctx.Err() != nil {
			return
		}
		// Compacted or cut off: drop what etcd no longer has, and go on from now.
		resp, err := t.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			if !sleep(ctx, time.Second) {
				return
			}
			continue
		}
		have := map[string]bool{}
		for _, kv := range resp.Kvs {
			have[strings.TrimPrefix(string(kv.Key), prefix)] = true
		}
		t.mu.Lock()
		var gone []string
		for sid := range t.byID {
			if !have[sid] {
				gone = append(gone, sid)
			}
		}
		t.mu.Unlock()
		for _, sid := range gone {
			t.drop(sid, true)
		}
		rev = resp.Header.Revision + 1
	}
}

// drop removes a session from the table; expired counts it as an expiry.
func (t *sessionTable) drop(sid string, expired bool) bool {
	t.mu.Lock()
	_, ok := t.byID[sid]
	delete(t.byID, sid)
	n := len(t.byID)
	t.mu.Unlock()
	if ok {
		t.sm.Active.WithLabelValues(t.model).Set(float64(n))
		if expired {
			t.sm.Expired.WithLabelValues(t.model).Inc()
		}
	}
	return ok
}

// persist writes the session's record under its lease, fenced by the model
// lock, and returns once etcd has it. Writes of several sessions that wait
// at the same time go in one transaction (group commit).
func (t *sessionTable) persist(ctx context.Context, ls *liveSession) error {
	b, err := json.Marshal(sessionRecord{V: coord.SchemaVersion, SessionID: ls.sid, Model: t.model, CreatedAt: ls.created,
		TTL: int64(ls.ttl / time.Second), Metadata: ls.metadata, State: ls.ps.State()})
	if err != nil {
		return fmt.Errorf("node: session %s: %w", ls.sid, err)
	}
	key := coord.SessionKey(t.model, ls.sid)
	if n := len(key) + len(b); n > kb.MaxRecordBytes {
		return fmt.Errorf("%w: session %s would be stored as a record of %d bytes; one record holds at most %d (clear its STM, or learn)",
			processor.ErrTooLarge, ls.sid, n, kb.MaxRecordBytes)
	}
	w := &sessionWrite{op: clientv3.OpPut(key, string(b), clientv3.WithLease(ls.lease)), size: len(key) + len(b), done: make(chan error, 1)}
	select {
	case t.writes <- w:
	case <-t.done:
		return fmt.Errorf("%w: %v", api.ErrUnavailable, ErrNotServing)
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err = <-w.done:
	case <-ctx.Done():
		return ctx.Err() // queued: it lands or fails without us
	}
	return t.etcdErr(ls, err)
}

// sessionWrite is one session record waiting to be written.
type sessionWrite struct {
	op   clientv3.Op
	size int
	done chan error
}

// maxSessionBatch bounds the puts of one transaction (etcd's default
// --max-txn-ops is 128); their bytes are bounded by kb.MaxRecordBytes.
const maxSessionBatch = 100

// commitLoop writes queued session records until ctx ends: whatever queued
// while the previous transaction was in flight goes in the next one. A batch
// that etcd refuses because a lease is gone (a session expired meanwhile)
// is written again one put at a time, so only that session's write fails.
func (t *sessionTable) commitLoop(ctx context.Context) {
	var carry *sessionWrite // received, but did not fit the last batch
	for {
		var batch []*sessionWrite
		size := 0
		if carry != nil {
			batch, size, carry = append(batch, carry), carry.size, nil
		} else {
			select {
			case w := <-t.writes:
				batch, size = append(batch, w), w.size
			case <-ctx.Done():
				return
			}
		}
	more:
		for len(batch) < maxSessionBatch {
			select {
			case w := <-t.writes:
				if size+w.size > kb.MaxRecordBytes {
					carry = w
					break more
				}
				batch, size = append(batch, w), size+w.size
			default:
				break more
			}
		}
		err := t.commit(ctx, batch)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) && len(batch) > 1 {
			for _, w := range batch {
				w.done <- t.commit(ctx, []*sessionWrite{w})
			}
			continue
		}
		for _, w := range batch {
			w.done <- err
		}
	}
}

func (t *sessionTable) commit(ctx context.Context, batch []*sessionWrite) error {
	ops := make([]clientv3.Op, len(batch))
	for i, w := range batch {
		ops[i] = w.op
	}
	start := time.Now()
	_, err := t.lock.Txn(ctx).Then(ops...).Commit()
	t.e.m.EtcdRequest.WithLabelValues("session_txn").Observe(time.Since(start).Seconds())
	return err
}

// etcdErr maps an etcd error on a session: its lease gone means it expired.
func (t *sessionTable) etcdErr(ls *liveSession, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		t.drop(ls.sid, true)
		return fmt.Errorf("%w: %s", api.ErrSessionNotFound, ls.sid)
	case errors.Is(err, coord.ErrLockLost), errors.Is(err, coord.ErrNotLocked):
		return fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	return fmt.Errorf("%w: session %s: %v", api.ErrUnavailable, ls.sid, err)
}
