package console_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node"
)

const token = "tok"

// runNode runs a node in-process on etc and returns it with a func that
// stops it and says how long Run took to return.
func runNode(t *testing.T, etc *etcdtest.Cluster, id, model string, opts ...func(*node.Config)) (*node.Node, func() time.Duration) {
	t.Helper()
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	cfg := node.Config{ID: id, Model: model, ListenHost: "127.0.0.1", AdvertiseHost: "127.0.0.1",
		TTL: 2 * time.Second, APIToken: token, DrainTimeout: 30 * time.Second}
	for _, o := range opts {
		o(&cfg)
	}
	n, err := node.New(cfg, cli, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	var stopped bool
	stop := func() time.Duration {
		if stopped {
			return 0
		}
		stopped = true
		start := time.Now()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run of %s: %v", id, err)
		}
		return time.Since(start)
	}
	t.Cleanup(func() { stop() })
	return n, stop
}

// stream is an open /ui/api/events stream.
type stream struct {
	t    *testing.T
	evs  chan [2]string // event name, data
	body io.ReadCloser
	seen map[string]string // the last data of each section read so far
}

func openStream(t *testing.T, base, tok string) (*stream, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", base+"/ui/api/events", nil)
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, resp.StatusCode
	}
	s := &stream{t: t, evs: make(chan [2]string, 1024), body: resp.Body, seen: map[string]string{}}
	t.Cleanup(func() { resp.Body.Close() })
	go func() {
		defer close(s.evs)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 0, 4<<10), 1<<20)
		var name string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case strings.HasPrefix(line, "event: "):
				name = line[len("event: "):]
			case strings.HasPrefix(line, "data: "):
				s.evs <- [2]string{name, line[len("data: "):]}
			}
		}
	}()
	return s, http.StatusOK
}

type envelope[T any] struct {
	Self string `json:"self"`
	Data T      `json:"data"`
}

type instanceRow struct {
	ID     string  `json:"id"`
	Status string  `json:"status"`
	GoneAt *string `json:"gone_at"`
}

type modelRow struct {
	Model   string `json:"model"`
	Holder  string `json:"holder"`
	Waiters []struct {
		ID string `json:"id"`
	} `json:"waiters"`
}

// waitFor reads events until ok holds for section's latest, or d passes. A
// section is sent only when it changes, so the latest one read while
// waiting for another section counts too.
func waitFor[T any](s *stream, section string, d time.Duration, ok func(T) bool) T {
	s.t.Helper()
	deadline := time.After(d)
	last := s.seen[section]
	check := func(data string) (T, bool) {
		var env envelope[T]
		if err := json.Unmarshal([]byte(data), &env); err != nil {
			s.t.Fatalf("%s event does not decode: %v: %s", section, err, data)
		}
		return env.Data, ok(env.Data)
	}
	if last != "" {
		if v, done := check(last); done {
			return v
		}
	}
	for {
		select {
		case ev, open := <-s.evs:
			if !open {
				s.t.Fatalf("stream ended while waiting for %s (last: %s)", section, last)
			}
			s.seen[ev[0]] = ev[1]
			if ev[0] != section {
				continue
			}
			last = ev[1]
			if v, done := check(ev[1]); done {
				return v
			}
		case <-deadline:
			s.t.Fatalf("no %s event as wanted within %v; last: %s", section, d, last)
		}
	}
}

func row(rows []instanceRow, id string) (instanceRow, bool) {
	for _, r := range rows {
		if r.ID == id {
			return r, true
		}
	}
	return instanceRow{}, false
}

