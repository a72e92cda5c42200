package node

// This file is the operations on KATO 3 sessions: create, use, extend, write
// and delete a session of the table (sessions.go), and sessionsAPI, the
// node's api.Sessions that the HTTP API calls.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/api"
	"github.com/kato-coord/kato/node/processor"
)

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
		if _, rerr := t.cli.Revoke(rctx, grant.ID); rerr != nil {
			t.lg.Warn("cannot revoke the lease of a session not created; it expires by itself", zap.Error(rerr))
		}
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
		if _, rerr := t.cli.Revoke(context.WithoutCancel(ctx), grant.ID); rerr != nil {
			t.lg.Warn("cannot revoke a session's unused new lease; it expires by itself", zap.String("session", sid), zap.Error(rerr))
		}
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
