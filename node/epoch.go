package node

// This file is the epoch: what one etcd session of the node holds (the
// session, its registry record, its model lock and mailbox) and its
// lifecycle: open, register, standby and run (lock.go), stop.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// epoch is one session of the node. It owns the goroutines it starts (the
// mailbox receiver, the history publisher): its end stops them and waits for
// them.
type epoch struct {
	n    *Node
	s    *coord.Session
	reg  *coord.Registry
	lock *coord.ModelLock
	mb   *coord.Mailbox

	// recMu guards rec and recStale and serialises updates of the record
	// in the registry. recStale says etcd may not hold rec (an update
	// failed): syncRecord writes it again until it lands.
	recMu    sync.Mutex
	rec      coord.Instance
	recStale bool
	recKick  chan struct{}

	ctx    context.Context // ends with the epoch
	cancel context.CancelFunc
	wg     sync.WaitGroup // the epoch's goroutines
}

// newEpoch builds the epoch of session s; nothing is sent to etcd yet.
func (n *Node) newEpoch(ctx context.Context, s *coord.Session) *epoch {
	ep := &epoch{
		n:    n,
		s:    s,
		reg:  coord.NewRegistry(s),
		lock: coord.NewModelLock(s, n.cfg.Model, coord.WithHolder(n.cfg.ID, n.cfg.AdvertiseHost), coord.WithLockLogger(n.lg)),
		mb:   coord.NewMailbox(s, n.cfg.ID, coord.WithMailboxLogger(n.lg)),
		rec:  n.newRecord(s),

		recKick: make(chan struct{}, 1),
	}
	ep.ctx, ep.cancel = context.WithCancel(ctx)
	return ep
}

// start runs f in a goroutine of the epoch, which ends with it.
func (ep *epoch) start(f func(ctx context.Context)) {
	ep.wg.Add(1)
	go func() { defer ep.wg.Done(); f(ep.ctx) }()
}

// end stops the epoch's goroutines and waits for them.
func (ep *epoch) end() {
	ep.cancel()
	ep.wg.Wait()
}

// runEpoch runs one session: register, standby, lock, running. It returns
// errStop after a graceful stop, a coord.ErrSessionLost error when the lease
// was lost, or a fatal error.
func (n *Node) runEpoch(ctx context.Context, first bool) error {
	s, err := n.openSession(ctx)
	if err != nil {
		return err
	}
	ep := n.newEpoch(ctx, s)
	defer ep.end()

	n.mu.Lock()
	n.session = s
	n.mu.Unlock()

	if err := ep.register(first); err != nil {
		ep.closeSession(context.Background())
		return err
	}
	n.m.Registered.Set(1)
	n.firstRev.CompareAndSwap(0, ep.rec.ModRevision)
	n.mu.Lock()
	n.cur = ep
	n.mu.Unlock()
	defer func() {
		n.m.Registered.Set(0)
		n.mu.Lock()
		n.cur = nil
		n.mu.Unlock()
	}()

	// Control messages: "stop" asks for a graceful stop.
	ep.start(ep.receive)
	ep.start(func(ctx context.Context) { n.publishHistory(ctx, s) })
	ep.start(ep.syncRecord)

	err = ep.standbyAndRun()
	switch {
	case errors.Is(err, errStop):
		ep.gracefulStop()
		return errStop
	case s.Err() != nil && !errors.Is(s.Err(), coord.ErrSessionClosed):
		n.setReady(false)
		n.engine.deactivate()
		// Make sure nothing of the old session outlives it at etcd either.
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := n.cli.Revoke(rctx, s.Lease()); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			n.lg.Warn("cannot revoke the lost session's lease; it expires by itself", zap.Error(err))
		}
		rcancel()
		ep.closeSession(context.Background())
		return fmt.Errorf("%w: %v", coord.ErrSessionLost, s.Err())
	default:
		n.setReady(false)
		n.engine.deactivate()
		ep.closeSession(context.Background())
		return err
	}
}

// closeSession closes the epoch's session (revoking its lease).
func (ep *epoch) closeSession(ctx context.Context) {
	if err := ep.s.Close(ctx); err != nil {
		ep.n.lg.Warn("cannot close the etcd session; its lease expires by itself", zap.Error(err))
	}
}

func (n *Node) openSession(ctx context.Context) (*coord.Session, error) {
	for {
		s, err := coord.NewSession(ctx, n.cli, n.lg, coord.WithTTL(n.cfg.TTL))
		if err == nil {
			return s, nil
		}
		n.lg.Warn("cannot open an etcd session; retrying", zap.Error(err))
		// Only a stop request ends these retries (not ctx), as NewSession fails
		// at once on an ended ctx.
		if err := n.sleep(context.WithoutCancel(ctx), nil, time.Second); err != nil {
			return nil, err
		}
	}
}

func (n *Node) newRecord(s *coord.Session) coord.Instance {
	genes, err := json.Marshal(n.engine.geneMap())
	if err != nil {
		n.lg.Warn("cannot encode the genes for the registry record", zap.Error(err))
	}
	return coord.Instance{
		ID: n.cfg.ID, Name: n.cfg.Name, Model: n.cfg.Model, Host: n.cfg.AdvertiseHost, PID: os.Getpid(),
		APIURL: n.apiURL, MetricsURL: n.apiURL + "/metrics", Status: coord.StatusStarting,
		Genes: genes, Version: n.cfg.Version, StartedAt: n.started, EmbeddedEtcd: n.cfg.EmbeddedEtcd,
	}
}