func post(t *testing.T, base, path, ctype, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", base+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The page is served without the token and with a CSP that allows no inline
// script; the stream needs the token, follows the registry and the lock
// queue, shows a stopped node as gone, and ends when the node shuts down, so
// that an open page does not hold the shutdown up for the drain timeout.
func TestStreamFollowsClusterAndEndsOnShutdown(t *testing.T) {
	etc := etcdtest.New(t)
	a, stopA := runNode(t, etc, "a", "m")
	base := a.APIURL()

	resp, err := http.Get(base + "/ui/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `<script src="app.js" defer>`) ||
		!strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("GET /ui/: %d, CSP %q\n%s", resp.StatusCode, resp.Header.Get("Content-Security-Policy"), page)
	}
	if _, code := openStream(t, base, ""); code != http.StatusUnauthorized {
		t.Fatalf("stream without the token: %d, want 401", code)
	}
	if _, code := openStream(t, base, "wrong"); code != http.StatusUnauthorized {
		t.Fatalf("stream with a wrong token: %d, want 401", code)
	}

	s, _ := openStream(t, base, token)
	waitFor(s, "instances", 20*time.Second, func(rows []instanceRow) bool {
		r, ok := row(rows, "a")
		return ok && r.Status == "running"
	})
	_, _ = runNode(t, etc, "b", "m")
	waitFor(s, "instances", 20*time.Second, func(rows []instanceRow) bool {
		r, ok := row(rows, "b")
		return ok && r.Status == "standby"
	})
	waitFor(s, "models", 20*time.Second, func(ms []modelRow) bool {
		return len(ms) == 1 && ms[0].Holder == "a" && len(ms[0].Waiters) == 1 && ms[0].Waiters[0].ID == "b"
	})
	waitFor(s, "etcd", 20*time.Second, func(v struct {
		Members []struct{ Leader bool } `json:"members"`
	}) bool {
		return len(v.Members) == 1 && v.Members[0].Leader
	})

	// Stop b from the console: a control message; b's row turns gone.
	if code, body := post(t, base, "/ui/api/stop", "application/json", `{"id":"b"}`); code != 200 || !strings.Contains(body, "asked b to stop") {
		t.Fatalf("stop b: %d %s", code, body)
	}
	waitFor(s, "instances", 30*time.Second, func(rows []instanceRow) bool {
		r, ok := row(rows, "b")
		return ok && r.GoneAt != nil && r.Status == "gone"
	})

	took := stopA()
	t.Logf("node a stopped %v after its context ended, with a console stream open", took)
	if took > 15*time.Second {
		t.Errorf("node a took %v to stop with a console stream open (drain timeout 30s)", took)
	}
	for range s.evs { // the stream must end
	}
}

// The event stream is the one long route: the server's read and write
// timeouts must not end it. The write timeout is the read timeout + 3 TTL +
// 10 s (node.server): wait past it.
func TestStreamOutlivesTheServerTimeouts(t *testing.T) {
	etc := etcdtest.New(t)
	const readTimeout, ttl = 300 * time.Millisecond, 2 * time.Second
	a, _ := runNode(t, etc, "a", "m", func(c *node.Config) { c.ReadTimeout, c.TTL = readTimeout, ttl })
	s, _ := openStream(t, a.APIURL(), token)
	opened := time.Now()
	// The poller sends the lease TTLs again every 2 s while a page is open:
	// an instances event after both timeouts shows the stream lives.
	past := readTimeout + 3*ttl + 10*time.Second + time.Second
	waitFor(s, "instances", past+20*time.Second, func(rows []instanceRow) bool {
		r, ok := row(rows, "a")
		return ok && r.Status == "running" && time.Since(opened) > past
	})
}

// The actions are katoctl's operations: break a lock (the next waiter takes
// it), remove an inbox nobody is registered for (refused for a registered
// one), send a message; bad requests get a clear error.
func TestActions(t *testing.T) {
	etc := etcdtest.New(t)
	n, _ := runNode(t, etc, "a", "m")
	base := n.APIURL()
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// Two holders of model "x" outside any node: break the first's lock.
	s1, err := coord.NewSession(ctx, cli, zap.NewNop(), coord.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s1.Close(context.Background())
	s2, err := coord.NewSession(ctx, cli, zap.NewNop(), coord.WithTTL(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close(context.Background())
	l1 := coord.NewModelLock(s1, "x", coord.WithHolder("first", "h1"))
	if _, err := l1.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	l2 := coord.NewModelLock(s2, "x", coord.WithHolder("second", "h2"))
	got := make(chan error, 1)
	go func() { _, err := l2.Lock(ctx); got <- err }()
	waitQueued(t, ctx, cli, "x", 2)
	code, body := post(t, base, "/ui/api/break", "application/json", `{"model":"x"}`)
	if code != 200 || !strings.Contains(body, "removed the key of first on h1") || !strings.Contains(body, "second on h2 takes the lock next") {
		t.Fatalf("break: %d %s", code, body)
	}
	if err := <-got; err != nil {
		t.Fatalf("the waiter did not get the lock after the break: %v", err)
	}
	select {
	case <-l1.Lost():
	case <-ctx.Done():
		t.Fatal("the broken holder did not see its lock lost")
	}
	if code, body := post(t, base, "/ui/api/break", "application/json", `{"model":"nobody-holds"}`); code != 404 || !strings.Contains(body, "NOT_FOUND") {
		t.Fatalf("break of a free model: %d %s", code, body)
	}

	// Send, then remove: refused for the registered a, done for gone-1.
	for _, to := range []string{"a", "gone-1", "gone-1"} {
		body := `{"to":"` + to + `","kind":"note","body":"<b>hi</b>","ttl":"10m"}`
		if code, ans := post(t, base, "/ui/api/send", "application/json", body); code != 200 || !strings.Contains(ans, "sent message") {
			t.Fatalf("send to %s: %d %s", to, code, ans)
		}
	}
	if code, body := post(t, base, "/ui/api/inbox/remove", "application/json", `{"id":"a"}`); code != 409 || !strings.Contains(body, "INBOX_IN_USE") {
		t.Fatalf("remove a's inbox: %d %s", code, body)
	}
	if code, body := post(t, base, "/ui/api/inbox/remove", "application/json", `{"id":"gone-1"}`); code != 200 || !strings.Contains(body, "removed 2 messages waiting for gone-1") {
		t.Fatalf("remove gone-1's inbox: %d %s", code, body)
	}
	if msgs, err := coord.ListMessages(ctx, cli.KV, "gone-1"); err != nil || len(msgs) != 0 {
		t.Fatalf("gone-1's inbox after the removal: %v %v", msgs, err)
	}

	for _, tc := range []struct{ path, ctype, body, want string }{
		{"/ui/api/break", "text/plain", `{"model":"x"}`, "BAD_CONTENT_TYPE"},
		{"/ui/api/break", "application/json", `{"model":"x","extra":1}`, "unknown field"},
		{"/ui/api/break", "application/json", `{"model":"bad/name"}`, "invalid instance id"},
		{"/ui/api/send", "application/json", `{"to":"b","ttl":"10"}`, "use a duration"},
		{"/ui/api/stop", "application/json", `{"id":"nobody"}`, "nobody is not registered"},
		{"/ui/api/nothing", "application/json", `{}`, "no console route"},
	} {
		if code, body := post(t, base, tc.path, tc.ctype, tc.body); code < 400 || !strings.Contains(body, tc.want) {
			t.Errorf("POST %s %s: %d %s; want an error with %q", tc.path, tc.body, code, body, tc.want)
		}
	}
}

// waitQueued waits until model's lock queue holds n keys.
func waitQueued(t *testing.T, ctx context.Context, cli *clientv3.Client, model string, n int64) {
	t.Helper()
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		resp, err := cli.Get(ctx, coord.LockPrefix(model), clientv3.WithPrefix(), clientv3.WithCountOnly())
		return err == nil && resp.Count == n
	}, "lock queue of %s holds %d keys", model, n)
}

// etcdRequests counts the reads and transactions the in-process etcd
// servers of this test binary have served (their metrics live in the default
// registry).
func etcdRequests(t *testing.T) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var n float64
	for _, mf := range mfs {
		if name := mf.GetName(); name != "etcd_mvcc_range_total" && name != "etcd_mvcc_txn_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			n += m.GetCounter().GetValue()
		}
	}
	return n
}

