// This file holds the package's TestMain: one in-process etcd shared by every
// test (each under a prefix of its own), and, after the tests, no goroutine
// any of them started still running (goleak).

package coord_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// testEtcd is the single-member etcd shared by the tests of this package; each
// test works under its own key prefix (see newClient).
var testEtcd *etcdtest.Cluster

func TestMain(m *testing.M) {
	if dir := os.Getenv(benchEtcdEnv); dir != "" {
		os.Exit(runBenchEtcd(dir))
	}
	c, err := etcdtest.Start(1)
	if err != nil {
		fmt.Fprintln(os.Stderr, "start etcd:", err)
		os.Exit(1)
	}
	testEtcd = c
	code := m.Run()
	c.Close()
	if code == 0 {
		// Every goroutine a test started has stopped once the tests and
		// the shared etcd have.
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

var prefixSeq atomic.Int64

// newClient returns a client of the shared etcd confined to a prefix of its own
// for this test ("/t/<n>-<test name>/"); it is closed when the test ends.
func newClient(t testing.TB) *clientv3.Client {
	t.Helper()
	return newClientOn(t, testEtcd, testPrefix(t))
}

func testPrefix(t testing.TB) string {
	name := strings.NewReplacer("/", "_", " ", "_").Replace(t.Name())
	return fmt.Sprintf("/t/%d-%s/", prefixSeq.Add(1), name)
}

// newClientOn returns a client of cluster c confined to prefix.
func newClientOn(t testing.TB, c *etcdtest.Cluster, prefix string) *clientv3.Client {
	t.Helper()
	cli := c.Client(t)
	coord.Namespace(cli, prefix)
	return cli
}

// proxiedClient returns a client of the shared etcd that reaches it through a
// proxy the test can cut, confined to prefix.
func proxiedClient(t *testing.T, prefix string) (*clientv3.Client, *etcdtest.Proxy) {
	t.Helper()
	proxy := etcdtest.NewProxy(t, testEtcd.Members[0].ClientURL.Host)
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{proxy.Endpoint()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	coord.Namespace(cli, prefix)
	return cli, proxy
}

// stopLeader stops cluster c's leader and waits until the other members
// have elected a new one.
func stopLeader(t testing.TB, ctx context.Context, c *etcdtest.Cluster) {
	t.Helper()
	leader, err := c.Leader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c.Stop(leader)
	if _, err := c.Leader(ctx); err != nil {
		t.Fatal(err)
	}
}
