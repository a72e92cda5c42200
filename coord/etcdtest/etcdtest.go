// Package etcdtest starts real etcd servers in-process for tests, with the
// etcd embed package: a single member, or a 3-member cluster whose members can
// be stopped and restarted, with a way to find the leader.
//
// Every server listens on free loopback ports and keeps its data in a
// temporary directory that is removed when the test ends. Server logs are kept
// in memory and written to the test log only when the test fails (or always,
// with KATO_ETCD_LOGS=1 in the environment).
package etcdtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// startTimeout bounds how long a member may take to become ready.
const startTimeout = 30 * time.Second

// closeTimeout bounds how long a member may take to close: etcd's Close
// does not return for a member of a cluster that never formed (the others
// did not start), so a failed start would hang there.
const closeTimeout = 10 * time.Second

// Member is one etcd server of a Cluster.
type Member struct {
	Name      string
	ClientURL url.URL
	PeerURL   url.URL
	Dir       string

	mu   sync.Mutex
	etcd *embed.Etcd // nil while stopped
}

// Cluster is a set of in-process etcd members. Create it with New, NewCluster
// or Start; it is safe for concurrent use.
type Cluster struct {
	Members []*Member

	dir  string
	logs *logBuffer
	lg   *zap.Logger
	// Options used to start each member.
	opts options
	// closeTimeout bounds each member's Close (closeTimeout; tests shorten it).
	closeTimeout time.Duration
}

type options struct {
	autoCompactionRev string // "" = off
	maxRequestBytes   uint   // 0 = etcd's default (1.5 MiB)
	quotaBytes        int64  // 0 = etcd's default (2 GiB)
}

// WithMaxRequestBytes sets every member's --max-request-bytes, the largest
// request (a transaction included) it accepts.
func WithMaxRequestBytes(n uint) Option {
	return func(o *options) { o.maxRequestBytes = n }
}

// WithQuota sets every member's --quota-backend-bytes.
func WithQuota(n int64) Option {
	return func(o *options) { o.quotaBytes = n }
}

// Option changes how members are started.
type Option func(*options)

// WithAutoCompaction makes every member compact its history automatically,
// keeping the given number of revisions.
func WithAutoCompaction(revisions int) Option {
	return func(o *options) { o.autoCompactionRev = fmt.Sprint(revisions) }
}

// New starts a single-member etcd for the test and stops it when the test ends.
func New(t testing.TB, opts ...Option) *Cluster {
	t.Helper()
	return NewCluster(t, 1, opts...)
}

// NewCluster starts a cluster of size members for the test and stops it when the
// test ends. The server logs are written to the test log if the test fails.
func NewCluster(t testing.TB, size int, opts ...Option) *Cluster {
	t.Helper()
	c, err := Start(size, opts...)
	if err != nil {
		t.Fatalf("etcdtest: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() || os.Getenv("KATO_ETCD_LOGS") == "1" {
			t.Logf("etcd server logs (last %d bytes):\n%s", logKeep, c.logs.String())
		}
	})
	return c
}

// Start starts a cluster of size members outside of a test (for TestMain). The
// caller must call Close.
func Start(size int, opts ...Option) (*Cluster, error) {
	if size < 1 {
		return nil, fmt.Errorf("cluster size %d: need at least one member", size)
	}
	dir, err := os.MkdirTemp("", "etcdtest-")
	if err != nil {
		return nil, err
	}
	logs := &logBuffer{}
	c := &Cluster{dir: dir, logs: logs, lg: newLogger(logs), closeTimeout: closeTimeout}
	for _, o := range opts {
		o(&c.opts)
	}
	// Free ports are found by binding port 0 and closing the listener, so another
	// process may take one before etcd binds it. Retry a few times when that happens.
	for attempt := 0; ; attempt++ {
		err = c.startAll(size)
		if err == nil {
			return c, nil
		}
		if serr := c.stopAll(); serr != nil {
			// A member still closing holds its ports and files: do not
			// start again beside it.
			os.RemoveAll(dir)
			return nil, errors.Join(err, serr)
		}
		if attempt == 4 || !isAddrInUse(err) {
			os.RemoveAll(dir)
			return nil, err
		}
	}
}

