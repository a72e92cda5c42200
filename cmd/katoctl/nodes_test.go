package main

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// registered starts etcd, registers instances on their own sessions under the
// default prefix, and returns the global flags that reach that etcd.
func registered(t *testing.T, ins ...coord.Instance) (*etcdtest.Cluster, []string) {
	t.Helper()
	c := etcdtest.New(t)
	cli := katoClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range ins {
		s := testSession(t, ctx, cli, coord.WithTTL(30*time.Second))
		if err := coord.NewRegistry(s).Register(ctx, &ins[i]); err != nil {
			t.Fatal(err)
		}
	}
	return c, []string{"--endpoints", strings.Join(c.Endpoints(), ",")}
}

// katoClient is a client of c under the default prefix, closed when the
// test ends.
func katoClient(t *testing.T, c *etcdtest.Cluster) *clientv3.Client {
	t.Helper()
	cli := c.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	return cli
}

// testSession starts a session on cli that is closed when the test ends.
func testSession(t *testing.T, ctx context.Context, cli *clientv3.Client, opts ...coord.SessionOption) *coord.Session {
	t.Helper()
	s, err := coord.NewSession(ctx, cli, zap.NewNop(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

func sampleInstances() []coord.Instance {
	started := time.Now().Add(-90 * time.Minute).UTC()
	return []coord.Instance{
		{ID: "alpha", Name: "Alpha One", Model: "m1", Host: "h1", PID: 11, APIURL: "http://h1:8000", Status: coord.StatusRunning, StartedAt: started},
		{ID: "beta", Name: "Beta", Model: "m1", Host: "h2", PID: 22, APIURL: "http://h2:8000", Status: coord.StatusStandby, StartedAt: started},
	}
}

func TestListTable(t *testing.T) {
	_, flags := registered(t, sampleInstances()...)
	r := katoctl(t, nil, append(flags, "list")...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 {
		t.Fatalf("want header + 2 rows, got:\n%s", r.stdout)
	}
	for _, col := range []string{"ID", "NAME", "MODEL", "STATUS", "HOST", "API", "UPTIME", "TTL"} {
		if !strings.Contains(lines[0], col) {
			t.Errorf("header %q lacks %s", lines[0], col)
		}
	}
	alpha := strings.Fields(lines[1])
	// "Alpha One" is two fields in the split.
	want := []string{"alpha", "Alpha", "One", "m1", "running", "h1", "http://h1:8000"}
	for i, w := range want {
		if i >= len(alpha) || alpha[i] != w {
			t.Fatalf("row %q: field %d = %v, want %q", lines[1], i, alpha, w)
		}
	}
	// Started 90 minutes before the test; the seconds depend on how long it ran.
	if len(alpha) < 8 || !strings.HasPrefix(alpha[7], "1h30m") {
		t.Fatalf("uptime column of %q, want 1h30m..s", lines[1])
	}
	if ttl := alpha[len(alpha)-1]; !strings.HasSuffix(ttl, "s") || ttl == "expired" {
		t.Fatalf("TTL column %q", ttl)
	}
	if !strings.HasPrefix(lines[2], "beta ") || !strings.Contains(lines[2], "standby") {
		t.Fatalf("second row %q", lines[2])
	}
}

func TestListAndGetJSON(t *testing.T) {
	_, flags := registered(t, sampleInstances()...)
	r := katoctl(t, nil, append(flags, "-o", "json", "ls")...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got []instanceView
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	if len(got) != 2 || got[0].ID != "alpha" || got[1].ID != "beta" || got[0].PID != 11 || got[1].Status != coord.StatusStandby {
		t.Fatalf("decoded %+v", got)
	}
	if got[0].TTLLeft <= 0 || got[0].TTLLeft > 30 {
		t.Fatalf("ttl_left_s = %d, want in (0, 30]", got[0].TTLLeft)
	}

	r = katoctl(t, nil, append(flags, "-o", "json", "get", "beta")...)
	var one instanceView
	if err := json.Unmarshal([]byte(r.stdout), &one); err != nil || one.ID != "beta" || one.Host != "h2" {
		t.Fatalf("get beta: %v %+v\n%s", err, one, r.stdout)
	}

	r = katoctl(t, nil, append(flags, "get", "nobody")...)
	if r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("get of an unknown id: exit %d, stderr %q", r.code, r.stderr)
	}
	r = katoctl(t, nil, append(flags, "get", "bad id!")...)
	if r.code != 1 || !strings.Contains(r.stderr, "invalid instance id") {
		t.Fatalf("get of a bad id: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestStatus(t *testing.T) {
	_, flags := registered(t, sampleInstances()...)
	r := katoctl(t, nil, append(flags, "status")...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"healthy, leader", "running", "standby", "lease"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, r.stdout)
		}
	}
	r = katoctl(t, nil, append(flags, "-o", "json", "status")...)
	var st clusterStatus
	if err := json.Unmarshal([]byte(r.stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.Instances != 2 || st.ByStatus[coord.StatusRunning] != 1 || st.ByStatus[coord.StatusStandby] != 1 || st.Leader == "" || len(st.Leases) != 2 {
		t.Fatalf("status %+v", st)
	}
}

func TestWatchStreamsChanges(t *testing.T) {
	c, flags := registered(t, sampleInstances()[0])
	cmd := katoctlCmd(t, nil, append(flags, "-o", "json", "watch")...)
	out := &lineReader{ch: make(chan string, 16)}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	next := func() coord.InstanceEvent {
		t.Helper()
		select {
		case line := <-out.ch:
			var ev coord.InstanceEvent
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("line %q: %v", line, err)
			}
			return ev
		case <-time.After(15 * time.Second):
			t.Fatal("no event from katoctl watch")
		}
		return coord.InstanceEvent{}
	}
	if ev := next(); ev.Type != coord.EventAdded || ev.Instance.ID != "alpha" {
		t.Fatalf("first event %+v", ev)
	}
	cli := katoClient(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := coord.NewSession(ctx, cli, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	in := sampleInstances()[1]
	if err := coord.NewRegistry(s).Register(ctx, &in); err != nil {
		t.Fatal(err)
	}
	if ev := next(); ev.Type != coord.EventAdded || ev.Instance.ID != "beta" {
		t.Fatalf("event %+v", ev)
	}
	s.Close(ctx)
	if ev := next(); ev.Type != coord.EventRemoved || ev.Instance.ID != "beta" {
		t.Fatalf("event %+v", ev)
	}
}

// lineReader delivers what a process writes, line by line.
type lineReader struct {
	buf []byte
	ch  chan string
}

func (l *lineReader) Write(p []byte) (int, error) {
	l.buf = append(l.buf, p...)
	for {
		i := strings.IndexByte(string(l.buf), '\n')
		if i < 0 {
			return len(p), nil
		}
		l.ch <- string(l.buf[:i])
		l.buf = l.buf[i+1:]
	}
}

// One dead endpoint (refused) and one that never answers do not hide the
// live one: each shows on its own line within --command-timeout, with the
// live member's db size, in-use size, quota and alarm.
func TestStatusShowsEveryEndpointAndAlarms(t *testing.T) {
	c, _ := registered(t, sampleInstances()...)
	cli := c.Client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := cli.Status(ctx, c.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := etcdserverpb.NewMaintenanceClient(cli.ActiveConnection()).Alarm(ctx, &etcdserverpb.AlarmRequest{
		Action: etcdserverpb.AlarmRequest_ACTIVATE, MemberID: st.Header.MemberId, Alarm: etcdserverpb.AlarmType_NOSPACE}); err != nil {
		t.Fatal(err)
	}
	hole := etcdtest.NewProxy(t, c.Endpoints()[0])
	hole.Blackhole()
	dead := "127.0.0.1:1"
	eps := strings.Join(append(c.Endpoints(), dead, hole.Endpoint()), ",")
	r := katoctl(t, nil, "status", "--endpoints", eps, "--command-timeout", "2s")
	if r.code != 2 {
		t.Fatalf("exit %d, want 2: %s %s", r.code, r.stdout, r.stderr)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) > 1 && f[0] == "endpoint" {
			rows[f[1]] = line
		}
	}
	live := rows[c.Endpoints()[0]]
	for _, want := range []string{"unhealthy", "in use) of 2.00 GiB quota", "ALARM NOSPACE"} {
		if !strings.Contains(live, want) {
			t.Errorf("live endpoint row lacks %q: %q", want, live)
		}
	}
	for _, ep := range []string{dead, hole.Endpoint()} {
		if !strings.Contains(rows[ep], "down") || !strings.Contains(rows[ep], "does not answer") {
			t.Errorf("row of %s: %q", ep, rows[ep])
		}
	}
	if !strings.Contains(r.stdout, "running") || !strings.Contains(r.stdout, "standby") {
		t.Errorf("no instance rows:\n%s", r.stdout)
	}
}
