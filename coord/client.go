// Connecting to etcd: the client flags both binaries share (ClientConfig),
// dialing with TLS and a namespace, and an error that says what each endpoint
// did when etcd does not answer.

package coord

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// ClientConfig is how a process reaches etcd: the shared flags of both binaries.
type ClientConfig struct {
	// Endpoints are etcd client URLs or host:port pairs. Default 127.0.0.1:2379.
	Endpoints []string
	// Prefix is the root of every key. Default DefaultPrefix.
	Prefix string
	// DialTimeout bounds the first connection. Default 5 s.
	DialTimeout time.Duration
	// CACert, Cert and Key are PEM files for TLS; all empty means plain TCP.
	CACert, Cert, Key string
	// User and Password for etcd auth; User may be "name:password".
	User, Password string
}

// Connect dials etcd, checks that it answers within the dial timeout, and
// returns a client whose KV, Watcher and Lease are confined to the prefix.
// When etcd does not answer, the error says what each endpoint did
// (connection refused, no answer) and what to do next.
func Connect(ctx context.Context, cfg ClientConfig, lg *zap.Logger) (*clientv3.Client, error) {
	cli, cfg, err := dial(ctx, cfg, lg)
	if err != nil {
		return nil, err
	}
	// A refused connection or an unknown host will not change within the
	// dial timeout: say so at once.
	probes := probeAll(cfg.Endpoints, cfg.DialTimeout)
	if allHopeless(probes) {
		cli.Close()
		return nil, unreachable(cfg.Endpoints, probes)
	}
	// clientv3.New does not wait for a connection; check that etcd answers.
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, "health-check", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("interrupted while waiting for etcd at %s", strings.Join(cfg.Endpoints, ","))
		}
		if errors.Is(err, context.DeadlineExceeded) {
			if tlsCfg, _ := tlsConfig(cfg); tlsCfg != nil {
				if cause := diagnoseTLS(ctx, cfg.Endpoints, tlsCfg, cfg.DialTimeout); cause != nil {
					return nil, fmt.Errorf("coord: etcd at %s does not answer: %w", strings.Join(cfg.Endpoints, ","), cause)
				}
			}
			return nil, unreachable(cfg.Endpoints, probeAll(cfg.Endpoints, cfg.DialTimeout))
		}
		return nil, fmt.Errorf("coord: etcd at %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	return cli, nil
}

// Dial is Connect without waiting for etcd to answer: for a caller that
// reports on each endpoint itself (katoctl status).
func Dial(ctx context.Context, cfg ClientConfig, lg *zap.Logger) (*clientv3.Client, error) {
	cli, _, err := dial(ctx, cfg, lg)
	return cli, err
}

func dial(ctx context.Context, cfg ClientConfig, lg *zap.Logger) (*clientv3.Client, ClientConfig, error) {
	if len(cfg.Endpoints) == 0 {
		cfg.Endpoints = []string{"127.0.0.1:2379"}
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 5 * time.Second
	}
	if cfg.Prefix == "" {
		cfg.Prefix = DefaultPrefix
	}
	prefix, err := NormalizePrefix(cfg.Prefix)
	if err != nil {
		return nil, cfg, err
	}
	tlsCfg, err := tlsConfig(cfg)
	if err != nil {
		return nil, cfg, err
	}
	user, password := cfg.User, cfg.Password
	if u, p, ok := strings.Cut(user, ":"); ok && password == "" {
		user, password = u, p
	}
	if user != "" && password == "" {
		// clientv3 would silently connect without auth.
		return nil, cfg, fmt.Errorf("coord: etcd user %q has no password: give --password, KATO_ETCD_PASSWORD or --user %s:PASSWORD", user, user)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		TLS:                  tlsCfg,
		Username:             user,
		Password:             password,
		// The client's own retry warnings are long and repeat every few
		// milliseconds while etcd is away; the node logs the outage itself.
		Logger:  atLeast(lg.Named("etcd-client"), zap.ErrorLevel),
		Context: ctx,
		// gRPC's default reconnect backoff grows to 2 minutes, so a client
		// could take that long to notice that etcd is back: at most 1 s.
		DialOptions: []grpc.DialOption{grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second},
			MinConnectTimeout: time.Second,
		})},
	})
	if err != nil {
		return nil, cfg, fmt.Errorf("coord: connect to etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	// Confine the client first: an etcd user may be allowed the prefix only.
	Namespace(cli, prefix)
	return cli, cfg, nil
}

// unreachable explains why no endpoint answered: each endpoint's TCP
// outcome, then the next step.
func unreachable(endpoints, probes []string) error {
	var seen []string
	for i, ep := range endpoints {
		seen = append(seen, ep+" ("+probes[i]+")")
	}
	return fmt.Errorf("%w at %s: is etcd running? start one with katonode run --embedded-etcd, or point --endpoints (KATO_ETCD_ENDPOINTS) at yours",
		ErrEtcdUnreachable, strings.Join(seen, ", "))
}

const (
	probeRefused = "connection refused"
	probeNoHost  = "unknown host"
)

// probeAll says what a TCP connection to each endpoint does, all at once.
func probeAll(endpoints []string, timeout time.Duration) []string {
	out := make([]string, len(endpoints))
	var wg sync.WaitGroup
	for i, ep := range endpoints {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = probe(ep, timeout)
		}()
	}
	wg.Wait()
	return out
}

