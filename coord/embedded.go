// The embedded single-member etcd of `katonode run --embedded-etcd`: its
// config and defaults, starting it (with free-port and data-dir checks) and
// stopping it.

package coord

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EmbeddedConfig configures the single-member etcd that `katonode run
// --embedded-etcd` starts inside the process, for a machine with no etcd.
type EmbeddedConfig struct {
	// DataDir holds the member's data; it survives restarts. Default
	// DefaultEmbeddedDataDir().
	DataDir string
	// ClientAddr is host:port for clients (other katonode and katoctl
	// processes use it as --endpoints). Default 127.0.0.1:2379.
	ClientAddr string
	// PeerAddr is host:port of the raft peer listener. Default 127.0.0.1:2380.
	PeerAddr string
	// StartTimeout bounds how long the member may take to be ready. Default 60 s.
	StartTimeout time.Duration
	// AutoCompactionRetention is how much history the member keeps: a
	// duration ("1h": compact to the last hour, every hour or so) or a
	// number of revisions ("10000"); "0" turns compaction off. Default
	// DefaultAutoCompactionRetention.
	AutoCompactionRetention string
	// QuotaBackendBytes is the database size at which the member raises the
	// NOSPACE alarm and takes no more writes (defragment to get space back).
	// Default DefaultQuotaBackendBytes.
	QuotaBackendBytes int64
}

// Defaults of the embedded member's history and size bounds.
const (
	DefaultAutoCompactionRetention = "1h"
	DefaultQuotaBackendBytes       = 2 << 30
)

// compaction turns a retention into etcd's auto-compaction mode and value.
func compaction(retention string) (mode, value string, err error) {
	if _, err := strconv.ParseUint(retention, 10, 63); err == nil {
		return embed.CompactorModeRevision, retention, nil
	}
	if d, err := time.ParseDuration(retention); err == nil && d > 0 {
		return embed.CompactorModePeriodic, retention, nil
	}
	return "", "", fmt.Errorf("coord: --etcd-auto-compaction-retention %q: want a duration (1h, 30m) or a number of revisions (10000); 0 turns compaction off", retention)
}

// DefaultEmbeddedDataDir is $XDG_DATA_HOME/kato/etcd, or ~/.local/share/kato/etcd.
func DefaultEmbeddedDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "kato", "etcd")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "share", "kato", "etcd")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("kato-etcd-%d", os.Getuid()))
}

// ErrAddrInUse is returned by StartEmbedded when a listen address is taken.
var ErrAddrInUse = errors.New("coord: address already in use")

// ErrDataDirInUse is returned by StartEmbedded when another process runs an
// embedded etcd on the same data dir.
var ErrDataDirInUse = errors.New("coord: embedded etcd data dir in use")

// Embedded is a running in-process etcd member.
type Embedded struct {
	etcd     *embed.Etcd
	endpoint string
	closing  *atomic.Bool
	dirLock  *os.File // held while the member runs
}

