package node

// This file is the Node: built by New, it serves HTTP and runs one epoch
// (epoch.go) after another until it is stopped.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

	// mu guards status, session and cur; the epoch's own fields are its own
	// (cur.recMu guards the registry record).
	mu      sync.Mutex
	status  coord.Status
	session *coord.Session // of the current epoch, from before it registers
	cur     *epoch         // the current epoch while registered, else nil

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
		if cerr := ln.Close(); cerr != nil {
			lg.Warn("cannot close the listener", zap.Error(cerr))
		}
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
	n.engine = newEngine(cli, n.cfg, n.m, metrics.NewSessions(reg), n.lg)
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
	defer func() {
		// Shutdown closes it as a rule; a listener the server never took is closed here.
		if err := n.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			n.lg.Warn("cannot close the listener", zap.Error(err))
		}
	}()
	// Stopping: ctx ending is a stop request too. The watcher ends with Run.
	runDone := make(chan struct{})
	defer close(runDone)
	go func() {
		select {
		case <-ctx.Done():
			n.Stop()
		case <-n.stopCh:
		case <-runDone:
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
		err = n.runEpoch(bg, first)
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
	if err := srv.Shutdown(shutdownCtx); err != nil {
		n.lg.Warn("HTTP server did not shut down cleanly", zap.Duration("drain_timeout", n.cfg.DrainTimeout), zap.Error(err))
	}
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
