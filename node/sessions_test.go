package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node"
)

func createSession(c client, model, extra string) string {
	c.t.Helper()
	m := c.ok("POST", "/sessions", `{"node_id":"`+model+`"`+extra+`}`)
	sid, _ := m["session_id"].(string)
	if _, ok := coord.SessionModel(sid); !ok {
		c.t.Fatalf("create: %v", m)
	}
	return sid
}

func sessionObserve(c client, sid string, strs ...string) map[string]any {
	c.t.Helper()
	b, _ := json.Marshal(map[string]any{"strings": strs, "vectors": []any{}, "emotives": map[string]any{}})
	return c.ok("POST", "/sessions/"+sid+"/observe", string(b))
}

func wantError(c client, method, path, body string, code int, errCode, contains string) {
	c.t.Helper()
	got, m := c.call(method, path, body)
	if got != code || m["status"] != "error" || m["error_code"] != errCode || !strings.Contains(fmt.Sprint(m["message"]), contains) {
		c.t.Fatalf("%s %s %s: %d %v, want %d %s containing %q", method, path, body, got, m, code, errCode, contains)
	}
}

func namespaced(t *testing.T, etc *etcdtest.Cluster) *clientv3.Client {
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	return cli
}

// Every route of the table on a real etcd, with KATO 3's shapes.
func TestSessionRoutes(t *testing.T) {
	etc := etcdtest.New(t)
	n := startNode(t, etc, node.Config{ID: "a", Model: "m", Port: 0})
	c := client{t, n.APIURL()}
	rec := c.ok("POST", "/sessions", `{"node_id":"m","ttl_seconds":120,"config":{"max_pattern_length":3,"max_predictions":5},"metadata":{"user":"u1"}}`)
	sid := rec["session_id"].(string)
	if rec["node_id"] != "m" || rec["ttl_seconds"] != 120.0 || rec["metadata"].(map[string]any)["user"] != "u1" ||
		rec["session_config"].(map[string]any)["max_pattern_length"] != 3.0 || rec["created_at"] == "" || rec["expires_at"] == "" {
		t.Fatalf("create: %v", rec)
	}
	if got := c.ok("GET", "/sessions/"+sid, ""); got["session_id"] != sid || got["session_config"].(map[string]any)["max_predictions"] != 5.0 {
		t.Fatalf("get: %v", got)
	}
	if got := c.ok("GET", "/sessions/"+sid+"/exists", ""); got["exists"] != true || got["expired"] != false {
		t.Fatalf("exists: %v", got)
	}
	if got := c.ok("GET", "/sessions/count", ""); got["active_session_count"] != 1.0 {
		t.Fatalf("count: %v", got)
	}
	wantError(c, "POST", "/sessions/"+sid+"/learn", "", 400, "BAD_SESSION_REQUEST", "STM is empty")

	// Observe with auto-learn at 3, as an instance would.
	sessionObserve(c, sid, "b", "a")
	o := sessionObserve(c, sid, "c")
	if o["status"] != "okay" || o["session_id"] != sid || o["processor_id"] != "a" || o["stm_length"] != 2.0 || o["time"] != 2.0 ||
		o["auto_learned_pattern"] != nil || !strings.HasPrefix(o["unique_id"].(string), "rest-") {
		t.Fatalf("observe: %v", o)
	}
	o = sessionObserve(c, sid, "d")
	if o["auto_learned_pattern"] != "MODEL|d31a36e9ce0eb82e3ec5e48ff40e4861474db5a1" || o["stm_length"] != 1.0 {
		t.Fatalf("observe with auto-learn: %v", o)
	}
	// The pattern is in the shared model: the instance route sees it.
	c.ok("GET", "/m/model/d31a36e9ce0eb82e3ec5e48ff40e4861474db5a1", "")
	if got := c.ok("GET", "/sessions/"+sid+"/stm", ""); fmt.Sprint(got["stm"]) != "[[d]]" || got["length"] != 1.0 {
		t.Fatalf("stm: %v", got)
	}
	sessionObserve(c, sid, "a")
	if got := c.ok("GET", "/sessions/"+sid+"/predictions", ""); got["count"] != 1.0 ||
		got["predictions"].([]any)[0].(map[string]any)["name"] != "MODEL|d31a36e9ce0eb82e3ec5e48ff40e4861474db5a1" {
		t.Fatalf("predictions: %v", got)
	}
	if got := c.ok("GET", "/sessions/"+sid+"/percept-data", ""); fmt.Sprint(got["message"].(map[string]any)["strings"]) != "[a]" {
		t.Fatalf("percept-data: %v", got)
	}
	if got := c.ok("GET", "/sessions/"+sid+"/cognition-data", ""); fmt.Sprint(got["message"].(map[string]any)["working_memory"]) != "[[d] [a]]" {
		t.Fatalf("cognition-data: %v", got)
	}
	if got := c.ok("POST", "/sessions/"+sid+"/learn", ""); got["status"] != "learned" || !strings.HasPrefix(got["pattern_name"].(string), "MODEL|") {
		t.Fatalf("learn: %v", got)
	}
	// The instance's own state is untouched by the session.
	if got := c.ok("GET", "/m/working-memory", ""); fmt.Sprint(got["message"]) != "[]" {
		t.Fatalf("instance STM: %v", got)
	}

	// Config.
	if got := c.ok("POST", "/sessions/"+sid+"/config", `{"config":{"recall_threshold":0.5,"sort_symbols":false}}`); got["status"] != "okay" {
		t.Fatalf("set config: %v", got)
	}
	if cfg := c.ok("GET", "/sessions/"+sid+"/config", "")["config"].(map[string]any); cfg["recall_threshold"] != 0.5 || cfg["sort_symbols"] != false {
		t.Fatalf("config: %v", cfg)
	}
	wantError(c, "POST", "/sessions/"+sid+"/config", `{"config":{"stm_mode":"ROLLING"}}`, 400, "INVALID_GENE", `"stm_mode"`)
	wantError(c, "POST", "/sessions/"+sid+"/config", `{"config":{"recall_threshold":7}}`, 400, "INVALID_GENE", `"recall_threshold"`)
	wantError(c, "POST", "/sessions", `{"node_id":"m","config":{"nope":1}}`, 400, "INVALID_GENE", `"nope"`)
	wantError(c, "POST", "/sessions", `{"node_id":"m","ttl_seconds":5}`, 400, "BAD_SESSION_REQUEST", "out of range [60, 86400]")
	wantError(c, "POST", "/sessions", `{"ttl_seconds":600}`, 400, "BAD_SESSION_REQUEST", "node_id")
	wantError(c, "POST", "/sessions", `{"node_id":"nobody"}`, 404, "PROCESSOR_NOT_FOUND", "nobody")
	wantError(c, "POST", "/sessions/"+sid+"/observe", `{"strings":[1]}`, 400, "INVALID_OBSERVATION", "strings[0] must be a string")

	// Clears.
	sessionObserve(c, sid, "x")
	if got := c.ok("POST", "/sessions/"+sid+"/clear-stm", ""); got["status"] != "cleared" || got["scope"] != nil {
		t.Fatalf("clear-stm: %v", got)
	}
	if got := c.ok("GET", "/sessions/"+sid+"/stm", ""); got["length"] != 0.0 {
		t.Fatalf("stm after clear: %v", got)
	}
	sessionObserve(c, sid, "y")
	if got := c.ok("POST", "/sessions/"+sid+"/clear-all", ""); got["status"] != "cleared" || got["scope"] != "all" {
		t.Fatalf("clear-all: %v", got)
	}
	if o := sessionObserve(c, sid, "z"); o["time"] != 1.0 {
		t.Fatalf("time after clear-all: %v", o)
	}

	// observe-sequence.
	seq := c.ok("POST", "/sessions/"+sid+"/observe-sequence", `{"observations":[
		{"strings":["p"],"vectors":[],"emotives":{}},{"strings":["q"],"vectors":[],"emotives":{}}],"learn_at_end":true}`)
	if seq["observations_processed"] != 2.0 || len(seq["results"].([]any)) != 2 || len(seq["auto_learned_patterns"].([]any)) != 1 {
		t.Fatalf("observe-sequence: %v", seq)
	}

	// Extend, delete.
	if got := c.ok("POST", "/sessions/"+sid+"/extend?ttl_seconds=600", ""); got["status"] != "extended" || got["ttl_seconds"] != 600.0 {
		t.Fatalf("extend: %v", got)
	}
	if got := c.ok("GET", "/sessions/"+sid, ""); got["ttl_seconds"] != 600.0 {
		t.Fatalf("after extend: %v", got)
	}
	if got := c.ok("DELETE", "/sessions/"+sid, ""); got["status"] != "deleted" || got["session_id"] != sid {
		t.Fatalf("delete: %v", got)
	}
	wantError(c, "GET", "/sessions/"+sid, "", 404, "SESSION_NOT_FOUND", sid)
	wantError(c, "POST", "/sessions/"+sid+"/observe", `{"strings":["a"],"vectors":[],"emotives":{}}`, 404, "SESSION_NOT_FOUND", sid)
	wantError(c, "GET", "/sessions/not-a-session/stm", "", 404, "SESSION_NOT_FOUND", "not a session id")
	if got := c.ok("GET", "/sessions/"+sid+"/exists", ""); got["exists"] != false {
		t.Fatalf("exists after delete: %v", got)
	}
	if got := c.ok("GET", "/sessions/count", ""); got["active_session_count"] != 0.0 {
		t.Fatalf("count after delete: %v", got)
	}
	if got := metric(t, n.APIURL(), `kato_sessions_created_total{model="m"}`); got != 1 {
		t.Fatalf("created: %v", got)
	}
	if got := metric(t, n.APIURL(), `kato_sessions_deleted_total{model="m"}`); got != 1 {
		t.Fatalf("deleted: %v", got)
	}
}

