package node_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node"
	"github.com/kato-coord/kato/node/processor"
)

// BenchmarkSessionsVsInstance measures session observes over HTTP with 1, 8
// and 64 concurrent sessions of one model against instance observes (the
// same number of concurrent clients on /{model}/observe) on the same node
// and etcd, in one run, and prints rates, p99 and the ratio. Each kind runs
// KATO_SESSION_BENCH_SECONDS (default 3) per scenario, in alternating slices.
//
//	go test ./node/ -run '^$' -bench SessionsVsInstance -benchtime 1x
func BenchmarkSessionsVsInstance(b *testing.B) {
	secs := 3.0
	if s := os.Getenv("KATO_SESSION_BENCH_SECONDS"); s != "" {
		secs, _ = strconv.ParseFloat(s, 64)
	}
	etc := etcdtest.New(b)
	genes := processor.DefaultConfig()
	genes.MaxSequenceLength = 10
	n := startNode(b, etc, node.Config{ID: "a", Model: "m", Port: 0, Genes: genes})
	base := n.APIURL()
	tr := &http.Transport{MaxIdleConnsPerHost: 128}
	hc := &http.Client{Transport: tr}
	defer tr.CloseIdleConnections()
	post := func(path string, body []byte) error {
		resp, err := hc.Post(base+path, "application/json", bytes.NewReader(body))
		if err != nil {
			return err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: %d", path, resp.StatusCode)
		}
		return nil
	}
	body := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"strings":["k%d","x%d"],"vectors":[],"emotives":{"joy":0.5}}`, i%7, i%13))
	}
	// A model to predict from.
	for i := 0; i < 200; i++ {
		if err := post("/m/observe", body(i)); err != nil {
			b.Fatal(err)
		}
	}

	// run drives conc clients for d, each POSTing to its path, and returns
	// the observes done and the latencies.
	run := func(paths []string, d time.Duration) (int, []time.Duration) {
		var mu sync.Mutex
		var lats []time.Duration
		var wg sync.WaitGroup
		end := time.Now().Add(d)
		for c, path := range paths {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var mine []time.Duration
				for i := c; time.Now().Before(end); i++ {
					start := time.Now()
					if err := post(path, body(i)); err != nil {
						b.Error(err)
						return
					}
					mine = append(mine, time.Since(start))
				}
				mu.Lock()
				lats = append(lats, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return len(lats), lats
	}
	p99 := func(l []time.Duration) time.Duration {
		if len(l) == 0 {
			return 0
		}
		slices.Sort(l)
		return l[len(l)*99/100]
	}
	fmt.Printf("# %d CPUs; %.0fs per kind and scenario in slices of 500ms; etcd in-process (etcdtest)\n", runtime.NumCPU(), secs)
	fmt.Printf("%-10s %14s %12s %14s %12s %7s\n", "CLIENTS", "SESSIONS/s", "p99", "INSTANCE/s", "p99", "RATIO")
	for _, conc := range []int{1, 8, 64} {
		sessPaths := make([]string, conc)
		instPaths := make([]string, conc)
		for i := range sessPaths {
			resp, err := hc.Post(base+"/sessions", "application/json", bytes.NewReader([]byte(`{"node_id":"m"}`)))
			if err != nil {
				b.Fatal(err)
			}
			var m struct {
				SessionID string `json:"session_id"`
			}
			json.NewDecoder(resp.Body).Decode(&m)
			resp.Body.Close()
			sessPaths[i] = "/sessions/" + m.SessionID + "/observe"
			instPaths[i] = "/m/observe"
		}
		slice := 500 * time.Millisecond
		var sn, in int
		var sl, il []time.Duration
		var st, it time.Duration
		for round := 0; time.Duration(round)*slice < time.Duration(secs*float64(time.Second)); round++ {
			order := []bool{round%2 == 0, round%2 != 0}
			for _, sessions := range order {
				start := time.Now()
				if sessions {
					k, l := run(sessPaths, slice)
					sn, sl, st = sn+k, append(sl, l...), st+time.Since(start)
				} else {
					k, l := run(instPaths, slice)
					in, il, it = in+k, append(il, l...), it+time.Since(start)
				}
			}
		}
		sr, ir := float64(sn)/st.Seconds(), float64(in)/it.Seconds()
		fmt.Printf("%-10d %14.0f %12v %14.0f %12v %7.2f\n", conc, sr, p99(sl).Round(10*time.Microsecond), ir, p99(il).Round(10*time.Microsecond), sr/ir)
	}
}
