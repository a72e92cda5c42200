package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node"
)

// startNode runs a node in-process on a real etcd and waits until it serves.
func startNode(t testing.TB, etc *etcdtest.Cluster, cfg node.Config) *node.Node {
	t.Helper()
	n := runNode(t, etc, cfg)
	etcdtest.Eventually(t, 20*time.Second, n.Ready, "node ready")
	return n
}

// runNode runs a node in-process on a real etcd, on loopback, until the
// test ends; stopped then, its Run must return nil.
func runNode(t testing.TB, etc *etcdtest.Cluster, cfg node.Config) *node.Node {
	t.Helper()
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	cfg.ListenHost, cfg.AdvertiseHost = "127.0.0.1", "127.0.0.1"
	n, err := node.New(cfg, cli, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return n
}

type client struct {
	t    *testing.T
	base string
}

func (c client) call(method, path, body string) (int, map[string]any) {
	c.t.Helper()
	req, _ := http.NewRequest(method, c.base+path, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		c.t.Fatalf("%s %s: not JSON: %s", method, path, b)
	}
	return resp.StatusCode, m
}

func (c client) ok(method, path, body string) map[string]any {
	c.t.Helper()
	code, m := c.call(method, path, body)
	if code != 200 {
		c.t.Fatalf("%s %s: %d %v", method, path, code, m)
	}
	return m
}

func observe(c client, id string, strs ...string) {
	c.t.Helper()
	b, _ := json.Marshal(map[string]any{"strings": strs, "vectors": []any{}, "emotives": map[string]any{}})
	c.ok("POST", "/"+id+"/observe", string(b))
}

// PROCESSOR.md §7.9 over real HTTP: names, fields and values of both predictions.
func TestWorkedExample1OverHTTP(t *testing.T) {
	etc := etcdtest.New(t)
	n := startNode(t, etc, node.Config{ID: "kato1", Port: 0})
	c := client{t, n.APIURL()}
	observe(c, "kato1", "b", "a")
	observe(c, "kato1", "c")
	observe(c, "kato1", "d")
	if m := c.ok("POST", "/kato1/learn", ""); m["message"] != "MODEL|d31a36e9ce0eb82e3ec5e48ff40e4861474db5a1" {
		t.Fatalf("learn: %v", m)
	}
	for i := 0; i < 2; i++ {
		observe(c, "kato1", "a")
		observe(c, "kato1", "x")
		observe(c, "kato1", "d")
		c.ok("POST", "/kato1/learn", "")
	}
	observe(c, "kato1", "a")
	observe(c, "kato1", "z", "c")
	preds := c.ok("GET", "/kato1/predictions", "")["message"].([]any)
	if len(preds) != 2 {
		t.Fatalf("%d predictions", len(preds))
	}
	want := []map[string]any{
		{"name": "MODEL|d31a36e9ce0eb82e3ec5e48ff40e4861474db5a1", "frequency": 1.0, "potential": 2.184487529749,
			"similarity": 0.5714285714285714, "fragmentation": 1.0, "snr": 0.6, "entropy": 1.185475297227,
			"hamiltonian": 0.682606194486, "grand_hamiltonian": 0.510556420691, "confluence": 0.332333333333,
			"confidence": 0.6666666666666666, "itfdf_similarity": 0.984487529749, "evidence": 0.5},
		{"name": "MODEL|3c8cdbad2ec1102620945ab960df9587a3908d9d", "frequency": 2.0, "potential": 1.965788865367,
			"similarity": 0.3333333333333333, "snr": 0.0, "entropy": 0.52108967825, "confluence": 0.466666666667,
			"itfdf_similarity": 0.965788865367, "confidence": 1.0},
	}
	for i, w := range want {
		p := preds[i].(map[string]any)
		if len(p) != 21 {
			t.Errorf("prediction %d has %d fields, want 21", i, len(p))
		}
		for k, v := range w {
			switch wv := v.(type) {
			case float64:
				if gv, ok := p[k].(float64); !ok || math.Abs(gv-wv) > 1e-12 {
					t.Errorf("prediction %d %s = %v, want %v", i, k, p[k], wv)
				}
			default:
				if p[k] != v {
					t.Errorf("prediction %d %s = %v, want %v", i, k, p[k], v)
				}
			}
		}
	}
	if got := fmt.Sprint(preds[0].(map[string]any)["present"]); got != "[[a b] [c]]" {
		t.Errorf("present %s", got)
	}
}

// D6: JSON errors with the right codes, through real HTTP.
func TestErrorModel(t *testing.T) {
	etc := etcdtest.New(t)
	n := startNode(t, etc, node.Config{ID: "e", Port: 0, MaxBodyBytes: 1024})
	c := client{t, n.APIURL()}
	for _, tc := range []struct {
		method, path, body string
		code               int
		errCode            string
	}{
		{"POST", "/e/observe", "{not json", 400, "INVALID_JSON"},
		{"POST", "/e/observe", `{"strings":[1],"vectors":[],"emotives":{}}`, 400, "INVALID_OBSERVATION"},
		{"POST", "/e/observe", `{"strings":["a"],"vectors":[[1,2],[1]],"emotives":{}}`, 400, "INVALID_OBSERVATION"},
		{"POST", "/e/genes/change", `{"data":{"no_such_gene":1}}`, 400, "INVALID_GENE"},
		{"POST", "/e/genes/change", `{"data":{"max_predictions":-1}}`, 400, "INVALID_GENE"},
		{"GET", "/e/model/0123", "", 404, "MODEL_NOT_FOUND"},
		{"GET", "/e/gene/nope", "", 404, "GENE_NOT_FOUND"},
		{"GET", "/nobody/ping", "", 404, "PROCESSOR_NOT_FOUND"},
		{"GET", "/e/no-such-route", "", 404, "NOT_FOUND"},
		{"POST", "/e/observe", `{"strings":["` + strings.Repeat("x", 2000) + `"],"vectors":[],"emotives":{}}`, 413, "BODY_TOO_LARGE"},
	} {
		code, m := c.call(tc.method, tc.path, tc.body)
		if code != tc.code || m["status"] != "error" || m["error_code"] != tc.errCode || m["message"] == "" {
			t.Errorf("%s %s: %d %v, want %d %s", tc.method, tc.path, code, m, tc.code, tc.errCode)
		}
	}
	// A gene change applies at once and is recorded in the registry (D2).
	c.ok("POST", "/e/genes/change", `{"data":{"max_predictions":7}}`)
	if m := c.ok("GET", "/e/gene/max_predictions", ""); m["gene_value"] != 7.0 {
		t.Fatalf("gene after change: %v", m)
	}
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	in, err := coord.GetInstance(context.Background(), cli, "e")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(in.Genes), `"max_predictions":7`) {
		t.Fatalf("registry genes not updated: %s", in.Genes)
	}
}

