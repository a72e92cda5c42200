package coord_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// BenchmarkSessionEtcdCPU measures what idle sessions cost etcd: the CPU
// time of an etcd process (this test binary re-run as a single etcd member)
// per minute while N sessions only renew their leases, with and without etcd
// auth, for the renewal of before issue 18 (a KeepAliveOnce, so a new stream,
// per renewal) and for coord.Session (the sessions of a client sharing its
// coord.KeepAlives, so one long-lived stream per client), in one run on one
// machine. Run it with
//
//	go test ./coord/ -run '^$' -bench SessionEtcdCPU -benchtime 1x
//
// KATO_SESSION_BENCH_SECONDS sets the measuring window (default 20),
// KATO_SESSION_BENCH_N the session counts (default "3,10000") and
// KATO_SESSION_BENCH_AUTH which auth cases run (both, off, on); N = 3 uses
// TTL 3 s, larger N TTL 10 s (the cases of the issue). Linux only (it reads
// /proc/<pid>/stat).
func BenchmarkSessionEtcdCPU(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads the etcd process's CPU time from /proc")
	}
	window := 20 * time.Second
	if v := os.Getenv("KATO_SESSION_BENCH_SECONDS"); v != "" {
		d, err := time.ParseDuration(v + "s")
		if err != nil {
			b.Fatalf("KATO_SESSION_BENCH_SECONDS=%q: %v", v, err)
		}
		window = d
	}
	counts := []int{3, 10000}
	if v := os.Getenv("KATO_SESSION_BENCH_N"); v != "" {
		counts = nil
		for _, f := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("KATO_SESSION_BENCH_N=%q: %q is not a count", v, f)
			}
			counts = append(counts, n)
		}
	}
	type row struct {
		n             int
		ttl           time.Duration
		auth          bool
		cost          int     // bcrypt cost of etcd's password hashes (auth only)
		before, after float64 // etcd CPU-seconds per minute; before < 0: not measured
		checksBefore  float64 // password checks per minute in each window
		checksAfter   float64
		lost          int // sessions lost by the end of the after window
		reopened      int // session opens that failed and were tried again
	}
	var rows []row
	for b.Loop() {
		rows = rows[:0]
		for _, n := range counts {
			ttl := 10 * time.Second
			if n <= 3 {
				ttl = 3 * time.Second
			}
			for _, auth := range benchAuth(b) {
				r := row{n: n, ttl: ttl, auth: auth, before: -1}
				if auth {
					r.cost = 10 // etcd's default (bcrypt.DefaultCost)
				}
				if !auth || n <= manyChecks {
					// With auth the old design needs n/(TTL/3) password
					// checks a second, more than this machine does for
					// many sessions: not measured. The sessions open one
					// stream per client, so one check each.
					r.before, r.checksBefore, _, _ = measureIdleSessions(b, n, ttl, r.cost, window, false)
				}
				r.after, r.checksAfter, r.lost, r.reopened = measureIdleSessions(b, n, ttl, r.cost, window, true)
				rows = append(rows, r)
			}
		}
	}
	var out strings.Builder
	fmt.Fprintf(&out, "etcd CPU-seconds per minute for N idle sessions (%v window each, %d CPUs; before: a new keep-alive stream per renewal, after: one KeepAlives (long-lived streams) per client; checks: password checks per minute in each window; lost: sessions lost by the end of the after window)\n", window, runtime.NumCPU())
	fmt.Fprintf(&out, "%-7s %-5s %-7s %10s %10s %12s %14s %6s\n", "N", "TTL", "AUTH", "BEFORE", "AFTER", "AFTER/BEFORE", "CHECKS B / A", "LOST")
	for _, r := range rows {
		auth := "no"
		if r.auth {
			auth = fmt.Sprintf("cost%d", r.cost)
		}
		before, ratio, checks := "-", "-", fmt.Sprintf("- / %.0f", r.checksAfter)
		if r.before >= 0 {
			before, ratio = fmt.Sprintf("%.2f", r.before), fmt.Sprintf("%.2f", r.after/r.before)
			checks = fmt.Sprintf("%.0f / %.0f", r.checksBefore, r.checksAfter)
		}
		fmt.Fprintf(&out, "%-7d %-5v %-7s %10s %10.2f %12s %14s %6d\n", r.n, r.ttl, auth, before, r.after, ratio, checks, r.lost)
	}
	for _, r := range rows {
		if r.reopened > 0 {
			fmt.Fprintf(&out, "N=%d, auth %v: %d session opens failed and were tried again\n", r.n, r.auth, r.reopened)
		}
	}
	for i := 0; i+1 < len(rows); i++ {
		if off, on := rows[i], rows[i+1]; off.n == on.n && !off.auth && on.auth {
			fmt.Fprintf(&out, "N=%d, with auth / without: after %.2f", off.n, on.after/off.after)
			if on.before >= 0 {
				fmt.Fprintf(&out, ", before %.2f", on.before/off.before)
			}
			fmt.Fprintln(&out)
		}
	}
	b.Log("\n" + out.String())
}

// manyChecks is the session count above which the benchmark does not
// measure the old design with auth (see BenchmarkSessionEtcdCPU).
const manyChecks = 100

