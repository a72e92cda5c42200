// This file holds the fault-injection tests and their TestMain: the short run
// CI makes, the long run, and the check that broken fencing is caught.

package faults

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var long = flag.Bool("faults.long", false, "run TestFaultsLong: KATO_FAULTS_DURATION of faults (default 30m)")

// The nodes of every run: two models, a holder and a standby each.
var testNodes = []NodeSpec{{"n1", "ma"}, {"n2", "ma"}, {"n3", "mb"}, {"n4", "mb"}}

const testTTL = 4 * time.Second

// needHosts skips a test where this machine cannot make test hosts.
func needHosts(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("fault injection runs for minutes; skipped with -short")
	}
	if err := CanRun(); err != nil {
		t.Skipf("fault injection needs test hosts in network namespaces: %v", err)
	}
}

// Binaries are built once per test binary, into a directory removed by TestMain.
var (
	buildMu  sync.Mutex
	buildDir string
	built    = map[string]string{}
)

func TestMain(m *testing.M) {
	flag.Parse()
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// binary returns katonode built with tags ("" for the real build), or etcd
// for "etcd".
func binary(t *testing.T, what string) string {
	t.Helper()
	buildMu.Lock()
	defer buildMu.Unlock()
	if p, ok := built[what]; ok {
		return p
	}
	root, err := ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	if buildDir == "" {
		removeStaleBuilds()
		if buildDir, err = os.MkdirTemp("", fmt.Sprintf("kfault-bin-%d-", os.Getpid())); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start := time.Now()
	var p string
	if what == "etcd" {
		p, err = BuildEtcd(ctx, root, buildDir)
	} else {
		p, err = BuildKatonode(ctx, root, buildDir, what)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %v", filepath.Base(p), time.Since(start).Round(time.Millisecond))
	built[what] = p
	return p
}

// removeStaleBuilds removes the build directories of test binaries that
// were killed before TestMain could (kfault-bin-<pid>-*, pid gone).
func removeStaleBuilds() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "kfault-bin-*-*"))
	for _, d := range dirs {
		pidStr, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(d), "kfault-bin-"), "-")
		if pid, err := strconv.Atoi(pidStr); err == nil && pid != os.Getpid() && !processAlive(pid) {
			os.RemoveAll(d)
		}
	}
}

// startCluster starts the test cluster with the katonode built with tags. Its
// data and logs are kept, and named in the test log, when the test fails.
func startCluster(t *testing.T, tags string) *Cluster {
	t.Helper()
	katonode, etcd := binary(t, tags), binary(t, "etcd")
	dir, err := os.MkdirTemp("", fmt.Sprintf("kfault-run-%d-", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := Start(ctx, Config{Dir: dir, Katonode: katonode, Etcd: etcd, Nodes: testNodes, TTL: testTTL, Logf: t.Logf,
		EtcdLogLevel: os.Getenv("KATO_FAULTS_ETCD_LOG_LEVEL"), NodeLogLevel: os.Getenv("KATO_FAULTS_NODE_LOG_LEVEL")})
	if err != nil {
		os.RemoveAll(dir)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		if t.Failed() {
			t.Logf("logs and data of the run kept in %s", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return c
}

// seed is KATO_FAULTS_SEED, or a new one.
func seed(t *testing.T) uint64 {
	t.Helper()
	if s := os.Getenv("KATO_FAULTS_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("KATO_FAULTS_SEED=%q: %v", s, err)
		}
		return v
	}
	return uint64(time.Now().UnixNano())
}

// duration is KATO_FAULTS_DURATION, or def.
func duration(t *testing.T, def time.Duration) time.Duration {
	t.Helper()
	if s := os.Getenv("KATO_FAULTS_DURATION"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			t.Fatalf("KATO_FAULTS_DURATION=%q: %v", s, err)
		}
		return d
	}
	return def
}

// summarize logs line and appends it, after the test's name, to
// KATO_FAULTS_SUMMARY: a file .ci/run prints, as go test shows no output of
// passing tests.
func summarize(t *testing.T, line string) {
	t.Helper()
	t.Log(line)
	if path := os.Getenv("KATO_FAULTS_SUMMARY"); path != "" {
		if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintf(f, "%s: %s\n", t.Name(), line)
			f.Close()
		}
	}
}

// report summarizes a run and fails the test for each violation.
func report(t *testing.T, res *Result) {
	t.Helper()
	summarize(t, res.Summary())
	for i, v := range res.Report.Violations {
		if i == 50 {
			t.Errorf("... and %d more violations", len(res.Report.Violations)-i)
			break
		}
		t.Errorf("violation: %s", v)
	}
}

func runFaults(t *testing.T, d time.Duration) {
	c := startCluster(t, "")
	s := seed(t)
	t.Logf("seed %d (replay with KATO_FAULTS_SEED=%d), %v of faults", s, s, d)
	ctx, cancel := context.WithTimeout(context.Background(), d+10*time.Minute)
	defer cancel()
	res, err := Run(ctx, c, RunConfig{Duration: d, Seed: s, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	report(t, res)
}

// TestFaultsShort is the run CI makes: a few minutes of faults of every kind
// against four nodes and three etcd members on hosts of their own, with every
// workload checked (check_test.go, Check).
func TestFaultsShort(t *testing.T) {
	needHosts(t)
	if *long {
		t.Skip("-faults.long: TestFaultsLong runs instead")
	}
	runFaults(t, duration(t, 150*time.Second))
}

// TestFaultsLong is the long run: go test ./deployments/faults -run Long -faults.long
// -timeout 2h (KATO_FAULTS_DURATION, default 30m; KATO_FAULTS_SEED replays).
func TestFaultsLong(t *testing.T) {
	if !*long {
		t.Skip("the long fault run needs -faults.long")
	}
	needHosts(t)
	runFaults(t, duration(t, 30*time.Minute))
}

// TestBrokenFencingIsCaught runs the same scenario against the real katonode
// and one built with kato_nofence (no fence compare in model writes): twice, a
// model's holder stops hearing from etcd, an admin breaks its lock (the
// standby takes over), and clients send the old holder learns at once. The
// old holder does not know it lost the lock, so its first write goes to etcd;
// only the fence compare keeps it out. The checker must find that write in
// the broken build and nothing wrong in the real one. (Without fencing the
// two writers can also leave the model in a state no node loads again: then
// the checker reports that as well, and the test still asks only for the
// writes.)
func TestBrokenFencingIsCaught(t *testing.T) {
	needHosts(t)
	for _, tc := range []struct {
		name, tags string
		broken     bool
	}{{"fenced", "", false}, {"kato_nofence", "kato_nofence", true}} {
		t.Run(tc.name, func(t *testing.T) {
			c := startCluster(t, tc.tags)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			res, err := Run(ctx, c, RunConfig{Duration: time.Hour, Faults: 2, Seed: seed(t), Weights: map[string]int{FaultBreak: 1}, Logf: t.Logf})
			if err != nil {
				t.Fatal(err)
			}
			if !tc.broken {
				report(t, res)
				return
			}
			var fencing []string
			for _, v := range res.Report.Violations {
				t.Logf("caught: %s", v)
				if v.Check == "fencing" {
					fencing = append(fencing, v.Detail)
				}
			}
			if len(fencing) == 0 {
				t.Fatalf("with fencing off, the checker found no write made without the lock: %s", res.Summary())
			}
			summarize(t, fmt.Sprintf("caught %d writes made without the lock in %d breaks (%d violations in all), e.g. %s",
				len(fencing), len(res.Input.Faults), len(res.Report.Violations), fencing[0]))
		})
	}
}