func waitStatus(t *testing.T, etc *etcdtest.Cluster, id string, st coord.Status) {
	t.Helper()
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	etcdtest.EventuallyNoError(t, 20*time.Second, func() error {
		in, err := coord.GetInstance(context.Background(), cli, id)
		if err == nil && in.Status != st {
			err = fmt.Errorf("%+v", in)
		}
		return err
	}, "%s %s", id, st)
}

// An admin breaking the lock (katoctl locks break) sends the holder back to
// standby; the waiting node takes over with every pattern, and the old
// holder forwards to it.
func TestBrokenLockHandsOver(t *testing.T) {
	etc := etcdtest.New(t)
	a := startNode(t, etc, node.Config{ID: "a", Model: "m", Port: 0})
	c := client{t, a.APIURL()}
	observe(c, "m", "one", "two")
	learned := c.ok("POST", "/m/learn", "")["message"].(string)

	cli := namespaced(t, etc)
	startStandby(t, etc, "b", "m")

	if _, err := coord.BreakLock(context.Background(), cli, "m"); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, etc, "b", coord.StatusRunning)
	waitStatus(t, etc, "a", coord.StatusStandby)
	if a.Ready() {
		t.Fatal("a still ready after its lock was broken")
	}
	// Through a, by model name: forwarded to b, which has the pattern, once
	// a's lock directory has seen b take the lock (until then a answers
	// 503 NO_HOLDER, "retry").
	var m map[string]any
	etcdtest.Eventually(t, 10*time.Second, func() bool {
		code, body := c.call("GET", "/m/model/"+strings.TrimPrefix(learned, "MODEL|"), "")
		m = body
		return code == 200
	}, "a forwards to the new holder b")
	if m["message"].(map[string]any)["frequency"] != 1.0 {
		t.Fatalf("model after hand-over: %v", m)
	}
	observe(c, "m", "three", "four")
	if got := c.ok("POST", "/m/learn", "")["message"].(string); !strings.HasPrefix(got, "MODEL|") {
		t.Fatalf("learn through a after hand-over: %q", got)
	}
}

// A node that cannot get its model lock within --lock-timeout stops with an
// error that says so, and leaves nothing behind in the registry.
func TestLockTimeoutEndsTheNode(t *testing.T) {
	etc := etcdtest.New(t)
	startNode(t, etc, node.Config{ID: "holder", Model: "m", Port: 0})
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	n, err := node.New(node.Config{ID: "late", Model: "m", Port: 0, ListenHost: "127.0.0.1", AdvertiseHost: "127.0.0.1",
		LockTimeout: time.Second}, cli, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err = n.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "no lock after --lock-timeout 1s") || !strings.Contains(err.Error(), "holder") {
		t.Fatalf("Run = %v, want the lock timeout naming the holder", err)
	}
	if _, err := coord.GetInstance(ctx, cli, "late"); !errors.Is(err, coord.ErrNotFound) {
		t.Fatalf("record of the timed-out node: %v, want it gone", err)
	}
}