// benchAuth is KATO_SESSION_BENCH_AUTH: "both" (default), "off" or "on".
func benchAuth(b *testing.B) []bool {
	switch v := os.Getenv("KATO_SESSION_BENCH_AUTH"); v {
	case "", "both":
		return []bool{false, true}
	case "off":
		return []bool{false}
	case "on":
		return []bool{true}
	default:
		b.Fatalf("KATO_SESSION_BENCH_AUTH=%q: want both, off or on", v)
		return nil
	}
}

// measureIdleSessions starts a fresh etcd process (with auth when
// bcryptCost > 0), opens n leases of ttl renewed the new way (coord.Session)
// or the old way, lets them idle for the window and returns etcd's
// CPU-seconds and password checks per minute over it, and how many
// sessions were lost by its end (while opening or idle; the old design
// does not tell), and how many session opens failed and were tried again.
func measureIdleSessions(b *testing.B, n int, ttl time.Duration, bcryptCost int, window time.Duration, sessions bool) (cpu, checks float64, lost, reopened int) {
	b.Helper()
	auth := bcryptCost > 0
	etcd := startEtcdProcess(b, bcryptCost)
	defer etcd.stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := clientv3.Config{Endpoints: []string{etcd.endpoint}, DialTimeout: 10 * time.Second, Logger: zap.NewNop()}
	if auth {
		enableAuth(b, ctx, cfg)
		cfg.Username, cfg.Password = "root", benchPassword
	}
	// A client per 1,000 sessions, as nodes of a few processes would have,
	// and its KeepAlives, closed after its sessions.
	nclients := (n + 999) / 1000
	clients := make([]*clientv3.Client, nclients)
	kas := make([]*coord.KeepAlives, nclients)
	for i := range clients {
		cli, err := clientv3.New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer cli.Close()
		clients[i] = cli
		kas[i] = coord.NewKeepAlives(cli, zap.NewNop())
		defer kas[i].Close()
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	type opened struct {
		s   *coord.Session
		exp time.Time // the deadline before the first renewal
		err error
	}
	open := make(chan opened, n)
	var retries atomic.Int64
	opening := make(chan struct{}, 64) // nodes do not all start at the same instant
	for i := 0; i < n; i++ {
		cli, ka := clients[i%nclients], kas[i%nclients]
		wg.Add(1)
		opening <- struct{}{}
		go func() {
			defer wg.Done()
			if sessions {
				// A node whose session does not open tries again; so
				// does the benchmark, a few times, and counts it.
				s, err := coord.NewSession(ctx, cli, zap.NewNop(), coord.WithTTL(ttl), coord.WithKeepAlives(ka))
				for try := 1; err != nil && try < 3 && ctx.Err() == nil; try++ {
					retries.Add(1)
					s, err = coord.NewSession(ctx, cli, zap.NewNop(), coord.WithTTL(ttl), coord.WithKeepAlives(ka))
				}
				<-opening
				if err != nil {
					open <- opened{err: err}
					return
				}
				open <- opened{s: s, exp: s.ExpiresAt()}
				<-ctx.Done()
				s.Close(context.Background())
				return
			}
			resp, err := cli.Grant(ctx, int64(ttl/time.Second))
			<-opening
			open <- opened{err: err}
			if err != nil {
				return
			}
			renewOncePerInterval(ctx, cli, resp.ID, ttl/3)
		}()
	}
	var all []opened
	for i := 0; i < n; i++ {
		o := <-open
		if o.err != nil {
			b.Fatalf("open session %d of %d: %v", i, n, o.err)
		}
		all = append(all, o)
	}
	// Measure the idle state: once every session renewed over its client's
	// stream (opening it is a password check with auth), and a renewal
	// interval on.
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for _, o := range all {
		for o.s != nil && !o.s.ExpiresAt().After(o.exp) && o.s.Err() == nil {
			<-tick.C
		}
	}
	settle := time.NewTimer(ttl / 3)
	<-settle.C
	start, checked, t0 := etcd.cpu(b), etcd.passwordChecks(b), time.Now()
	end := time.NewTimer(window)
	<-end.C
	used, took := etcd.cpu(b)-start, time.Since(t0)
	checks = float64(etcd.passwordChecks(b)-checked) * float64(time.Minute) / float64(took)
	why := map[string]int{}
	for _, o := range all {
		if o.s != nil && o.s.Err() != nil {
			lost++
			why[o.s.Err().Error()]++
		}
	}
	for err, k := range why {
		b.Logf("N=%d, auth %v: %d sessions lost: %s", n, auth, k, err)
	}
	return used.Seconds() * float64(time.Minute) / float64(took), checks, lost, int(retries.Load())
}

// renewOncePerInterval renews lease id the way sessions did before issue 18:
// one KeepAliveOnce (a new stream) every interval.
func renewOncePerInterval(ctx context.Context, cli *clientv3.Client, id clientv3.LeaseID, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, interval)
		cli.KeepAliveOnce(rctx, id)
		cancel()
	}
}

const benchPassword = "bench-password"

