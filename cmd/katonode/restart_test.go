package main

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// embeddedNode is the argument list of a katonode with its own etcd.
func embeddedNode(t *testing.T, dataDir string, extra ...string) []string {
	t.Helper()
	return append([]string{"run", "--embedded-etcd", "--etcd-data-dir", dataDir,
		"--etcd-listen-client", freeAddr(t), "--etcd-listen-peer", freeAddr(t),
		"--port", "0", "--advertise-host", "127.0.0.1", "--listen-host", "127.0.0.1"}, extra...)
}

// embeddedClient reaches the etcd of a node started with args.
func embeddedClient(t *testing.T, args []string) *clientv3.Client {
	t.Helper()
	var ep string
	for i, a := range args {
		if a == "--etcd-listen-client" {
			ep = args[i+1]
		}
	}
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	coord.Namespace(cli, coord.DefaultPrefix)
	return cli
}

func waitRunning(t *testing.T, ctx context.Context, cli *clientv3.Client, id string) coord.Instance {
	t.Helper()
	var in coord.Instance
	waitFor(t, ctx, func() error {
		var err error
		if in, err = coord.GetInstance(ctx, cli, id); err != nil {
			return err
		}
		if in.Status != coord.StatusRunning {
			return fmt.Errorf("%s is %s", id, in.Status)
		}
		return nil
	})
	return in
}

var nodeIsRe = regexp.MustCompile(`this node is "([^"]+)"`)

// The quick start: a node with its embedded etcd and no --id, killed with -9
// and started again with the same command, comes back under the same id
// (its earlier run's lease, revived with the etcd's data, is taken over at
// once) and finds what it learned.
func TestEmbeddedNodeWithoutIDRestartsAfterKillAndFindsItsModel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	args := embeddedNode(t, dir)
	p := startKatonode(t, args...)
	cli := embeddedClient(t, args)
	var id string
	waitFor(t, ctx, func() error {
		m := nodeIsRe.FindStringSubmatch(p.out.String())
		if m == nil {
			return fmt.Errorf("no id announced yet")
		}
		id = m[1]
		return nil
	})
	if want := coord.DefaultID(coord.Hostname(), dir, coord.DefaultEmbeddedDataDir()); id != want {
		t.Fatalf("default id %q, want %q", id, want)
	}
	in := waitRunning(t, ctx, cli, id)
	if out := p.out.String(); !strings.Contains(out, "list\n") || !strings.Contains(out, "/"+id+"/observe -d") {
		t.Fatalf("the quick-start node does not say what to do next:\n%s", out)
	}
	client := api{t, in.APIURL}
	client.ok("POST", "/"+id+"/observe", obs("hello", "world"))
	client.ok("POST", "/"+id+"/observe", obs("again"))
	name, _ := client.ok("POST", "/"+id+"/learn", "")["message"].(string)
	if !strings.HasPrefix(name, "MODEL|") {
		t.Fatalf("learn answered %q", name)
	}

	for round := 0; round < 2; round++ {
		if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-p.done
		old := p.cmd.Process.Pid
		p = startKatonode(t, args...)
		waitFor(t, ctx, func() error {
			var err error
			if in, err = coord.GetInstance(ctx, cli, id); err != nil {
				return err
			}
			if in.PID == old || in.Status != coord.StatusRunning {
				return fmt.Errorf("record of pid %d is %s, want the new run running", in.PID, in.Status)
			}
			return nil
		})
		if !strings.Contains(p.out.String(), "taking it over") {
			t.Fatalf("round %d: no take-over of the dead run's id in the log:\n%s", round, p.out.String())
		}
		if r := (api{t, in.APIURL}).do("GET", "/"+id+"/model/"+strings.TrimPrefix(name, "MODEL|"), ""); r.code != 200 {
			t.Fatalf("round %d: the learned model is gone after the restart: %d %s", round, r.code, r.body)
		}
	}
}