func allHopeless(probes []string) bool {
	for _, p := range probes {
		if p != probeRefused && p != probeNoHost {
			return false
		}
	}
	return len(probes) > 0
}

// probe says what a TCP connection to an endpoint does.
func probe(ep string, timeout time.Duration) string {
	host := ep
	if u, err := url.Parse(ep); err == nil && u.Host != "" {
		host = u.Host
	}
	if timeout > time.Second {
		timeout = time.Second
	}
	conn, err := net.DialTimeout("tcp", host, timeout)
	if err != nil {
		var dnsErr *net.DNSError
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			return probeRefused
		case errors.As(err, &dnsErr):
			return probeNoHost
		case os.IsTimeout(err):
			return "no answer to connect"
		}
		return err.Error()
	}
	conn.Close()
	return "connects, but etcd did not answer in time"
}

// diagnoseTLS finds why no endpoint answered over TLS where the client only
// says the deadline passed: the first endpoint's TCP or TLS error (connection
// refused, unknown authority, expired certificate, handshake refused, a
// server that speaks no TLS). It returns nil when every endpoint connects.
func diagnoseTLS(ctx context.Context, endpoints []string, tc *tls.Config, timeout time.Duration) error {
	for _, ep := range endpoints {
		host := ep
		if u, err := url.Parse(ep); err == nil && u.Host != "" {
			host = u.Host
		}
		dctx, cancel := context.WithTimeout(ctx, timeout)
		err := probeTLS(dctx, host, tc)
		cancel()
		if err != nil {
			return fmt.Errorf("%s: %w", ep, err)
		}
	}
	return nil
}

func probeTLS(ctx context.Context, host string, tc *tls.Config) error {
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", host)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := tc.Clone()
	if c.ServerName == "" {
		c.ServerName, _, _ = net.SplitHostPort(host)
	}
	tconn := tls.Client(conn, c)
	if err := tconn.HandshakeContext(ctx); err != nil {
		var rec tls.RecordHeaderError
		if errors.As(err, &rec) {
			return fmt.Errorf("TLS handshake: the server does not speak TLS (%w)", err)
		}
		return fmt.Errorf("TLS handshake: %w", err)
	}
	// With TLS 1.3 a server refuses the client's certificate after the
	// client finished its side: read briefly for its alert.
	tconn.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	var ne net.Error
	if _, err := tconn.Read(make([]byte, 1)); err != nil && !(errors.As(err, &ne) && ne.Timeout()) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("TLS handshake refused: %w", err)
	}
	return nil
}

// Namespace confines cli's KV, Watcher and Lease to prefix, in place. Every
// key coord reads or writes is then relative to the prefix.
func Namespace(cli *clientv3.Client, prefix string) {
	cli.KV = newPrefixedKV(cli.KV, prefix)
	cli.Watcher = namespace.NewWatcher(cli.Watcher, prefix)
	cli.Lease = namespace.NewLease(cli.Lease, prefix)
}

func tlsConfig(cfg ClientConfig) (*tls.Config, error) {
	if cfg.CACert == "" && cfg.Cert == "" && cfg.Key == "" {
		return nil, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.CACert != "" {
		pem, err := os.ReadFile(cfg.CACert)
		if err != nil {
			return nil, fmt.Errorf("coord: --cacert: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("coord: --cacert %s: no PEM certificate in it", cfg.CACert)
		}
		tc.RootCAs = pool
	}
	if (cfg.Cert == "") != (cfg.Key == "") {
		return nil, fmt.Errorf("coord: --cert and --key go together")
	}
	if cfg.Cert != "" {
		pair, err := tls.LoadX509KeyPair(cfg.Cert, cfg.Key)
		if err != nil {
			return nil, fmt.Errorf("coord: --cert/--key: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return tc, nil
}

// atLeast returns lg logging only at level and above. zap.IncreaseLevel
// refuses (and says so on stderr) when lg is already quieter, as with
// --log-level error; then lg is returned as it is.
func atLeast(lg *zap.Logger, level zapcore.Level) *zap.Logger {
	if !lg.Core().Enabled(level - 1) {
		return lg
	}
	return lg.WithOptions(zap.IncreaseLevel(level))
}
