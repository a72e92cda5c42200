package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/cmd/internal/cliutil/clitest"
	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// cluster is a real etcd plus katonode processes started by a test.
type cluster struct {
	t   *testing.T
	etc *etcdtest.Cluster
	cli *clientv3.Client
	ctx context.Context
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	etc := etcdtest.New(t)
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return &cluster{t: t, etc: etc, cli: cli, ctx: ctx}
}

// node starts katonode run with the cluster's etcd and args.
func (c *cluster) node(args ...string) *proc {
	c.t.Helper()
	base := []string{"run", "--endpoints", strings.Join(c.etc.Endpoints(), ","), "--advertise-host", "127.0.0.1",
		"--listen-host", "127.0.0.1", "--log-level", "debug"}
	return startKatonode(c.t, append(base, args...)...)
}

// waitStatus waits until instance id is registered with status st and returns its record.
func (c *cluster) waitStatus(id string, st coord.Status) coord.Instance {
	c.t.Helper()
	var in coord.Instance
	waitFor(c.t, c.ctx, func() error {
		var err error
		in, err = coord.GetInstance(c.ctx, c.cli, id)
		if err != nil {
			return err
		}
		if in.Status != st {
			return fmt.Errorf("%s is %s, want %s", id, in.Status, st)
		}
		return nil
	})
	return in
}

// holderAndStandby starts node a, waiting until it holds model, then node
// b, waiting until it is a's standby, both with lease TTL ttl. It returns
// their processes and registry records.
func (c *cluster) holderAndStandby(model string, ttl time.Duration) (a, b *proc, ra, rb coord.Instance) {
	c.t.Helper()
	a = c.node("--id", "a", "--model", model, "--port", "0", "--ttl", ttl.String())
	ra = c.waitStatus("a", coord.StatusRunning)
	b = c.node("--id", "b", "--model", model, "--port", "0", "--ttl", ttl.String())
	rb = c.waitStatus("b", coord.StatusStandby)
	return a, b, ra, rb
}

// api is a small JSON client of a node.
type api struct {
	t    *testing.T
	base string
}

type reply struct {
	code int
	body []byte
	hdr  http.Header
}

func (a api) do(method, path, body string) reply {
	a.t.Helper()
	req, err := http.NewRequest(method, a.base+path, strings.NewReader(body))
	if err != nil {
		a.t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return reply{code: -1, body: []byte(err.Error())}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{code: resp.StatusCode, body: b, hdr: resp.Header}
}

func (a api) ok(method, path, body string) map[string]any {
	a.t.Helper()
	r := a.do(method, path, body)
	if r.code != http.StatusOK {
		a.t.Fatalf("%s %s: %d %s", method, path, r.code, r.body)
	}
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		a.t.Fatalf("%s %s: %v: %s", method, path, err, r.body)
	}
	return m
}

func obs(strs ...string) string {
	b, _ := json.Marshal(map[string]any{"strings": strs, "vectors": []any{}, "emotives": map[string]any{}})
	return string(b)
}

// Two nodes for one model: the first runs, the second waits. A client talks
// only to the standby, by model name; the standby forwards. After kill -9 of
// the holder the standby takes over within TTL + 1 s with every acknowledged
// learn and gives the same predictions for the same short-term memory.
func TestFailoverKeepsEveryAcknowledgedLearn(t *testing.T) {
	c := newCluster(t)
	const ttl = 3 * time.Second
	a, b, _, rb := c.holderAndStandby("shared", ttl)
	if in, _ := coord.GetInstance(c.ctx, c.cli, "a"); in.Status != coord.StatusRunning {
		t.Fatalf("a is %s while b waits", in.Status)
	}
	client := api{t, rb.APIURL}

	const n = 1000
	learned := make([]string, 0, n)
	for i := 0; i < n; i++ {
		client.ok("POST", "/shared/observe", obs(fmt.Sprintf("s%d", i), "x"))
		client.ok("POST", "/shared/observe", obs(fmt.Sprintf("t%d", i%37)))
		m := client.ok("POST", "/shared/learn", "")
		name, _ := m["message"].(string)
		if !strings.HasPrefix(name, "MODEL|") {
			t.Fatalf("learn %d answered %v", i, m)
		}
		learned = append(learned, name)
	}
	query := []string{obs("s7", "x"), obs("t7")}
	for _, q := range query {
		client.ok("POST", "/shared/observe", q)
	}
	before := client.do("GET", "/shared/predictions", "")
	if before.code != 200 || bytes.Count(before.body, []byte(`"name"`)) == 0 {
		t.Fatalf("predictions before the kill: %d %s", before.code, before.body)
	}
	if before.hdr.Get("X-Kato-Served-By") != "a" {
		t.Fatalf("request to the standby was not served by the holder: %q", before.hdr.Get("X-Kato-Served-By"))
	}

	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// The client keeps asking the standby; 503s are allowed during the take-over.
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		r := client.do("GET", "/shared/working-memory", "")
		if r.code == 200 && r.hdr.Get("X-Kato-Served-By") == "b" {
			break
		}
		if r.code != 200 && r.code != http.StatusServiceUnavailable && r.code != -1 {
			t.Fatalf("during take-over: %d %s", r.code, r.body)
		}
		if time.Since(killed) > 3*ttl {
			t.Fatalf("standby not serving %v after the kill: %d %s", time.Since(killed), r.code, r.body)
		}
		<-tick.C
	}
	took := time.Since(killed)
	t.Logf("standby took over %v after kill -9 (TTL %v)", took, ttl)
	if took > ttl+time.Second {
		t.Errorf("take-over took %v, want within TTL + 1 s = %v", took, ttl+time.Second)
	}
	c.waitStatus("b", coord.StatusRunning)
	if !strings.Contains(b.out.String(), `"from": "warm copy"`) {
		t.Errorf("the standby did not take over from its warm copy:\n%s", b.out.String())
	}

	for _, name := range learned {
		r := client.do("GET", "/shared/model/"+strings.TrimPrefix(name, "MODEL|"), "")
		if r.code != 200 {
			t.Fatalf("acknowledged %s lost after the take-over: %d %s", name, r.code, r.body)
		}
	}
	for _, q := range query {
		client.ok("POST", "/shared/observe", q)
	}
	after := client.do("GET", "/shared/predictions", "")
	if !bytes.Equal(after.body, before.body) {
		t.Fatalf("predictions differ after the take-over:\nbefore %s\nafter  %s", before.body, after.body)
	}
}

