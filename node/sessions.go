package node

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

func (t *sessionTable) checkTTL(ttl time.Duration) (time.Duration, error) {
	if ttl == 0 {
		return t.ttls.Default, nil
	}
	if ttl < t.ttls.Min || ttl > t.ttls.Max {
		return 0, fmt.Errorf("%w: ttl_seconds %d is out of range [%d, %d]", api.ErrBadSession,
			int64(ttl/time.Second), int64(t.ttls.Min/time.Second), int64(t.ttls.Max/time.Second))
	}
	return ttl, nil
}

func (t *sessionTable) create(ctx context.Context, req api.SessionCreate) (api.SessionInfo, error) {
	ttl, err := t.checkTTL(req.TTL)
	if err != nil {
		return api.SessionInfo{}, err
	}
	cfg := t.p.Config()
	if req.Config != nil {
		if cfg, err = processor.ApplySessionConfig(cfg, req.Config); err != nil {
			return api.SessionInfo{}, err
		}
	}
	ps, err := t.p.NewSession(cfg)
	if err != nil {
		return api.SessionInfo{}, err
	}
	grant, err := t.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return api.SessionInfo{}, fmt.Errorf("%w: grant a session lease: %v", api.ErrUnavailable, err)
	}
	now := time.Now().UTC()
	ls := &liveSession{sid: coord.NewSessionID(t.model), ps: ps, lease: grant.ID, ttl: ttl, created: now,
		metadata: req.Metadata, refreshed: now}
	if err := t.persist(ctx, ls); err != nil {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		t.cli.Revoke(rctx, grant.ID)
		cancel()
		return api.SessionInfo{}, err
	}
	t.mu.Lock()
	t.byID[ls.sid] = ls
	n := len(t.byID)
	t.mu.Unlock()
	t.sm.Active.WithLabelValues(t.model).Set(float64(n))
	t.sm.Created.WithLabelValues(t.model).Inc()
	return t.info(ls), nil
}

func (t *sessionTable) info(ls *liveSession) api.SessionInfo {
	exp := ls.refreshed.Add(ls.ttl)
	return api.SessionInfo{ID: ls.sid, Model: t.model, Created: ls.created, Expires: exp, TTL: ls.ttl,
		Metadata: ls.metadata, Config: ls.ps.Config()}
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

// use finds a session and locks it for one call, extending its TTL (at most
// one lease refresh a second); release with ls.mu.Unlock.
func (t *sessionTable) use(ctx context.Context, sid string, extend bool) (*liveSession, error) {
	t.mu.Lock()
	ls, ok := t.byID[sid]
	t.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("%w: %s", api.ErrSessionNotFound, sid)
	}
	ls.mu.Lock()
	if !extend || time.Since(ls.refreshed) < refreshEvery {
		return ls, nil
	}
	if _, err := t.cli.KeepAliveOnce(ctx, ls.lease); err != nil {
		ls.mu.Unlock()
		return nil, t.etcdErr(ls, err)
	}
	ls.refreshed = time.Now()
	t.sm.Refreshes.WithLabelValues(t.model).Inc()
	return ls, nil
}

func (t *sessionTable) delete(ctx context.Context, sid string) error {
	ls, err := t.use(ctx, sid, false)
	if err != nil {
		return err
	}
	defer ls.mu.Unlock()
	if _, err := t.lock.Txn(ctx).Then(clientv3.OpDelete(coord.SessionKey(t.model, sid))).Commit(); err != nil {
		return t.etcdErr(ls, err)
	}
	t.drop(sid, false)
	t.sm.Deleted.WithLabelValues(t.model).Inc()
	if _, err := t.cli.Revoke(ctx, ls.lease); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.lg.Warn("cannot revoke a deleted session's lease; it expires by itself", zap.String("session", sid), zap.Error(err))
	}
	return nil
}

// extend moves the session to a new lease of the new TTL.
func (t *sessionTable) extend(ctx context.Context, sid string, ttl time.Duration) error {
	ttl, err := t.checkTTL(ttl)
	if err != nil {
		return err
	}
	ls, err := t.use(ctx, sid, true)
	if err != nil {
		return err
	}
	defer ls.mu.Unlock()
	grant, err := t.cli.Grant(ctx, int64(ttl/time.Second))
	if err != nil {
		return fmt.Errorf("%w: grant a session lease: %v", api.ErrUnavailable, err)
	}
	old, oldTTL := ls.lease, ls.ttl
	ls.lease, ls.ttl = grant.ID, ttl
	if err := t.persist(ctx, ls); err != nil {
		ls.lease, ls.ttl = old, oldTTL
		t.cli.Revoke(context.WithoutCancel(ctx), grant.ID)
		return err
	}
	ls.refreshed = time.Now()
	if _, err := t.cli.Revoke(ctx, old); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		t.lg.Warn("cannot revoke a session's old lease; it expires by itself", zap.String("session", sid), zap.Error(err))
	}
	return nil
}

