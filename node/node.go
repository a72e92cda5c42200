package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"golang.org/x/net/netutil"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/metrics"
	"github.com/kato-coord/kato/node/console"
)

// Node is one katonode: one instance, one processor, one HTTP server.
type Node struct {
	cfg     Config
	cli     *clientv3.Client
	lg      *zap.Logger
	reg     *prometheus.Registry
	m       *metrics.Metrics
	dir     *Directory
	console *console.Console
	engine  *engine
	started time.Time

	apiURL     string
	ln         net.Listener
	serverTLS  *tls.Config // HTTPS, when --tls-cert is given
	forwardTLS *tls.Config // verifies holders when forwarding over HTTPS

	mu       sync.Mutex
	status   coord.Status
	session  *coord.Session
	registry *coord.Registry // of the current session
	record   *coord.Instance // guarded by recMu
	mailbox  *coord.Mailbox
	recMu    sync.Mutex // serialises registry record updates

	history  coord.History // messages received lately, published at history/<id>
	firstRev atomic.Int64  // etcd revision of this process's first registration

	ready    atomic.Bool
	mbState  atomic.Value // string: the mailbox receiver's state
	stopOnce sync.Once
	stopCh   chan struct{} // closed when a stop is requested
}

// New checks cfg and binds the HTTP port (the asked one or the next free),
// so the address is known before the node registers. cli must be confined to
// the key prefix (coord.Connect does that).
func New(cfg Config, cli *clientv3.Client, lg *zap.Logger) (*Node, error) {
	if err := cfg.applyDefaults(); err != nil {
		return nil, err
	}
	ln, err := listen(cfg.ListenHost, cfg.Port, cfg.PortTries)
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if cfg.Port != 0 && port != cfg.Port {
		lg.Warn("port taken; using the next free one", zap.Int("asked", cfg.Port), zap.Int("port", port))
	}
	serverTLS, forwardTLS, err := tlsConfigs(cfg)
	if err != nil {
		ln.Close()
		return nil, err
	}
	scheme := "http"
	if serverTLS != nil {
		scheme = "https"
	}
	reg := prometheus.NewRegistry()
	n := &Node{
		cfg:        cfg,
		cli:        cli,
		lg:         lg.With(zap.String("id", cfg.ID)),
		reg:        reg,
		m:          metrics.New(reg),
		started:    time.Now().UTC(),
		apiURL:     scheme + "://" + net.JoinHostPort(cfg.AdvertiseHost, strconv.Itoa(port)),
		ln:         ln,
		serverTLS:  serverTLS,
		forwardTLS: forwardTLS,
		status:     coord.StatusStarting,
		stopCh:     make(chan struct{}),
	}
	n.dir = NewDirectory(cli, n.lg)
	n.console = n.newConsole()
	n.engine = newEngine(n)
	n.m.Info.WithLabelValues(cfg.ID, cfg.Name, cfg.Model, cfg.Version).Set(1)
	n.m.SetState(string(coord.StatusStarting))
	return n, nil
}

// APIURL is the advertised address of the node's HTTP API.
func (n *Node) APIURL() string { return n.apiURL }

// Model is the name of the model the node serves.
func (n *Node) Model() string { return n.cfg.Model }

// Addr is the address the HTTP server listens on.
func (n *Node) Addr() net.Addr { return n.ln.Addr() }

// Stop asks Run to stop gracefully; it is idempotent.
func (n *Node) Stop() { n.stopOnce.Do(func() { close(n.stopCh) }) }

