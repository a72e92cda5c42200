package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord"
)

// repeated is head, then item n times joined by commas (item may hold %d
// for the index), then tail.
func repeated(head, item, tail string, n int) string {
	var b strings.Builder
	b.WriteString(head)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		if strings.Contains(item, "%d") {
			fmt.Fprintf(&b, item, i)
		} else {
			b.WriteString(item)
		}
	}
	b.WriteString(tail)
	return b.String()
}

// procMemory returns a process's resident set and its peak, in bytes.
func procMemory(t *testing.T, pid int) (rss, peak int64) {
	t.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc: %v", err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			peak = kb << 10
		}
	}
	return rss, peak
}

// rawRequest sends raw bytes on a new connection (optionally closing its
// write side) and returns the status code of the answer, or -1.
func rawRequest(t *testing.T, base, raw string, closeWrite bool) int {
	t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.WriteString(conn, raw); err != nil {
		t.Fatal(err)
	}
	if closeWrite {
		conn.(*net.TCPConn).CloseWrite()
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

// The hostile-input suite of issue 18: each body is sent to a node that
// holds a model with learned patterns. Every one gets its status code, the
// node keeps its session and its lock, its memory stays bounded, and it
// predicts afterwards exactly what it predicted before. A one-symbol observe
// sent alongside each hostile one is answered (it does not wait behind the
// decoding: that happens before any lock).
func TestHostileInputLeavesNodeAndModelAlone(t *testing.T) {
	c := newCluster(t)
	p := c.node("--id", "h", "--port", "0", "--log-level", "info")
	before := c.waitStatus("h", coord.StatusRunning)
	client := api{t, before.APIURL}
	for i := 0; i < 50; i++ {
		client.ok("POST", "/h/observe", obs(fmt.Sprintf("a%d", i), "x"))
		client.ok("POST", "/h/observe", obs(fmt.Sprintf("b%d", i%7)))
		client.ok("POST", "/h/learn", "")
	}
	predict := func() []byte {
		client.ok("POST", "/h/clear-working-memory", "")
		client.ok("POST", "/h/observe", obs("a3", "x"))
		client.ok("POST", "/h/observe", obs("b3"))
		r := client.do("GET", "/h/predictions", "")
		if r.code != 200 || !bytes.Contains(r.body, []byte(`"name"`)) {
			t.Fatalf("predictions: %d %s", r.code, r.body)
		}
		return r.body
	}
	want := predict()
	rss0, _ := procMemory(t, p.cmd.Process.Pid)

	const objTail = `}}`
	cases := []struct {
		name, method, path, body string
		code                     int
	}{
		{"metadata with 50k keys", "POST", "/h/observe", repeated(`{"strings":["q"],"vectors":[],"emotives":{},"metadata":{`, `"k%d":0`, objTail, 50000), 200},
		{"emotives with 20k keys", "POST", "/h/observe", repeated(`{"strings":[],"vectors":[],"emotives":{`, `"e%d":1`, objTail, 20000), 200},
		{"a list where a gene number goes", "POST", "/h/genes/change", repeated(`{"data":{"max_predictions":[`, `0`, `]}}`, 2000000), 400},
		{"an unknown gene", "POST", "/h/genes/change", `{"data":{"no_such_gene":1}}`, 400},
		{"numbers where strings go", "POST", "/h/observe", repeated(`{"strings":[`, `0`, `],"vectors":[],"emotives":{}}`, 2000000), 400},
		{"invalid JSON", "POST", "/h/observe", `{"strings":["a"`, 400},
		{"nesting 100k deep", "POST", "/h/observe", strings.Repeat("[", 100000) + strings.Repeat("]", 100000), 400},
		{"NaN", "POST", "/h/observe", `{"strings":[],"vectors":[[NaN]],"emotives":{}}`, 400},
		{"Infinity", "POST", "/h/observe", `{"strings":[],"vectors":[],"emotives":{"e":Infinity}}`, 400},
		{"1e400", "POST", "/h/observe", `{"strings":[],"vectors":[[1e400]],"emotives":{}}`, 400},
		{"over the body limit", "POST", "/h/observe", `{"strings":["` + strings.Repeat("x", 5<<20) + `"],"vectors":[],"emotives":{}}`, 413},
		{"path out of the tree", "GET", "/h/../../etc/passwd", "", 404},
		{"escaped dots", "GET", "/%2e%2e/%2e%2e/predictions", "", 404},
		{"model name with a slash", "GET", "/h/model/..%2f..%2fx", "", 404},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var wg sync.WaitGroup
			var small reply
			wg.Add(1)
			go func() {
				defer wg.Done()
				small = client.do("POST", "/h/working-memory/clear", "")
			}()
			r := client.do(tc.method, tc.path, tc.body)
			wg.Wait()
			if r.code != tc.code {
				t.Errorf("%s %s: %d %.200s, want %d", tc.method, tc.path, r.code, r.body, tc.code)
			}
			if r.code >= 400 && !bytes.Contains(r.body, []byte(`"error_code"`)) && r.code != 404 {
				t.Errorf("error without the D6 body: %.200s", r.body)
			}
			if small.code != 200 {
				t.Errorf("a small request sent alongside: %d %s", small.code, small.body)
			}
		})
	}
	// A body cut short: the client announces more than it sends.
	if code := rawRequest(t, before.APIURL, "POST /h/observe HTTP/1.1\r\nHost: h\r\nContent-Length: 1000\r\n\r\n{\"strings\":", true); code != 400 {
		t.Errorf("body cut short: %d, want 400", code)
	}

	after := c.waitStatus("h", coord.StatusRunning)
	if after.LeaseID != before.LeaseID {
		t.Errorf("the node lost its session: lease %s, then %s", before.LeaseID, after.LeaseID)
	}
	if r := client.do("GET", "/readyz", ""); r.code != 200 {
		t.Errorf("not ready after the hostile input: %d %s", r.code, r.body)
	}
	if got := predict(); !bytes.Equal(got, want) {
		t.Errorf("predictions changed:\nbefore %s\nafter  %s", want, got)
	}
	rss, peak := procMemory(t, p.cmd.Process.Pid)
	t.Logf("node memory: RSS %d MiB before, %d MiB after, peak %d MiB", rss0>>20, rss>>20, peak>>20)
	// 569 MB for one 4 MiB gene change before issue 18; decoding is now
	// bounded by a small multiple of the body (the race detector, which
	// these tests may run under, multiplies memory by up to ten).
	if limit := rss0 + 400<<20; peak > limit {
		t.Errorf("peak RSS %d MiB, over %d MiB", peak>>20, limit>>20)
	}
	for _, bad := range []string{"panic", "goroutine ", "INTERNAL"} {
		if strings.Contains(p.out.String(), bad) {
			t.Errorf("the node's log holds %q", bad)
		}
	}
}
