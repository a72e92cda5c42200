package main

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/kato-coord/kato/cmd/internal/cliutil/clitest"
	"github.com/kato-coord/kato/coord"
)

// katoctl stop --all, with the etcd embedded in one of the nodes: the others
// are stopped first and seen to go, then that one; all exit 0 and katoctl
// does too.
func TestKatoctlStopAllWithEmbeddedEtcd(t *testing.T) {
	ctl := clitest.BuildKatoctl(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := embeddedNode(t, t.TempDir(), "--id", "e")
	ep := args[5] // --etcd-listen-client
	cli := embeddedClient(t, args)
	procs := map[string]*proc{"e": startKatonode(t, args...)}
	waitRunning(t, ctx, cli, "e")
	for _, id := range []string{"x", "y"} {
		procs[id] = startKatonode(t, "run", "--endpoints", ep, "--id", id, "--port", "0",
			"--advertise-host", "127.0.0.1", "--listen-host", "127.0.0.1")
		waitRunning(t, ctx, cli, id)
	}
	out, err := exec.CommandContext(ctx, ctl, "stop", "--all", "--endpoints", ep, "--timeout", "20s").CombinedOutput()
	if err != nil {
		t.Fatalf("katoctl stop --all: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[2], "stopped e") {
		t.Fatalf("katoctl stop --all said:\n%s\nwant x and y stopped, then e", out)
	}
	for id, p := range procs {
		if code := p.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("%s exited %d:\n%s", id, code, p.out.String())
		}
	}
}

// katoctl stop --force revokes the lease at once, and the process, which
// registers again, finds the stop message and stops: it does not come back.
func TestKatoctlStopForceStopsTheProcess(t *testing.T) {
	c := newCluster(t)
	ctl := clitest.BuildKatoctl(t)
	p := c.node("--id", "f", "--port", "0")
	c.waitStatus("f", coord.StatusRunning)
	out, err := exec.CommandContext(c.ctx, ctl, "stop", "--force", "f", "--endpoints", strings.Join(c.etc.Endpoints(), ",")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "revoked lease") {
		t.Fatalf("katoctl stop --force: %v\n%s", err, out)
	}
	if code := p.wait(t, 30*time.Second); code != 0 {
		t.Fatalf("f exited %d:\n%s", code, p.out.String())
	}
	if _, err := coord.GetInstance(c.ctx, c.cli, "f"); !errors.Is(err, coord.ErrNotFound) {
		t.Fatalf("f is registered after it exited: %v", err)
	}
}

// The stop message that stop --force leaves for a crashed node does not stop
// the node started next under the same id.
func TestStopMessageForAnEarlierRunIsIgnored(t *testing.T) {
	c := newCluster(t)
	ctl := clitest.BuildKatoctl(t)
	p := c.node("--id", "g", "--port", "0")
	c.waitStatus("g", coord.StatusRunning)
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	out, err := exec.CommandContext(c.ctx, ctl, "stop", "--force", "g", "--endpoints", strings.Join(c.etc.Endpoints(), ",")).CombinedOutput()
	if err != nil {
		t.Fatalf("katoctl stop --force: %v\n%s", err, out)
	}
	again := c.node("--id", "g", "--port", "0")
	c.waitStatus("g", coord.StatusRunning)
	waitFor(t, c.ctx, func() error {
		if !strings.Contains(again.out.String(), "ignoring a stop message sent before this process registered") {
			return errors.New("the old stop message was not seen yet")
		}
		return nil
	})
	select {
	case <-again.done:
		t.Fatalf("the new run stopped:\n%s", again.out.String())
	default:
	}
}