func (c *Cluster) startAll(size int) error {
	if err := c.newMembers(size); err != nil {
		return err
	}
	// All members must run before any of them can elect a leader.
	for _, m := range c.Members {
		if err := c.launch(m, embed.ClusterStateFlagNew); err != nil {
			return err
		}
	}
	for _, m := range c.Members {
		if err := waitReady(m.server()); err != nil {
			return fmt.Errorf("member %s: %w", m.Name, err)
		}
	}
	return nil
}

// newMembers names size members on free ports, none started.
func (c *Cluster) newMembers(size int) error {
	c.Members = make([]*Member, size)
	for i := range c.Members {
		cport, err := freePort()
		if err != nil {
			return err
		}
		pport, err := freePort()
		if err != nil {
			return err
		}
		name := fmt.Sprintf("m%d", i)
		c.Members[i] = &Member{
			Name:      name,
			ClientURL: url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", cport)},
			PeerURL:   url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", pport)},
			Dir:       fmt.Sprintf("%s/%s-%d", c.dir, name, time.Now().UnixNano()),
		}
	}
	return nil
}

func (c *Cluster) launch(m *Member, state string) error {
	cfg := embed.NewConfig()
	cfg.Name = m.Name
	cfg.Dir = m.Dir
	cfg.ListenClientUrls = []url.URL{m.ClientURL}
	cfg.AdvertiseClientUrls = []url.URL{m.ClientURL}
	cfg.ListenPeerUrls = []url.URL{m.PeerURL}
	cfg.AdvertisePeerUrls = []url.URL{m.PeerURL}
	cfg.InitialCluster = c.initialCluster()
	cfg.InitialClusterToken = "etcdtest"
	cfg.ClusterState = state
	cfg.UnsafeNoFsync = true // tests do not survive power loss; members survive restarts.
	// Password hashing at bcrypt's lowest cost: at the default cost, an
	// authentication under the race detector on a busy machine outlasts
	// etcdctl's timeouts.
	cfg.BcryptCost = 4
	cfg.EnableGRPCGateway = false
	cfg.Metrics = "extensive"
	if c.opts.autoCompactionRev != "" {
		cfg.AutoCompactionMode = embed.CompactorModeRevision
		cfg.AutoCompactionRetention = c.opts.autoCompactionRev
	}
	if c.opts.maxRequestBytes > 0 {
		cfg.MaxRequestBytes = c.opts.maxRequestBytes
	}
	if c.opts.quotaBytes > 0 {
		cfg.QuotaBackendBytes = c.opts.quotaBytes
	}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(c.lg.Named(m.Name))
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("start member %s: %w", m.Name, err)
	}
	m.mu.Lock()
	m.etcd = e
	m.mu.Unlock()
	return nil
}

func (c *Cluster) initialCluster() string {
	parts := make([]string, len(c.Members))
	for i, m := range c.Members {
		parts[i] = m.Name + "=" + m.PeerURL.String()
	}
	return strings.Join(parts, ",")
}

func waitReady(s *etcdserver.EtcdServer) error {
	select {
	case <-s.ReadyNotify():
		return nil
	case <-s.StopNotify():
		return errors.New("server stopped before it was ready")
	case <-time.After(startTimeout):
		return fmt.Errorf("not ready after %v", startTimeout)
	}
}

// Endpoints returns the client URLs of all members, stopped ones included.
func (c *Cluster) Endpoints() []string {
	eps := make([]string, len(c.Members))
	for i, m := range c.Members {
		eps[i] = m.ClientURL.String()
	}
	return eps
}

