//go:build linux

package node

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord/etcdtest"
)

// A killed process its parent has not reaped yet (a zombie) is not alive:
// a node restarted from a shell that has not reaped the killed one must not
// take its old pid for a live holder.
func TestPidAliveZombieIsDead(t *testing.T) {
	if !pidAlive(os.Getpid()) {
		t.Fatal("this process is not alive")
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Skipf("no sleep binary: %v", err)
	}
	pid := cmd.Process.Pid
	if !pidAlive(pid) {
		t.Fatal("a running child is not alive")
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool { return !pidAlive(pid) }, "a killed, unreaped child counts as dead")
	cmd.Wait()
	if pidAlive(pid) {
		t.Fatal("a reaped child counts as alive")
	}
}
