package coord

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
	"time"

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
func Connect(ctx context.Context, cfg ClientConfig, lg *zap.Logger) (*clientv3.Client, error) {
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
		return nil, err
	}
	tlsCfg, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	user, password := cfg.User, cfg.Password
	if u, p, ok := strings.Cut(user, ":"); ok && password == "" {
		user, password = u, p
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:            cfg.Endpoints,
		DialTimeout:          cfg.DialTimeout,
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		TLS:                  tlsCfg,
		Username:             user,
		Password:             password,
		Logger:               atLeast(lg.Named("etcd-client"), zap.WarnLevel),
		Context:              ctx,
	})
	if err != nil {
		return nil, fmt.Errorf("coord: connect to etcd %s: %w", strings.Join(cfg.Endpoints, ","), err)
	}
	// Confine the client first: an etcd user may be allowed the prefix only.
	Namespace(cli, prefix)
	// clientv3.New does not wait for a connection; check that etcd answers.
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, "health-check", clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, fmt.Errorf("coord: etcd at %s does not answer within %v: %w", strings.Join(cfg.Endpoints, ","), cfg.DialTimeout, err)
	}
	return cli, nil
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