// Client returns a client connected to every member; it is closed when the test ends.
func (c *Cluster) Client(t testing.TB) *clientv3.Client {
	t.Helper()
	cli, err := c.NewClient()
	if err != nil {
		t.Fatalf("etcdtest: client: %v", err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// NewClient returns a client connected to every member; the caller closes it.
func (c *Cluster) NewClient() (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints(),
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
}

// Server returns the etcd server of member i, or nil while it is stopped. Tests
// use it to read the server's own counters.
func (c *Cluster) Server(i int) *etcdserver.EtcdServer {
	return c.Members[i].server()
}

func (m *Member) server() *etcdserver.EtcdServer {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.etcd == nil {
		return nil
	}
	return m.etcd.Server
}

// Stop stops member i; its data directory is kept for Restart. A member
// that does not close within closeTimeout is left closing, and that is
// written to the server log.
func (c *Cluster) Stop(i int) {
	if err := c.stop(i); err != nil {
		c.lg.Error("etcdtest: stop", zap.Error(err))
	}
}

func (c *Cluster) stop(i int) error {
	m := c.Members[i]
	m.mu.Lock()
	e := m.etcd
	m.etcd = nil
	m.mu.Unlock()
	if e == nil {
		return nil
	}
	// Close cannot be interrupted: one that outlasts the bound is left to
	// end by itself (the process's end at the latest).
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		e.Close()
	}()
	t := time.NewTimer(c.closeTimeout)
	defer t.Stop()
	select {
	case <-closed:
		return nil
	case <-t.C:
		return fmt.Errorf("member %s did not close within %v; left closing", m.Name, c.closeTimeout)
	}
}

// Restart starts member i again on its old ports and data directory and waits
// until it has rejoined the cluster.
func (c *Cluster) Restart(i int) error {
	m := c.Members[i]
	if m.server() != nil {
		return fmt.Errorf("member %s is running", m.Name)
	}
	if err := c.launch(m, embed.ClusterStateFlagExisting); err != nil {
		return err
	}
	return waitReady(m.server())
}

// Leader returns the index of the member that the running members agree is the
// leader, waiting until ctx ends for an election to finish.
func (c *Cluster) Leader(ctx context.Context) (int, error) {
	for {
		if i, ok := c.agreedLeader(); ok {
			return i, nil
		}
		select {
		case <-ctx.Done():
			return -1, fmt.Errorf("no leader: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func (c *Cluster) agreedLeader() (int, bool) {
	var lead uint64
	for _, m := range c.Members {
		s := m.server()
		if s == nil {
			continue
		}
		l := s.Lead()
		if l == 0 || (lead != 0 && l != lead) {
			return -1, false
		}
		lead = l
	}
	for i, m := range c.Members {
		if s := m.server(); s != nil && uint64(s.MemberID()) == lead {
			return i, true
		}
	}
	return -1, false
}

// Close stops every member and removes the data directories. A member that
// does not close within closeTimeout is left closing, and that is written
// to the server log.
func (c *Cluster) Close() {
	if err := c.stopAll(); err != nil {
		c.lg.Error("etcdtest: close", zap.Error(err))
	}
	os.RemoveAll(c.dir)
}

// stopAll stops every member, each within closeTimeout, and says which did
// not close in time.
func (c *Cluster) stopAll() error {
	var errs []error
	for i := range c.Members {
		if c.Members[i] != nil {
			errs = append(errs, c.stop(i))
		}
	}
	return errors.Join(errs...)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func isAddrInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// logKeep is how many bytes of server log a cluster keeps.
const logKeep = 256 << 10

// logBuffer keeps the last logKeep bytes written to it.
type logBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - logKeep; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
	}
	return len(p), nil
}

func (b *logBuffer) Sync() error { return nil }

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}

func newLogger(w *logBuffer) *zap.Logger {
	enc := zap.NewDevelopmentEncoderConfig()
	core := zapcore.NewCore(zapcore.NewConsoleEncoder(enc), zapcore.AddSync(w), zap.InfoLevel)
	return zap.New(core)
}