// write runs fn on the session; the model changes it returns are made
// durable first (fenced, through the committer), then the session's state,
// and only then does write return (fn's own error included: the changes fn
// made before failing are stored too).
func (t *sessionTable) write(ctx context.Context, sid string, fn func(*processor.Session) (processor.Changes, error)) error {
	ls, err := t.use(ctx, sid, true)
	if err != nil {
		return err
	}
	defer ls.mu.Unlock()
	prev := ls.ps.State()
	var ferr error
	err = t.e.write(ctx, func(p *processor.Processor) (processor.Changes, error) {
		if p != t.p {
			return nil, ErrNotServing // the model was reloaded since: the session table is stale
		}
		ch, err := fn(ls.ps)
		ferr = err
		return ch, nil
	})
	if err == nil {
		err = t.persist(ctx, ls)
	}
	if err != nil {
		// Not stored: the session goes back to what etcd holds, so that
		// the next call, and the next holder, see the same session.
		if back, rerr := t.p.RestoreSession(prev); rerr == nil {
			ls.ps = back
		}
		return err
	}
	return ferr
}

// sessionsAPI is the node's api.Sessions.
type sessionsAPI struct{ n *Node }

func (s sessionsAPI) table() (*sessionTable, error) {
	e := s.n.engine
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.sessions == nil {
		return nil, fmt.Errorf("%w: %v", api.ErrUnavailable, ErrNotServing)
	}
	return e.sessions, nil
}

func (s sessionsAPI) Create(ctx context.Context, model string, req api.SessionCreate) (api.SessionInfo, error) {
	t, err := s.table()
	if err != nil {
		return api.SessionInfo{}, err
	}
	return t.create(ctx, req)
}

func (s sessionsAPI) Info(ctx context.Context, sid string) (api.SessionInfo, error) {
	t, err := s.table()
	if err != nil {
		return api.SessionInfo{}, err
	}
	ls, err := t.use(ctx, sid, true)
	if err != nil {
		return api.SessionInfo{}, err
	}
	defer ls.mu.Unlock()
	return t.info(ls), nil
}

func (s sessionsAPI) Delete(ctx context.Context, sid string) error {
	t, err := s.table()
	if err != nil {
		return err
	}
	return t.delete(ctx, sid)
}

func (s sessionsAPI) Exists(ctx context.Context, sid string) (bool, error) {
	model, ok := coord.SessionModel(sid)
	if !ok {
		return false, nil
	}
	resp, err := s.n.cli.Get(ctx, coord.SessionKey(model, sid), clientv3.WithCountOnly())
	if err != nil {
		return false, fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	return resp.Count > 0, nil
}

func (s sessionsAPI) Count(ctx context.Context) (int64, error) {
	resp, err := s.n.cli.Get(ctx, coord.SessionsPrefix(), clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		return 0, fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	return resp.Count, nil
}

func (s sessionsAPI) Extend(ctx context.Context, sid string, ttl time.Duration) error {
	t, err := s.table()
	if err != nil {
		return err
	}
	return t.extend(ctx, sid, ttl)
}

func (s sessionsAPI) SetConfig(ctx context.Context, sid string, config json.RawMessage) error {
	t, err := s.table()
	if err != nil {
		return err
	}
	return t.write(ctx, sid, func(ps *processor.Session) (processor.Changes, error) {
		cfg, err := processor.ApplySessionConfig(ps.Config(), config)
		if err != nil {
			return nil, err
		}
		return nil, ps.SetConfig(cfg)
	})
}

func (s sessionsAPI) Read(ctx context.Context, sid string, fn func(*processor.Session)) error {
	t, err := s.table()
	if err != nil {
		return err
	}
	ls, err := t.use(ctx, sid, true)
	if err != nil {
		return err
	}
	defer ls.mu.Unlock()
	fn(ls.ps)
	return nil
}

func (s sessionsAPI) Write(ctx context.Context, sid string, fn func(*processor.Session) (processor.Changes, error)) error {
	t, err := s.table()
	if err != nil {
		return err
	}
	return apiWriteErr(t.write(ctx, sid, fn))
}
