package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node"
)

// sessionNode runs a node for model m on a real etcd and returns its API URL
// and katoctl's flags.
func sessionNode(t *testing.T) (string, []string) {
	t.Helper()
	etc := etcdtest.New(t)
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	n, err := node.New(node.Config{ID: "a", Model: "m", Port: 0, ListenHost: "127.0.0.1", AdvertiseHost: "127.0.0.1"}, cli, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	etcdtest.Eventually(t, 20*time.Second, n.Ready, "node ready")
	return n.APIURL(), []string{"--endpoints", strings.Join(etc.Endpoints(), ",")}
}

func httpDo(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m
}

func TestSessionsLsGetRm(t *testing.T) {
	api, flags := sessionNode(t)
	var sids []string
	for i := 0; i < 3; i++ {
		_, m := httpDo(t, "POST", api+"/sessions", `{"node_id":"m","ttl_seconds":600}`)
		sids = append(sids, m["session_id"].(string))
	}
	if code, _ := httpDo(t, "POST", api+"/sessions/"+sids[0]+"/observe", `{"strings":["a","b"],"vectors":[],"emotives":{}}`); code != 200 {
		t.Fatalf("observe: %d", code)
	}
	run := func(args ...string) result {
		t.Helper()
		return katoctl(t, nil, append(flags, args...)...)
	}

	r := run("sessions", "ls")
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "SESSION") {
		t.Fatalf("ls: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := run("sessions", "ls", "--model", "other"); strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("ls --model other:\n%s", r.stdout)
	}
	r = run("-o", "json", "sessions", "get", sids[0])
	var v struct {
		SessionID string `json:"session_id"`
		TTLLeft   int64  `json:"ttl_left_seconds"`
		State     struct{ STM [][]string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil || v.SessionID != sids[0] || v.TTLLeft <= 0 || len(v.State.STM) != 1 {
		t.Fatalf("get: %v %+v\n%s%s", err, v, r.stdout, r.stderr)
	}
	if r := run("sessions", "get", "m.nope"); r.code == 0 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "not a session id") {
		t.Fatalf("get of a bad id: exit %d %q", r.code, r.stderr)
	}
	if r := run("sessions", "rm"); r.code == 0 || !strings.Contains(r.stderr, "--model") {
		t.Fatalf("rm with nothing: exit %d %q", r.code, r.stderr)
	}

	// rm by id: the node answers 404 for it at once.
	if r := run("sessions", "rm", sids[0]); r.code != 0 || !strings.Contains(r.stdout, "removed "+sids[0]) {
		t.Fatalf("rm: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		code, _ := httpDo(t, "GET", api+"/sessions/"+sids[0]+"/stm", "")
		return code == 404
	}, "404 for the removed session")
	if r := run("sessions", "rm", "--model", "m"); r.code != 0 || !strings.Contains(r.stdout, "removed 2 sessions of m") {
		t.Fatalf("rm --model: exit %d %s%s", r.code, r.stdout, r.stderr)
	}
	if _, m := httpDo(t, "GET", api+"/sessions/count", ""); m["active_session_count"] != 0.0 {
		t.Fatalf("count after rm: %v", m)
	}
}