// On an etcd of its own, a node killed with -9 and started again at once
// waits for its earlier run's lease to expire, saying so, instead of exiting.
func TestNodeRestartedAfterKillWaitsForItsOldLease(t *testing.T) {
	c := newCluster(t)
	a := c.node("--id", "a", "--port", "0", "--ttl", "3s")
	c.waitStatus("a", coord.StatusRunning)
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-a.done
	again := c.node("--id", "a", "--port", "0", "--ttl", "3s")
	waitFor(t, c.ctx, func() error {
		in, err := coord.GetInstance(c.ctx, c.cli, "a")
		if err != nil {
			return err
		}
		if in.PID != again.cmd.Process.Pid || in.Status != coord.StatusRunning {
			return fmt.Errorf("record of pid %d is %s, want the new run's %d running", in.PID, in.Status, again.cmd.Process.Pid)
		}
		return nil
	})
	if out := again.out.String(); !strings.Contains(out, "held by an earlier run that is gone") || !strings.Contains(out, "waiting up to") {
		t.Fatalf("the restarted node did not say what it waits for:\n%s", out)
	}
}

// A second embedded etcd on a data dir in use exits at once naming the pid
// that holds it, instead of hanging in etcd's backend.
func TestEmbeddedDataDirInUse(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	args := embeddedNode(t, dir, "--id", "first")
	first := startKatonode(t, args...)
	waitRunning(t, ctx, embeddedClient(t, args), "first")
	second := startKatonode(t, embeddedNode(t, dir, "--id", "second")...)
	if code := second.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, second.out.String())
	}
	want := fmt.Sprintf("%s is in use by pid %d (another katonode --embedded-etcd)", dir, first.cmd.Process.Pid)
	if !strings.Contains(second.out.String(), want) {
		t.Fatalf("error does not say %q:\n%s", want, second.out.String())
	}
}

// With etcd gone, SIGTERM still stops a node within its drain timeout, and a
// second signal stops it at once.
func TestNodeStopsOnSignalWhateverEtcdDoes(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drain   string
		signals []syscall.Signal
		code    int
		within  time.Duration // after the last signal was seen; generous for a loaded machine
	}{
		{"sigterm within the drain timeout", "2s", []syscall.Signal{syscall.SIGTERM}, -1, 6 * time.Second},
		{"second ctrl-c at once", "5m", []syscall.Signal{syscall.SIGINT, syscall.SIGINT}, 130, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCluster(t)
			p := c.node("--id", "s", "--port", "0", "--drain-timeout", tc.drain)
			c.waitStatus("s", coord.StatusRunning)
			c.etc.Stop(0)
			for _, sig := range tc.signals {
				seen := strings.Count(p.out.String(), "katonode: "+sig.String())
				if err := p.cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				waitFor(t, c.ctx, func() error {
					if strings.Count(p.out.String(), "katonode: "+sig.String()) == seen {
						return fmt.Errorf("signal not seen yet")
					}
					return nil
				})
			}
			code := p.wait(t, tc.within)
			if tc.code >= 0 && code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, p.out.String())
			}
		})
	}
}

// An id held by a record on another host whose lease nobody renews (its
// process died, or lost etcd for good) is waited out, saying so, instead of
// ending the start.
func TestNodeWaitsOutAnOldLeaseOfAnotherHost(t *testing.T) {
	c := newCluster(t)
	lease, err := c.cli.Grant(c.ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := json.Marshal(coord.Instance{V: coord.SchemaVersion, ID: "z", Name: "z", Model: "z", Host: "elsewhere", PID: 1,
		Status: coord.StatusRunning, LeaseID: coord.LeaseHex(lease.ID), StartedAt: time.Now().UTC()})
	if _, err := c.cli.Put(c.ctx, coord.InstanceKey("z"), string(rec), clientv3.WithLease(lease.ID)); err != nil {
		t.Fatal(err)
	}
	// A live holder renews every TTL/3: below 2/3 of the TTL, minus a second, it is old.
	waitFor(t, c.ctx, func() error {
		ttl, err := c.cli.TimeToLive(c.ctx, lease.ID)
		if err != nil {
			return err
		}
		if ttl.TTL >= 3 {
			return fmt.Errorf("lease has %ds left", ttl.TTL)
		}
		return nil
	})
	p := c.node("--id", "z", "--port", "0")
	waitFor(t, c.ctx, func() error {
		in, err := coord.GetInstance(c.ctx, c.cli, "z")
		if err != nil {
			return err
		}
		if in.PID != p.cmd.Process.Pid || in.Status != coord.StatusRunning {
			return fmt.Errorf("z is pid %d, %s", in.PID, in.Status)
		}
		return nil
	})
	if out := p.out.String(); !strings.Contains(out, "has not been renewed for") {
		t.Fatalf("the node did not say why it waited:\n%s", out)
	}
}