// metric reads one sample from a node's /metrics.
func metric(t *testing.T, base, series string) float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			var f float64
			fmt.Sscan(v, &f)
			return f
		}
	}
	return 0
}

// An unused session's key and lease vanish from etcd after its TTL with no
// sweeper, and its id answers 404; a used one lives on past its TTL.
func TestSessionExpiresAndSlides(t *testing.T) {
	etc := etcdtest.New(t)
	n := startNode(t, etc, node.Config{ID: "a", Model: "m", Port: 0, SessionTTLs: node.SessionTTLs{Min: 2 * time.Second}})
	c := client{t, n.APIURL()}
	idle := createSession(c, "m", `,"ttl_seconds":2`)
	busy := createSession(c, "m", `,"ttl_seconds":2`)
	sessionObserve(c, idle, "a", "b")
	cli := namespaced(t, etc)
	ctx := context.Background()
	resp, err := cli.Get(ctx, coord.SessionKey("m", idle))
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("session key: %v %v", resp, err)
	}
	lease := clientv3.LeaseID(resp.Kvs[0].Lease)

	// Use busy for three TTLs; idle is only asked whether it exists, which
	// does not extend its TTL.
	start := time.Now()
	tick := time.NewTicker(300 * time.Millisecond)
	defer tick.Stop()
	for time.Since(start) < 6*time.Second {
		sessionObserve(c, busy, "x")
		c.ok("GET", "/sessions/"+idle+"/exists", "")
		<-tick.C
	}
	etcdtest.Eventually(t, 20*time.Second, func() bool {
		r, err := cli.Get(ctx, coord.SessionKey("m", idle), clientv3.WithCountOnly())
		return err == nil && r.Count == 0
	}, "expiry of the idle session")
	if ttl, err := cli.TimeToLive(ctx, lease); err != nil || ttl.TTL != -1 {
		t.Fatalf("lease of the expired session: %v %v", ttl, err)
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		code, _ := c.call("GET", "/sessions/"+idle+"/stm", "")
		return code == 404
	}, "404 for the expired session")
	if got := c.ok("GET", "/sessions/"+busy+"/stm", ""); got["length"].(float64) < 10 {
		t.Fatalf("busy session: %v", got)
	}
	// Sliding TTL, at most one lease refresh a second: a burst of uses
	// refreshes the lease once or twice, not once a use.
	r0 := metric(t, n.APIURL(), `kato_sessions_lease_refreshes_total{model="m"}`)
	burst := time.Now()
	for i := 0; i < 50; i++ {
		c.ok("GET", "/sessions/"+busy+"/stm", "")
	}
	refreshes := metric(t, n.APIURL(), `kato_sessions_lease_refreshes_total{model="m"}`) - r0
	if limit := time.Since(burst).Seconds() + 1; refreshes < 0 || refreshes > limit {
		t.Fatalf("%v lease refreshes for 50 uses in %v", refreshes, time.Since(burst))
	}
	etcdtest.Eventually(t, 10*time.Second, func() bool { return metric(t, n.APIURL(), `kato_sessions_expired_total{model="m"}`) == 1 }, "expiry metric")
	if got := c.ok("GET", "/sessions/"+idle+"/exists", ""); got["exists"] != false || got["expired"] != true {
		t.Fatalf("exists of the expired session: %v", got)
	}
}