// enableAuth turns on etcd auth with a root user.
func enableAuth(b *testing.B, ctx context.Context, cfg clientv3.Config) {
	b.Helper()
	cli, err := clientv3.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	if _, err := cli.UserAdd(ctx, "root", benchPassword); err != nil {
		b.Fatal(err)
	}
	if _, err := cli.UserGrantRole(ctx, "root", "root"); err != nil {
		b.Fatal(err)
	}
	if _, err := cli.AuthEnable(ctx); err != nil {
		b.Fatal(err)
	}
}

// etcdProcess is this test binary re-run as an etcd member (see TestMain).
type etcdProcess struct {
	cmd      *exec.Cmd
	endpoint string
	done     chan struct{}
}

// benchEtcdEnv names the data directory of a re-run test binary that is to
// be an etcd member; benchEtcdClient and benchEtcdPeer its addresses.
const (
	benchEtcdEnv    = "KATO_BENCH_ETCD_DIR"
	benchEtcdClient = "KATO_BENCH_ETCD_CLIENT"
	benchEtcdPeer   = "KATO_BENCH_ETCD_PEER"
	benchEtcdBcrypt = "KATO_BENCH_ETCD_BCRYPT"
)

// startEtcdProcess starts an etcd member process; bcryptCost is the cost of
// the password hashes it makes (0: etcd's default).
func startEtcdProcess(b *testing.B, bcryptCost int) *etcdProcess {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	client, peer := freeAddr(b), freeAddr(b)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), benchEtcdEnv+"="+filepath.Join(b.TempDir(), "etcd"), benchEtcdClient+"="+client, benchEtcdPeer+"="+peer)
	if bcryptCost > 0 {
		cmd.Env = append(cmd.Env, benchEtcdBcrypt+"="+strconv.Itoa(bcryptCost))
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if _, err := cmd.StdinPipe(); err != nil { // closed when we go: the member stops
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	p := &etcdProcess{cmd: cmd, endpoint: client, done: make(chan struct{})}
	ready := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "ready" {
				ready <- nil
			}
		}
		ready <- errors.New("etcd process ended before it was ready")
	}()
	go func() { cmd.Wait(); close(p.done) }()
	select {
	case err := <-ready:
		if err != nil {
			b.Fatal(err)
		}
	case <-time.After(time.Minute):
		p.stop()
		b.Fatal("etcd process not ready within a minute")
	}
	return p
}

func (p *etcdProcess) stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// cpu returns the process's user + system CPU time so far.
func (p *etcdProcess) cpu(b *testing.B) time.Duration {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		b.Fatal(err)
	}
	// Fields after the command name (which ends with the last ')'): state is
	// field 3, utime 14, stime 15, in clock ticks of 1/100 s.
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+1:]))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		b.Fatalf("cannot read CPU times from /proc/%d/stat", p.cmd.Process.Pid)
	}
	return time.Duration(utime+stime) * 10 * time.Millisecond
}

// passwordChecks returns how many Authenticate calls (each a bcrypt
// password check) the member has taken, from its /metrics.
func (p *etcdProcess) passwordChecks(b *testing.B) int64 {
	b.Helper()
	resp, err := http.Get("http://" + p.endpoint + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	var total int64
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "grpc_server_started_total{") || !strings.Contains(line, `grpc_method="Authenticate"`) {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			b.Fatalf("metrics line %q: %v", line, err)
		}
		total += int64(v)
	}
	if err := sc.Err(); err != nil {
		b.Fatal(err)
	}
	return total
}

func freeAddr(b *testing.B) string {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// runBenchEtcd is TestMain's branch for a re-run test binary that is to be
// an etcd member: it serves until stdin closes or SIGTERM, then exits. It
// is a plain embed.Etcd (what coord.StartEmbedded starts, without its
// bounds) so that the bcrypt cost can be set (benchEtcdBcrypt).
func runBenchEtcd(dir string) int {
	ctx, stop := signalContext()
	defer stop()
	client, err := url.Parse("http://" + os.Getenv(benchEtcdClient))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench etcd:", err)
		return 1
	}
	peer, err := url.Parse("http://" + os.Getenv(benchEtcdPeer))
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench etcd:", err)
		return 1
	}
	ec := embed.NewConfig()
	ec.Name, ec.Dir = "bench", dir
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	ec.InitialCluster = ec.Name + "=" + peer.String()
	ec.LogLevel = "fatal" // closing, it reports every listener it shuts as an error
	if v := os.Getenv(benchEtcdBcrypt); v != "" {
		cost, err := strconv.Atoi(v)
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench etcd: bcrypt cost:", err)
			return 1
		}
		ec.BcryptCost = uint(cost)
	}
	e, err := embed.StartEtcd(ec)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench etcd:", err)
		return 1
	}
	defer e.Close()
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		fmt.Fprintln(os.Stderr, "bench etcd:", err)
		return 1
	case <-ctx.Done():
		return 1
	}
	fmt.Println("ready")
	go func() {
		buf := make([]byte, 1)
		for {
			if _, err := os.Stdin.Read(buf); err != nil {
				stop()
				return
			}
		}
	}()
	<-ctx.Done()
	return 0
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
}