// StartEmbedded starts the member and waits until it serves clients.
func StartEmbedded(ctx context.Context, cfg EmbeddedConfig, lg *zap.Logger) (*Embedded, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = DefaultEmbeddedDataDir()
	}
	if cfg.ClientAddr == "" {
		cfg.ClientAddr = "127.0.0.1:2379"
	}
	if cfg.PeerAddr == "" {
		cfg.PeerAddr = "127.0.0.1:2380"
	}
	if cfg.StartTimeout <= 0 {
		cfg.StartTimeout = 60 * time.Second
	}
	if cfg.AutoCompactionRetention == "" {
		cfg.AutoCompactionRetention = DefaultAutoCompactionRetention
	}
	if cfg.QuotaBackendBytes == 0 {
		cfg.QuotaBackendBytes = DefaultQuotaBackendBytes
	}
	if cfg.QuotaBackendBytes < 0 || cfg.QuotaBackendBytes > 100<<30 {
		return nil, fmt.Errorf("coord: --etcd-quota-backend-bytes %d: want 1 byte to 100 GiB (etcd suggests at most 8 GiB)", cfg.QuotaBackendBytes)
	}
	compactMode, compactRetention, err := compaction(cfg.AutoCompactionRetention)
	if err != nil {
		return nil, err
	}
	clientURL, err := listenURL("--etcd-listen-client", cfg.ClientAddr)
	if err != nil {
		return nil, err
	}
	peerURL, err := listenURL("--etcd-listen-peer", cfg.PeerAddr)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("coord: embedded etcd data dir: %w", err)
	}
	dirLock, err := lockDataDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	started := false
	defer func() {
		if !started && dirLock != nil {
			dirLock.Close()
		}
	}()
	// Check both ports first: etcd's own error for a taken port is a wrapped
	// listener error deep in its start-up log.
	for _, a := range []struct{ flag, addr string }{{"--etcd-listen-client", cfg.ClientAddr}, {"--etcd-listen-peer", cfg.PeerAddr}} {
		if err := checkFree(a.addr); err != nil {
			return nil, fmt.Errorf("%w: embedded etcd cannot listen on %s (%s): %v; is another etcd or katonode --embedded-etcd running? choose another address with %s",
				ErrAddrInUse, a.addr, a.flag, err, a.flag)
		}
	}

	ec := embed.NewConfig()
	ec.Name = "kato-embedded"
	ec.Dir = cfg.DataDir
	ec.ListenClientUrls = []url.URL{*clientURL}
	ec.AdvertiseClientUrls = []url.URL{*clientURL}
	ec.ListenPeerUrls = []url.URL{*peerURL}
	ec.AdvertisePeerUrls = []url.URL{*peerURL}
	ec.InitialCluster = ec.Name + "=" + peerURL.String()
	ec.InitialClusterToken = "kato-embedded"
	ec.EnableGRPCGateway = false
	// Keep history and size bounded: without compaction every learn's old
	// revisions stay, and the quota makes a full disk a clear alarm.
	ec.AutoCompactionMode, ec.AutoCompactionRetention = compactMode, compactRetention
	ec.QuotaBackendBytes = cfg.QuotaBackendBytes
	// etcd logs its own warnings; while closing it reports every listener it
	// shuts as an error, which is noise: only fatal entries pass then.
	closing := &atomic.Bool{}
	elg := atLeast(lg.Named("etcd"), zap.WarnLevel).WithOptions(zap.WrapCore(func(c zapcore.Core) zapcore.Core {
		return &quietCore{Core: c, closing: closing}
	}))
	ec.ZapLoggerBuilder = embed.NewZapLoggerBuilder(elg)

	e, err := embed.StartEtcd(ec)
	if err != nil {
		if strings.Contains(err.Error(), "address already in use") {
			return nil, fmt.Errorf("%w: embedded etcd: %v", ErrAddrInUse, err)
		}
		return nil, fmt.Errorf("coord: start embedded etcd in %s: %w", cfg.DataDir, err)
	}
	timer := time.NewTimer(cfg.StartTimeout)
	defer timer.Stop()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("coord: embedded etcd failed while starting: %w", err)
	case <-timer.C:
		e.Close()
		return nil, fmt.Errorf("coord: embedded etcd not ready after %v (data dir %s)", cfg.StartTimeout, cfg.DataDir)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
	lg.Info("embedded etcd ready", zap.String("endpoint", clientURL.String()), zap.String("data-dir", cfg.DataDir))
	started = true
	return &Embedded{etcd: e, endpoint: clientURL.String(), closing: closing, dirLock: dirLock}, nil
}

// Endpoint is the client URL of the member.
func (e *Embedded) Endpoint() string { return e.endpoint }

// Err reports a fatal error of the running member.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops the member gracefully; its data directory can be reused.
func (e *Embedded) Close() {
	e.closing.Store(true)
	e.etcd.Close()
	if e.dirLock != nil {
		e.dirLock.Close()
	}
}

// quietCore drops all but fatal entries once closing is set.
type quietCore struct {
	zapcore.Core
	closing *atomic.Bool
}

func (q *quietCore) Check(ent zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if q.closing.Load() && ent.Level < zapcore.DPanicLevel {
		return ce
	}
	return q.Core.Check(ent, ce)
}

func (q *quietCore) With(fields []zapcore.Field) zapcore.Core {
	return &quietCore{Core: q.Core.With(fields), closing: q.closing}
}

func listenURL(flag, addr string) (*url.URL, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return nil, fmt.Errorf("coord: %s %q: want host:port", flag, addr)
	}
	return &url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}, nil
}

func checkFree(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}