// A node that does not hold the model forwards session calls to the one
// that does; after the lock moves, the new holder continues every session
// with the same STM and predictions.
func TestSessionForwardingAndTakeOver(t *testing.T) {
	etc := etcdtest.New(t)
	a := startNode(t, etc, node.Config{ID: "a", Model: "m", Port: 0})
	ca := client{t, a.APIURL()}
	// A model to predict from.
	for _, ev := range [][]string{{"a"}, {"b"}, {"c"}} {
		observe(ca, "m", ev...)
	}
	ca.ok("POST", "/m/learn", "")

	cli := namespaced(t, etc)
	bNode := startStandby(t, etc, "b", "m")
	cb := client{t, bNode.APIURL()}

	// Through b (standby): forwarded to a.
	const sessions = 20
	sids := make([]string, sessions)
	var wg sync.WaitGroup
	for i := range sids {
		sids[i] = createSession(cb, "m", "")
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j <= i%4; j++ {
				sessionObserve(cb, sids[i], []string{"a", "b", "c", "x"}[(i+j)%4], fmt.Sprint("s", i))
			}
		}()
	}
	wg.Wait()
	req, _ := http.NewRequest("GET", bNode.APIURL()+"/sessions/"+sids[0]+"/stm", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-Kato-Served-By") != "a" {
		t.Fatalf("through b: %d served by %q", resp.StatusCode, resp.Header.Get("X-Kato-Served-By"))
	}
	before := make([]string, sessions)
	state := func(c client, sid string) string {
		stm := c.ok("GET", "/sessions/"+sid+"/stm", "")["stm"]
		preds := c.ok("GET", "/sessions/"+sid+"/predictions", "")["predictions"]
		b, _ := json.Marshal([]any{stm, preds})
		return string(b)
	}
	for i, sid := range sids {
		before[i] = state(ca, sid)
	}

	if _, err := coord.BreakLock(context.Background(), cli, "m"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, etc, "b", coord.StatusRunning)
	for i, sid := range sids {
		if got := state(cb, sid); got != before[i] {
			t.Fatalf("session %d after the take-over:\n%s\nbefore:\n%s", i, got, before[i])
		}
	}
	// And it goes on: b serves, a forwards.
	if o := sessionObserve(ca, sids[3], "c"); o["processor_id"] != "b" {
		t.Fatalf("after the take-over: %v", o)
	}
}

// A session whose record would not fit one etcd record is refused with 413,
// and the session stays as etcd holds it.
func TestSessionRecordTooLarge(t *testing.T) {
	etc := etcdtest.New(t)
	n := startNode(t, etc, node.Config{ID: "a", Model: "m", Port: 0})
	c := client{t, n.APIURL()}
	sid := createSession(c, "m", "")
	sessionObserve(c, sid, "small")
	big := strings.Repeat("x", 2<<20)
	wantError(c, "POST", "/sessions/"+sid+"/observe", `{"strings":["`+big+`"],"vectors":[],"emotives":{}}`, 413, "CHANGE_TOO_LARGE", "at most")
	if got := c.ok("GET", "/sessions/"+sid+"/stm", ""); fmt.Sprint(got["stm"]) != "[[small]]" {
		t.Fatalf("STM after a refused observe: %v", got["stm"])
	}
	if o := sessionObserve(c, sid, "next"); o["time"] != 2.0 {
		t.Fatalf("time after a refused observe: %v", o)
	}
}
