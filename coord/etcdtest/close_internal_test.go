// Tests that closing members is bounded when a cluster never formed.
package etcdtest

import (
	"os"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// A 3-member start whose second member fails leaves the first waiting for
// its peers, and etcd's Close of it does not return (it hung Start). The
// stop after a failed start is bounded and names the member left closing.
func TestStopAfterFailedStartIsBounded(t *testing.T) {
	dir, err := os.MkdirTemp("", "etcdtest-close-")
	if err != nil {
		t.Fatal(err)
	}
	// Not t.TempDir: the member left closing may still write there.
	defer os.RemoveAll(dir)
	logs := &logBuffer{}
	c := &Cluster{dir: dir, logs: logs, lg: newLogger(logs), closeTimeout: time.Second}
	if err := c.newMembers(3); err != nil {
		t.Fatal(err)
	}
	if err := c.launch(c.Members[0], embed.ClusterStateFlagNew); err != nil {
		t.Fatal(err)
	}
	// What Start does when member m1 cannot launch.
	start := time.Now()
	err = c.stopAll()
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "member m0 did not close within 1s") {
		t.Fatalf("stop of a member whose cluster never formed: %v, want it named as left closing", err)
	}
	// A bound for the test, not a speed goal: the close timeout plus room.
	if took > 10*time.Second {
		t.Fatalf("stop took %v with a close timeout of 1s", took)
	}
}