// register registers the record. On the first epoch a clash is fatal; after a
// lost session the old record may still be there until etcd expires the old
// lease, so the node retries while the record is its own, and it retries when
// etcd did not answer (a member cut off or without a leader) until the new
// session is lost too.
func (ep *epoch) register(first bool) error {
	n, ctx := ep.n, ep.ctx
	ep.recMu.Lock()
	defer ep.recMu.Unlock()
	rec := &ep.rec
	told := false
	for {
		err := ep.reg.Register(ctx, rec)
		if err == nil || errors.Is(err, coord.ErrSessionLost) {
			return err
		}
		if first {
			// A crashed earlier run of this node may still hold the id.
			if errors.Is(err, coord.ErrIDTaken) {
				if werr := n.waitForStaleHolder(ctx, err, &told); werr != nil {
					return werr
				}
				continue
			}
			return err
		}
		if errors.Is(err, coord.ErrIDTaken) {
			held, gerr := coord.GetInstance(ctx, n.cli, rec.ID)
			if gerr == nil && (held.PID != rec.PID || held.Host != rec.Host) {
				return err
			}
			// Our own record of a lost session (etcd kept or revived its
			// lease): revoke that lease now rather than wait a TTL for it.
			if gerr == nil && held.LeaseID != rec.LeaseID {
				if terr := n.takeOver(ctx, held); terr == nil {
					n.lg.Info("revoked the lease of this node's lost session", zap.String("lease", held.LeaseID))
					continue
				}
			}
		} else {
			n.lg.Warn("cannot register again; retrying", zap.Error(err))
		}
		if err := n.sleep(ctx, nil, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

// setStatus rewrites the record on a status change only.
func (ep *epoch) setStatus(ctx context.Context, st coord.Status) error {
	n := ep.n
	n.mu.Lock()
	n.status = st
	n.mu.Unlock()
	n.m.SetState(string(st))
	ep.recMu.Lock()
	defer ep.recMu.Unlock()
	if ep.rec.Status == st && !ep.recStale {
		return nil
	}
	ep.rec.Status = st
	if err := ep.updateRecordLocked(ctx); err != nil {
		n.lg.Warn("registry update failed; trying again in the background", zap.String("status", string(st)), zap.Error(err))
		return err
	}
	n.lg.Info("status", zap.String("status", string(st)))
	return nil
}

// updateRecordLocked writes rec; a failure marks it stale for syncRecord.
// Call with recMu held.
func (ep *epoch) updateRecordLocked(ctx context.Context) error {
	uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := ep.reg.Update(uctx, &ep.rec)
	ep.recStale = err != nil
	if err != nil {
		select {
		case ep.recKick <- struct{}{}:
		default:
		}
	}
	return err
}

// syncRecord writes the record again, with backoff, whenever an update
// failed, until it lands or the epoch ends: a status change that etcd did
// not take (a connection timing out while the session survives) is not left
// behind for good.
func (ep *epoch) syncRecord(ctx context.Context) {
	var b coord.Backoff
	for {
		select {
		case <-ctx.Done():
			return
		case <-ep.recKick:
		}
		for {
			ep.recMu.Lock()
			stale := ep.recStale
			var err error
			if stale {
				err = ep.updateRecordLocked(ctx)
			}
			st := ep.rec.Status
			ep.recMu.Unlock()
			if !stale || err == nil {
				if stale {
					ep.n.lg.Info("status", zap.String("status", string(st)), zap.String("after", "a failed update"))
				}
				b.Reset()
				break
			}
			if b.Wait(ctx) != nil {
				return
			}
		}
	}
}

// setGenes writes genes into the registry record.
func (ep *epoch) setGenes(ctx context.Context, genes json.RawMessage) error {
	ep.recMu.Lock()
	defer ep.recMu.Unlock()
	ep.rec.Genes = genes
	return ep.updateRecordLocked(ctx)
}

// gracefulStop: draining → finish in-flight requests → release the lock →
// delete the record → revoke the lease.
func (ep *epoch) gracefulStop() {
	n := ep.n
	// The whole stop fits in the drain timeout, whatever etcd is doing
	// (katonode's main ends the process after it).
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
	defer cancel()
	n.setReady(false)
	ep.setStatus(ctx, coord.StatusDraining)
	n.engine.drain(n.cfg.DrainTimeout)
	n.engine.deactivate()
	if err := ep.lock.Unlock(ctx); err != nil && !errors.Is(err, coord.ErrNotLocked) {
		n.lg.Warn("unlock", zap.Error(err))
	}
	if err := ep.reg.Deregister(ctx, n.cfg.ID); err != nil {
		n.lg.Warn("deregister", zap.Error(err))
	}
	if err := ep.s.Close(ctx); err != nil {
		n.lg.Warn("revoke session", zap.Error(err))
	}
	n.lg.Info("stopped gracefully")
}