// A node paused longer than its TTL cannot write after it resumes: the
// client gets 503 (or the request is forwarded to the new holder), nothing
// it learned late reaches etcd, and it comes back as standby.
func TestPausedNodeCannotWriteLate(t *testing.T) {
	c := newCluster(t)
	const ttl = 2 * time.Second
	a, _, ra, _ := c.holderAndStandby("m", ttl)
	client := api{t, ra.APIURL}
	client.ok("POST", "/a/observe", obs("late1", "late2"))
	client.ok("POST", "/a/observe", obs("late3"))
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	c.waitStatus("b", coord.StatusRunning)
	// Put the learn request into a's socket while it is stopped; it is handled
	// when a resumes, before or after a notices that its lease is gone.
	conn, err := net.Dial("tcp", strings.TrimPrefix(ra.APIURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := fmt.Fprintf(conn, "POST /a/learn HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := a.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer from the resumed node: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	r := reply{code: resp.StatusCode, body: body, hdr: resp.Header}
	switch {
	case r.code == http.StatusServiceUnavailable:
	case r.code == 200 && r.hdr.Get("X-Kato-Served-By") == "b":
		// Forwarded to the new holder, which has its own (empty) memory.
		if bytes.Contains(r.body, []byte("MODEL|")) {
			t.Fatalf("the new holder learned a's memory: %s", r.body)
		}
	default:
		t.Fatalf("late learn on the resumed node: %d %s (served by %q)", r.code, r.body, r.hdr.Get("X-Kato-Served-By"))
	}
	// The model as a node loads it (snapshot and log) holds no pattern.
	_, stored, err := kb.Export(c.ctx, c.cli.KV, zap.NewNop(), "m", func(processor.Change) error { return nil })
	if err != nil && !errors.Is(err, kb.ErrNotFound) {
		t.Fatal(err)
	}
	if stored.Patterns != 0 {
		t.Fatalf("%d patterns in etcd: the paused node's late learn got through", stored.Patterns)
	}
	c.waitStatus("a", coord.StatusStandby)
}

func TestSameIDTwiceSecondExitsWithClearError(t *testing.T) {
	c := newCluster(t)
	c.node("--id", "dup", "--port", "0")
	c.waitStatus("dup", coord.StatusRunning)
	second := c.node("--id", "dup", "--port", "0")
	if code := second.wait(t, 30*time.Second); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	out := second.out.String()
	if !strings.Contains(out, `"dup" is held by pid`) || !strings.Contains(out, "on host") {
		t.Fatalf("no clear message naming the holder:\n%s", out)
	}
}

func TestPortTakenUsesNextFreeAndRegistersIt(t *testing.T) {
	c := newCluster(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	c.node("--id", "p", "--port", fmt.Sprint(port))
	in := c.waitStatus("p", coord.StatusRunning)
	if in.APIURL == fmt.Sprintf("http://127.0.0.1:%d", port) {
		t.Fatalf("registered the taken port %d", port)
	}
	if r := (api{t, in.APIURL}).do("GET", "/readyz", ""); r.code != 200 {
		t.Fatalf("registered address %s does not answer: %d %s", in.APIURL, r.code, r.body)
	}
}

func TestKatoctlStopByIDAndByName(t *testing.T) {
	c := newCluster(t)
	katoctlBin := clitest.BuildKatoctl(t)
	x := c.node("--id", "x", "--port", "0")
	y := c.node("--id", "y", "--name", "the-y-node", "--port", "0")
	c.waitStatus("x", coord.StatusRunning)
	c.waitStatus("y", coord.StatusRunning)
	for _, tc := range []struct {
		arg, id string
		p       *proc
	}{{"x", "x", x}, {"the-y-node", "y", y}} {
		cmd := exec.Command(katoctlBin, "--endpoints", strings.Join(c.etc.Endpoints(), ","), "stop", tc.arg)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("katoctl stop %s: %v\n%s", tc.arg, err, out)
		}
		if !strings.Contains(string(out), "stopped "+tc.id) {
			t.Fatalf("katoctl stop %s said %q", tc.arg, out)
		}
		// katoctl returns once the record is gone: it must be gone now.
		if _, err := coord.GetInstance(c.ctx, c.cli, tc.id); !errors.Is(err, coord.ErrNotFound) {
			t.Fatalf("record of %s still there after katoctl stop: %v", tc.id, err)
		}
		if code := tc.p.wait(t, 30*time.Second); code != 0 {
			t.Fatalf("%s exited %d after katoctl stop:\n%s", tc.id, code, tc.p.out.String())
		}
		if !strings.Contains(tc.p.out.String(), "stopped gracefully") {
			t.Fatalf("%s did not stop gracefully:\n%s", tc.id, tc.p.out.String())
		}
	}
}