// Run serves until ctx ends or a stop is requested, then stops gracefully and
// returns nil. It returns an error when the node cannot run at all: the id is
// held by another live instance, or the model lock could not be had within
// the lock timeout.
func (n *Node) Run(ctx context.Context) error {
	defer n.ln.Close()
	// Stopping: ctx ending is a stop request too.
	go func() {
		select {
		case <-ctx.Done():
			n.Stop()
		case <-n.stopCh:
		}
	}()
	// Background parts live until Run returns.
	bg, cancelBG := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer func() { cancelBG(); wg.Wait() }()
	wg.Add(3)
	go func() { defer wg.Done(); n.dir.Run(bg) }()
	go func() { defer wg.Done(); n.console.Run(bg) }()
	go func() { defer wg.Done(); n.watchEtcd(bg) }()

	srv := n.server(bg)
	srv.RegisterOnShutdown(n.console.Close) // open console pages must not hold the shutdown up
	serveErr := make(chan error, 1)
	go func() {
		ln := netutil.LimitListener(n.ln, n.cfg.MaxConns)
		if srv.TLSConfig != nil {
			serveErr <- srv.ServeTLS(ln, "", "")
			return
		}
		serveErr <- srv.Serve(ln)
	}()
	n.lg.Info("serving", zap.String("api", n.apiURL), zap.String("model", n.cfg.Model))

	first := true
	var err error
	for {
		err = n.epoch(bg, first)
		first = false
		if errors.Is(err, errStop) {
			err = nil
			break
		}
		if !errors.Is(err, coord.ErrSessionLost) {
			break
		}
		n.m.SessionLosses.Inc()
		n.lg.Warn("session lost; starting over as standby", zap.Error(err))
		if n.stopping() {
			err = nil
			break
		}
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
	defer cancel()
	srv.Shutdown(shutdownCtx)
	<-serveErr
	return err
}

func (n *Node) stopping() bool {
	select {
	case <-n.stopCh:
		return true
	default:
		return false
	}
}

// epoch runs one session: register, standby, lock, running. It returns
// errStop after a graceful stop, a coord.ErrSessionLost error when the lease
// was lost, or a fatal error.
func (n *Node) epoch(ctx context.Context, first bool) error {
	s, err := n.openSession(ctx)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()

	n.mu.Lock()
	n.session = s
	n.mu.Unlock()

	reg := coord.NewRegistry(s)
	rec := n.newRecord(s)
	if err := n.register(ctx, reg, &rec, first); err != nil {
		s.Close(context.Background())
		return err
	}
	n.m.Registered.Set(1)
	n.firstRev.CompareAndSwap(0, rec.ModRevision)
	n.mu.Lock()
	n.registry, n.record = reg, &rec
	n.mu.Unlock()
	defer func() {
		n.m.Registered.Set(0)
		n.mu.Lock()
		n.registry, n.record, n.mailbox = nil, nil, nil
		n.mu.Unlock()
	}()

	// Control messages: "stop" asks for a graceful stop.
	mb := coord.NewMailbox(s, n.cfg.ID, coord.WithMailboxLogger(n.lg))
	n.mu.Lock()
	n.mailbox = mb
	n.mu.Unlock()
	wg.Add(1)
	go func() { defer wg.Done(); n.receive(ctx, s, mb) }()

	wg.Add(1)
	go func() { defer wg.Done(); n.publishHistory(ctx, s) }()

	lock := coord.NewModelLock(s, n.cfg.Model, coord.WithHolder(n.cfg.ID, n.cfg.AdvertiseHost), coord.WithLockLogger(n.lg))
	err = n.standbyAndRun(ctx, s, reg, &rec, lock)
	switch {
	case errors.Is(err, errStop):
		n.gracefulStop(s, reg, &rec, lock)
		return errStop
	case s.Err() != nil && !errors.Is(s.Err(), coord.ErrSessionClosed):
		n.setReady(false)
		n.engine.deactivate()
		// Make sure nothing of the old session outlives it at etcd either.
		rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
		n.cli.Revoke(rctx, s.Lease())
		rcancel()
		s.Close(context.Background())
		return fmt.Errorf("%w: %v", coord.ErrSessionLost, s.Err())
	default:
		n.setReady(false)
		n.engine.deactivate()
		s.Close(context.Background())
		return err
	}
}

// Mailbox receiver states, shown in /readyz.
const (
	mailboxReceiving  = "receiving"
	mailboxRestarting = "restarting"
	mailboxNoSession  = "no-session"
)

// receive runs the mailbox receiver for as long as the session lives,
// starting it again (after a backoff of up to 5 s) whenever it ends with an
// error: an error etcd gives once (an expired auth token, a compaction race)
// must not leave the node deaf to messages, katoctl stop included.
func (n *Node) receive(ctx context.Context, s *coord.Session, mb *coord.Mailbox) {
	defer n.setMailboxState(mailboxNoSession)
	const most = 5 * time.Second
	bo := coord.Backoff{Min: 100 * time.Millisecond, Max: most}
	for {
		n.setMailboxState(mailboxReceiving)
		start := time.Now()
		err := mb.Receive(ctx, n.handleMessage)
		if ctx.Err() != nil || s.Err() != nil {
			return
		}
		n.setMailboxState(mailboxRestarting)
		n.m.MailboxRestarts.Inc()
		if time.Since(start) > most {
			bo.Reset()
		}
		backoff := bo.Next()
		n.lg.Warn("mailbox receive ended; starting it again", zap.Error(err), zap.Duration("backoff", backoff))
		if n.sleep(ctx, s, backoff) != nil {
			return
		}
	}
}

func (n *Node) handleMessage(_ context.Context, msg coord.Message) error {
	n.m.MessagesReceived.WithLabelValues(msg.Kind).Inc()
	n.history.Add(msg, time.Now())
	if !msg.SentAt.IsZero() {
		n.m.MessageLatency.Observe(time.Since(msg.SentAt).Seconds())
	}
	switch {
	case !msg.IsControl(coord.ControlStop):
	case msg.Revision < n.firstRev.Load():
		// Left by katoctl stop --force for an earlier run of this id.
		n.lg.Info("ignoring a stop message sent before this process registered", zap.String("from", msg.From),
			zap.Time("sent", msg.SentAt))
	default:
		n.lg.Info("stop requested by message", zap.String("from", msg.From))
		n.Stop()
	}
	return nil
}

func (n *Node) setMailboxState(st string) {
	n.mbState.Store(st)
	v := 0.0
	if st == mailboxReceiving {
		v = 1
	}
	n.m.MailboxReceiving.Set(v)
}

// MailboxState is the state of the mailbox receiver: receiving, restarting
// (after an error) or no-session.
func (n *Node) MailboxState() string {
	if st, ok := n.mbState.Load().(string); ok {
		return st
	}
	return mailboxNoSession
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
	genes, _ := json.Marshal(n.engine.geneMap())
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
func (n *Node) register(ctx context.Context, reg *coord.Registry, rec *coord.Instance, first bool) error {
	told := false
	for {
		err := reg.Register(ctx, rec)
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
func (n *Node) setStatus(ctx context.Context, reg *coord.Registry, rec *coord.Instance, st coord.Status) error {
	n.mu.Lock()
	n.status = st
	n.mu.Unlock()
	n.m.SetState(string(st))
	n.recMu.Lock()
	defer n.recMu.Unlock()
	if rec.Status == st {
		return nil
	}
	rec.Status = st
	uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := reg.Update(uctx, rec); err != nil {
		n.lg.Warn("registry update failed", zap.String("status", string(st)), zap.Error(err))
		return err
	}
	n.lg.Info("status", zap.String("status", string(st)))
	return nil
}

// Status is the node's lifecycle status.
func (n *Node) Status() coord.Status {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.status
}

func (n *Node) setReady(r bool) { n.ready.Store(r) }

// Ready reports whether the node is registered and holds its model lock. It
// reads the session's deadline too, so a node that was paused past its TTL
// serves nothing before its keep-alive goroutine notices.
func (n *Node) Ready() bool {
	if !n.ready.Load() {
		return false
	}
	n.mu.Lock()
	s := n.session
	n.mu.Unlock()
	return s != nil && s.Err() == nil
}

// standbyAndRun waits for the model lock while keeping a warm copy of the
// model, then serves until the session or lock is lost or a stop is asked.
// A lock lost while the session lives (broken by an admin) goes back to
// standby within the same session.
func (n *Node) standbyAndRun(ctx context.Context, s *coord.Session, reg *coord.Registry, rec *coord.Instance, lock *coord.ModelLock) error {
	for {
		if err := n.setStatus(ctx, reg, rec, coord.StatusStandby); err != nil && s.Err() != nil {
			return s.Err()
		}
		warm := n.engine.follow(ctx)
		fence, err := n.acquire(ctx, s, lock)
		if err != nil {
			warm.stop()
			if errors.Is(err, errStop) || errors.Is(err, errLockTimeout) || errors.Is(err, coord.ErrLockInUse) || s.Err() != nil {
				return err
			}
			// etcd did not answer (an election, a member cut off): wait as standby again.
			n.lg.Warn("cannot take the model lock; retrying", zap.Error(err))
			if err := n.pause(ctx, s); err != nil {
				return err
			}
			continue
		}
		n.lg.Info("model lock acquired", zap.String("model", n.cfg.Model), zap.Int64("fence", fence.Rev))
		if err := n.engine.activate(ctx, lock, warm, fence); err != nil {
			// A read that etcd did not answer, or a record that does not load:
			// give the lock up (another node may do better) and try again.
			n.lg.Error("cannot load the model; releasing the lock and retrying", zap.Error(err))
			if err := n.release(ctx, s, lock); err != nil {
				return err
			}
			if err := n.pause(ctx, s); err != nil {
				return err
			}
			continue
		}
		n.m.LockHeld.Set(1)
		n.m.LockAcquisitions.Inc()
		n.setReady(true)
		n.setStatus(ctx, reg, rec, coord.StatusRunning)

		why := n.serve(ctx, s, lock, fence)
		n.setReady(false)
		n.m.LockHeld.Set(0)
		if errors.Is(why, errStop) {
			return errStop
		}
		n.engine.deactivate()
		n.m.LockLosses.Inc()
		if s.Err() != nil {
			return s.Err()
		}
		n.lg.Warn("model lock lost; back to standby", zap.Error(why))
		if err := n.release(ctx, s, lock); err != nil {
			return err
		}
	}
}

// serve runs while the node holds the lock and returns why it stops. A model
// write that failed for any reason but the lock (etcd refused it, its outcome
// is unknown) costs no lock: the node reloads the model from etcd under the
// same lock, then serves writes again (PROCESSOR.md D14).
func (n *Node) serve(ctx context.Context, s *coord.Session, lock *coord.ModelLock, fence coord.Fence) error {
	for {
		select {
		case <-n.stopCh:
			return errStop
		case <-s.Done():
			return s.Err()
		case <-lock.Lost():
			return lock.Err()
		case <-n.engine.failed():
		}
		// A write that failed on the fence ended the hold before it returned.
		if err := lock.Err(); err != nil {
			return err
		}
		n.lg.Warn("a model write failed; reloading the model under the same lock", zap.String("model", n.cfg.Model))
		n.setReady(false)
		n.engine.deactivate()
		if err := n.engine.activate(ctx, lock, nil, fence); err != nil {
			return fmt.Errorf("reload after a failed write: %w", err)
		}
		n.setReady(true)
	}
}

// release drops what is left of a hold (lockinfo, queue key) after the lock
// or a write was lost. While etcd does not answer (a member cut off, an
// election) the hold is kept, and the lock cannot be taken again until it is
// released: it retries until it is, or the session ends.
func (n *Node) release(ctx context.Context, s *coord.Session, lock *coord.ModelLock) error {
	for {
		uctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := lock.Unlock(uctx)
		cancel()
		if err == nil || errors.Is(err, coord.ErrLockLost) || errors.Is(err, coord.ErrNotLocked) {
			return nil
		}
		n.lg.Warn("cannot release the model lock; retrying", zap.Error(err))
		if err := n.pause(ctx, s); err != nil {
			return err
		}
	}
}

// pause waits a second before a retry; it returns why not to retry.
func (n *Node) pause(ctx context.Context, s *coord.Session) error {
	return n.sleep(ctx, s, time.Second)
}

// sleep waits d before a retry (coord.Sleep), and returns why not to retry
// when it ends first: ctx's error, errStop when a stop is requested, or the
// error of session s (when s is not nil) when it ends.
func (n *Node) sleep(ctx context.Context, s *coord.Session, d time.Duration) error {
	var sessionDone <-chan struct{}
	if s != nil {
		sessionDone = s.Done()
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() { // ends with wctx at the latest
		select {
		case <-n.stopCh:
		case <-sessionDone:
		case <-wctx.Done():
		}
		cancel()
	}()
	if coord.Sleep(wctx, d) == nil {
		return nil
	}
	select {
	case <-n.stopCh:
		return errStop
	default:
	}
	if s != nil && s.Err() != nil {
		return s.Err()
	}
	return ctx.Err()
}

// acquire waits for the lock, bounded by the lock timeout, the session and
// stop requests.
func (n *Node) acquire(ctx context.Context, s *coord.Session, lock *coord.ModelLock) (coord.Fence, error) {
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if n.cfg.LockTimeout > 0 {
		lctx, cancel = context.WithTimeout(lctx, n.cfg.LockTimeout)
		defer cancel()
	}
	go func() {
		select {
		case <-n.stopCh:
			cancel()
		case <-s.Done():
			cancel()
		case <-lctx.Done():
		}
	}()
	start := time.Now()
	fence, err := lock.Lock(lctx)
	if err == nil {
		n.m.LockWait.Observe(time.Since(start).Seconds())
		return fence, nil
	}
	switch {
	case n.stopping():
		return fence, errStop
	case s.Err() != nil:
		return fence, s.Err()
	case n.cfg.LockTimeout > 0 && errors.Is(lctx.Err(), context.DeadlineExceeded):
		return fence, fmt.Errorf("%w: model %q: no lock after --lock-timeout %v: %w", errLockTimeout, n.cfg.Model, n.cfg.LockTimeout, err)
	}
	return fence, err
}

// gracefulStop: draining → finish in-flight requests → release the lock →
// delete the record → revoke the lease.
func (n *Node) gracefulStop(s *coord.Session, reg *coord.Registry, rec *coord.Instance, lock *coord.ModelLock) {
	// The whole stop fits in the drain timeout, whatever etcd is doing
	// (katonode's main ends the process after it).
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.DrainTimeout)
	defer cancel()
	n.setReady(false)
	n.setStatus(ctx, reg, rec, coord.StatusDraining)
	n.engine.drain(n.cfg.DrainTimeout)
	n.engine.deactivate()
	if err := lock.Unlock(ctx); err != nil && !errors.Is(err, coord.ErrNotLocked) {
		n.lg.Warn("unlock", zap.Error(err))
	}
	if err := reg.Deregister(ctx, n.cfg.ID); err != nil {
		n.lg.Warn("deregister", zap.Error(err))
	}
	if err := s.Close(ctx); err != nil {
		n.lg.Warn("revoke session", zap.Error(err))
	}
	n.lg.Info("stopped gracefully")
}

// tlsConfigs loads the API's certificate (nil config: plain HTTP) and the
// CA bundle that verifies other nodes when forwarding to them.
func tlsConfigs(cfg Config) (server, forward *tls.Config, err error) {
	if cfg.TLSCert != "" {
		pair, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, nil, fmt.Errorf("node: --tls-cert/--tls-key: %w", err)
		}
		server = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	}
	if cfg.TLSCA != "" {
		pem, err := os.ReadFile(cfg.TLSCA)
		if err != nil {
			return nil, nil, fmt.Errorf("node: --tls-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("node: --tls-ca %s: no PEM certificate in it", cfg.TLSCA)
		}
		forward = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	return server, forward, nil
}
