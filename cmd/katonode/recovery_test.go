package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// etcd killed for longer than the TTL and started again: every node logs the
// outage once when it starts and once when it ends, both nodes are back
// (one running, one standby) soon after etcd answers, a client of the
// standby is served again, and nothing acknowledged is lost.
func TestRecoveryAfterEtcdComesBack(t *testing.T) {
	c := newCluster(t)
	const ttl = 5 * time.Second
	a, b, _, rb := c.holderAndStandby("m", ttl)
	procs := map[string]*proc{"a": a, "b": b}
	client := api{t, rb.APIURL}
	client.ok("POST", "/m/observe", obs("before", "outage"))
	client.ok("POST", "/m/observe", obs("second"))
	name, _ := client.ok("POST", "/m/learn", "")["message"].(string)

	c.etc.Stop(0)
	for id, p := range procs {
		waitFor(t, c.ctx, func() error {
			out := p.out.String()
			if !strings.Contains(out, "etcd unreachable") || !strings.Contains(out, "session lost") {
				return fmt.Errorf("%s has not seen the outage and lost its session yet", id)
			}
			return nil
		})
	}
	if err := c.etc.Restart(0); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	// Served again through the standby (whichever node holds the model now).
	waitFor(t, c.ctx, func() error {
		r := client.do("GET", "/m/model/"+strings.TrimPrefix(name, "MODEL|"), "")
		if r.code != 200 {
			return fmt.Errorf("%d %s", r.code, r.body)
		}
		return nil
	})
	served := time.Since(back)
	waitFor(t, c.ctx, func() error {
		a, err := coord.GetInstance(c.ctx, c.cli, "a")
		if err != nil {
			return err
		}
		b, err := coord.GetInstance(c.ctx, c.cli, "b")
		if err != nil {
			return err
		}
		if got := []coord.Status{a.Status, b.Status}; !(got[0] == coord.StatusRunning && got[1] == coord.StatusStandby ||
			got[0] == coord.StatusStandby && got[1] == coord.StatusRunning) {
			return fmt.Errorf("a is %s, b is %s", a.Status, b.Status)
		}
		return nil
	})
	settled := time.Since(back)
	t.Logf("etcd back: served again after %v, both nodes registered after %v (TTL %v)", served, settled, ttl)
	for id, p := range procs {
		waitFor(t, c.ctx, func() error {
			if !strings.Contains(p.out.String(), "etcd reachable again") {
				return fmt.Errorf("%s has not logged the end of the outage", id)
			}
			return nil
		})
		out := p.out.String()
		if n := strings.Count(out, "etcd unreachable"); n != 1 {
			t.Errorf("%s logged the outage start %d times, want once", id, n)
		}
		if n := strings.Count(out, "etcd reachable again"); n != 1 {
			t.Errorf("%s logged the outage end %d times, want once", id, n)
		}
	}
}

// With etcd cut off (nothing answers, connections stay open), the standby
// still forwards to the holder it can reach while the holder's session
// lasts: reads are served, not answered 503.
func TestStandbyForwardsWhileEtcdIsCutOff(t *testing.T) {
	c := newCluster(t)
	hole := etcdtest.NewProxy(t, strings.TrimPrefix(c.etc.Endpoints()[0], "http://"))
	const ttl = 10 * time.Second
	start := func(id string) *proc {
		return startKatonode(t, "run", "--endpoints", hole.Endpoint(), "--advertise-host", "127.0.0.1",
			"--listen-host", "127.0.0.1", "--id", id, "--model", "m", "--port", "0", "--ttl", ttl.String())
	}
	start("a")
	c.waitStatus("a", coord.StatusRunning)
	start("b")
	rb := c.waitStatus("b", coord.StatusStandby)
	client := api{t, rb.APIURL}
	client.ok("POST", "/m/observe", obs("cut", "off"))
	hole.Blackhole()
	r := client.do("GET", "/m/working-memory", "")
	if r.code != 200 || r.hdr.Get("X-Kato-Served-By") != "a" || !strings.Contains(string(r.body), "cut") {
		t.Fatalf("with etcd cut off, the standby did not forward to the holder: %d %s (served by %q)", r.code, r.body, r.hdr.Get("X-Kato-Served-By"))
	}
	hole.Heal()
}