// A hundred open pages cost etcd what one costs: streams are fed from memory,
// and one poller per node reads etcd whatever the number of viewers.
func TestHundredViewersCostWhatOneCosts(t *testing.T) {
	etc := etcdtest.New(t)
	n, _ := runNode(t, etc, "a", "m")
	first, _ := openStream(t, n.APIURL(), token)
	waitFor(first, "etcd", 20*time.Second, func(json.RawMessage) bool { return true })
	const window = 8 * time.Second
	measure := func() float64 {
		start := etcdRequests(t)
		deadline := time.After(window)
		for {
			select {
			case <-deadline:
				return etcdRequests(t) - start
			case _, open := <-first.evs:
				if !open {
					t.Fatal("stream ended")
				}
			}
		}
	}
	one := measure()
	if one == 0 {
		t.Fatal("no etcd reads counted with one page open: etcd_mvcc_range_total missing?")
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	heapOne, goroutinesOne := heap(), runtime.NumGoroutine()
	var more []*stream
	for i := 0; i < 99; i++ {
		s, code := openStream(t, n.APIURL(), token)
		if code != 200 {
			t.Fatalf("stream %d: %d", i, code)
		}
		more = append(more, s)
	}
	for _, s := range more {
		waitFor(s, "instances", 20*time.Second, func(json.RawMessage) bool { return true })
	}
	// What a viewer costs the process (both ends of each stream live in this
	// test binary): logged, not asserted.
	t.Logf("99 more open pages: %+d goroutines, %+.1f KiB heap (server and client sides)",
		runtime.NumGoroutine()-goroutinesOne, (float64(heap())-float64(heapOne))/1024)
	// Drain the other streams while measuring, as pages do.
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			for _, s := range more {
				select {
				case <-s.evs:
				case <-stop:
					return
				default:
				}
			}
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	hundred := measure()
	close(stop)
	<-done
	t.Logf("etcd requests in %v: %.0f with 1 open page, %.0f with 100 (ratio %.2f)", window, one, hundred, hundred/one)
	// Which polls fall in a window varies by one or two (each a dozen reads);
	// a read per viewer would multiply the count by about a hundred.
	if hundred > 3*one+30 {
		t.Errorf("100 open pages cost etcd %.0f requests in %v against %.0f for one", hundred, window, one)
	}
}
