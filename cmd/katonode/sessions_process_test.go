package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord"
)

// kill -9 of the holder in the middle of 20 active KATO 3 sessions: the
// clients talk only to the standby, which forwards, then takes over. Every
// acknowledged observe of every session is in its STM after the take-over,
// exactly once (a client whose answer was lost looks at the STM before it
// retries), and each session's predictions are those of a fresh session
// given the same observations.
func TestSessionsSurviveKill9(t *testing.T) {
	c := newCluster(t)
	const ttl = 3 * time.Second
	a, _, _, rb := c.holderAndStandby("shared", ttl)
	client := api{t, rb.APIURL}
	for i := 0; i < 5; i++ {
		client.ok("POST", "/shared/observe", obs(fmt.Sprintf("k%d", i)))
		client.ok("POST", "/shared/observe", obs(fmt.Sprintf("k%d", (i+1)%5)))
		client.ok("POST", "/shared/learn", "")
	}

	const sessions, steps = 20, 30
	step := func(i, j int) string { return obs(fmt.Sprintf("k%d", j%5), fmt.Sprintf("s%d-%d", i, j)) }
	sids := make([]string, sessions)
	for i := range sids {
		sids[i] = client.ok("POST", "/sessions", `{"node_id":"shared","config":{"recall_threshold":0.02}}`)["session_id"].(string)
	}
	stmOf := func(sid string) ([][]string, bool) {
		r := client.do("GET", "/sessions/"+sid+"/stm", "")
		if r.code != 200 {
			return nil, false
		}
		var m struct{ STM [][]string }
		json.Unmarshal(r.body, &m)
		return m.STM, true
	}
	halfway := make(chan struct{}, sessions)
	var wg sync.WaitGroup
	errs := make(chan error, sessions)
	for i, sid := range sids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			deadline := time.Now().Add(2 * time.Minute)
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for j := 0; j < steps; j++ {
				if j == steps/2 {
					halfway <- struct{}{}
				}
				mine := fmt.Sprintf("s%d-%d", i, j)
				for {
					r := client.do("POST", "/sessions/"+sid+"/observe", step(i, j))
					if r.code == 200 {
						break
					}
					if r.code != http.StatusServiceUnavailable && r.code != -1 {
						errs <- fmt.Errorf("session %d step %d: %d %s", i, j, r.code, r.body)
						return
					}
					// The answer was lost: once the STM can be read, did the observe land?
					stm, ok := stmOf(sid)
					for ; !ok && time.Now().Before(deadline); stm, ok = stmOf(sid) {
						<-tick.C
					}
					if !ok {
						errs <- fmt.Errorf("session %d step %d: no answer: %d %s", i, j, r.code, r.body)
						return
					}
					if len(stm) > 0 && strings.Contains(fmt.Sprint(stm[len(stm)-1]), mine) {
						break
					}
				}
			}
		}()
	}
	for range sessions {
		<-halfway
	}
	if err := a.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	c.waitStatus("b", coord.StatusRunning)

	for i, sid := range sids {
		stm, ok := stmOf(sid)
		if !ok || len(stm) != steps {
			t.Fatalf("session %d: STM of %d events after the take-over, want %d: %v", i, len(stm), steps, stm)
		}
		for j, ev := range stm {
			if want := fmt.Sprintf("[k%d s%d-%d]", j%5, i, j); fmt.Sprint(ev) != want {
				t.Fatalf("session %d event %d: %v, want %s", i, j, ev, want)
			}
		}
		got := client.do("GET", "/sessions/"+sid+"/predictions", "")
		if got.hdr.Get("X-Kato-Served-By") != "b" {
			t.Fatalf("served by %q after the take-over", got.hdr.Get("X-Kato-Served-By"))
		}
		fresh := client.ok("POST", "/sessions", `{"node_id":"shared","config":{"recall_threshold":0.02}}`)["session_id"].(string)
		for j := 0; j < steps; j++ {
			client.ok("POST", "/sessions/"+fresh+"/observe", step(i, j))
		}
		want := client.do("GET", "/sessions/"+fresh+"/predictions", "")
		strip := func(b []byte) string { return strings.ReplaceAll(string(b), fresh, sid) }
		if string(got.body) != strip(want.body) || !strings.Contains(string(got.body), `"name"`) {
			t.Fatalf("session %d predictions after the take-over:\n%s\nfresh session:\n%s", i, got.body, want.body)
		}
		client.ok("DELETE", "/sessions/"+fresh, "")
	}
	if n := client.ok("GET", "/sessions/count", "")["active_session_count"]; n != float64(sessions) {
		t.Fatalf("count after the take-over: %v", n)
	}
}
