// This file is the workload: clients that learn through every node, send
// messages between nodes and write to etcd directly, recording each answer.

package faults

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/node/api"
)

// requestTimeout bounds every client request of the workloads.
const requestTimeout = 3 * time.Second

// MsgKind is the kind of the workload's messages (a node handles it by
// deleting it, as every kind it does not know).
const MsgKind = "faulttest"

// clients are the workloads: learners, messengers and an etcd writer. Each
// runs until its ctx ends.
type clients struct {
	c      *Cluster
	log    *Log
	msgTTL time.Duration
	// quiet is held (read) by every learner for each learn it makes; a
	// fault that needs the holders idle holds it (write) while it sets up.
	quiet sync.RWMutex
}

type answer struct {
	status   int
	body     []byte
	servedBy string
	err      error
}

func (w *clients) do(ctx context.Context, method, url string, body []byte) answer {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, bytes.NewReader(body))
	if err != nil {
		return answer{err: err}
	}
	resp, err := w.c.HTTP.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return answer{status: resp.StatusCode, body: b, servedBy: resp.Header.Get(api.ServedByHeader), err: err}
}

// outcome turns an answer into an op outcome: 200 is acknowledged, another
// status refused, no answer unknown.
func outcome(a answer) (string, string) {
	switch {
	case a.status == http.StatusOK && a.err == nil:
		return OK, ""
	case a.status != 0:
		return Fail, strings.TrimSpace(string(a.body))
	default:
		return Unknown, fmt.Sprint(a.err)
	}
}

func observeBody(strs ...string) []byte {
	b, _ := json.Marshal(map[string]any{"strings": strs, "vectors": []any{}, "emotives": map[string]any{}})
	return b
}

// learnPattern returns the pattern name of a learn answer (without MODEL|).
func learnPattern(body []byte) string {
	var m struct {
		Message string `json:"message"`
	}
	json.Unmarshal(body, &m)
	return strings.TrimPrefix(m.Message, "MODEL|")
}

// learnOnce observes two events and learns them, through node n, for model.
func (w *clients) learnOnce(ctx context.Context, n *Node, model, token string, late bool) {
	for i, ev := range [][]string{{token + "a", token + "b"}, {token + "c"}} {
		start := time.Now()
		a := w.do(ctx, http.MethodPost, n.APIURL+"/"+model+"/observe", observeBody(ev...))
		out, msg := outcome(a)
		w.log.Add(Op{Kind: OpObserve, Node: n.ID, Model: model, Start: start, End: time.Now(), Outcome: out,
			Status: a.status, ServedBy: a.servedBy, Error: msg, Late: late})
		if out != OK && i == 0 {
			return
		}
	}
	start := time.Now()
	a := w.do(ctx, http.MethodPost, n.APIURL+"/"+model+"/learn", nil)
	w.addLearn(n, model, start, a, late)
}

func (w *clients) addLearn(n *Node, model string, start time.Time, a answer, late bool) {
	out, msg := outcome(a)
	op := Op{Kind: OpLearn, Node: n.ID, Model: model, Start: start, End: time.Now(), Outcome: out,
		Status: a.status, ServedBy: a.servedBy, Error: msg, Late: late}
	if out == OK {
		op.Pattern = learnPattern(a.body)
	}
	w.log.Add(op)
}

// pace waits d, or until ctx ends (false).
func pace(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// learner learns through random nodes for random models until ctx ends.
func (w *clients) learner(ctx context.Context, i int, rng *rand.Rand) {
	models := w.c.Models()
	for seq := 0; ctx.Err() == nil; seq++ {
		n := w.c.Nodes[rng.IntN(len(w.c.Nodes))]
		w.quiet.RLock()
		w.learnOnce(ctx, n, models[rng.IntN(len(models))], fmt.Sprintf("l%d-%d-", i, seq), false)
		w.quiet.RUnlock()
		if !pace(ctx, 10*time.Millisecond) {
			return
		}
	}
}

// sendReply is the answer to POST /{id}/messages.
type sendReply struct {
	Message struct {
		ID        string    `json:"id"`
		Key       string    `json:"key"`
		Revision  int64     `json:"revision"`
		ExpiresAt time.Time `json:"expires_at"`
	} `json:"message"`
}

// messenger sends messages through random nodes to random nodes.
func (w *clients) messenger(ctx context.Context, i int, rng *rand.Rand) {
	for seq := 0; ctx.Err() == nil; seq++ {
		n := w.c.Nodes[rng.IntN(len(w.c.Nodes))]
		to := w.c.Nodes[rng.IntN(len(w.c.Nodes))].ID
		body, _ := json.Marshal(map[string]string{"kind": MsgKind, "body": fmt.Sprintf("m%d-%d", i, seq), "ttl": w.msgTTL.String()})
		start := time.Now()
		a := w.do(ctx, http.MethodPost, n.APIURL+"/"+to+"/messages", body)
		out, msg := outcome(a)
		op := Op{Kind: OpSend, Node: n.ID, To: to, Start: start, End: time.Now(), Outcome: out, Status: a.status, Error: msg}
		if out == OK {
			var rep sendReply
			if err := json.Unmarshal(a.body, &rep); err != nil || rep.Message.Key == "" {
				op.Outcome, op.Error = Fail, fmt.Sprintf("unreadable answer %s", a.body)
			}
			op.MsgKey, op.MsgRev, op.ExpiresAt = rep.Message.Key, rep.Message.Revision, rep.Message.ExpiresAt
		}
		w.log.Add(op)
		if !pace(ctx, 50*time.Millisecond) {
			return
		}
	}
}

// etcdWriter puts new keys straight into etcd.
func (w *clients) etcdWriter(ctx context.Context) {
	for seq := 0; ctx.Err() == nil; seq++ {
		key, val := fmt.Sprintf("faults/etcd/%08d", seq), fmt.Sprintf("v%d", seq)
		pctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), time.Second)
		start := time.Now()
		_, err := w.c.Client.Put(pctx, key, val)
		cancel()
		op := Op{Kind: OpPut, Key: key, Value: val, Start: start, End: time.Now(), Outcome: OK}
		if err != nil {
			// A put that timed out may still be applied; one refused was not,
			// but the checker needs neither.
			op.Outcome, op.Error = Unknown, err.Error()
		}
		w.log.Add(op)
		if !pace(ctx, 20*time.Millisecond) {
			return
		}
	}
}

// lateLearns puts learn requests for model into node n's socket without
// waiting for answers (the node is paused or cannot hear etcd), and returns a
// function that reads the answers (bounded) and records them.
func (w *clients) lateLearns(n *Node, model string, count int) func() {
	var conns []net.Conn
	var starts []time.Time
	host := strings.TrimPrefix(n.APIURL, "http://")
	for i := 0; i < count; i++ {
		conn, err := net.DialTimeout("tcp", host, time.Second)
		if err != nil {
			continue
		}
		start := time.Now()
		if _, err := fmt.Fprintf(conn, "POST /%s/learn HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", model, host); err != nil {
			conn.Close()
			continue
		}
		conns = append(conns, conn)
		starts = append(starts, start)
	}
	return func() {
		var wg sync.WaitGroup
		for i, conn := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				conn.SetReadDeadline(time.Now().Add(15 * time.Second))
				var a answer
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					a.err = err
				} else {
					a.status, a.servedBy = resp.StatusCode, resp.Header.Get(api.ServedByHeader)
					a.body, a.err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				w.addLearn(n, model, starts[i], a, true)
			}()
		}
		wg.Wait()
	}
}

// verify reads every acknowledged pattern back through the API, each from
// the next node in turn, retrying a 503 (no holder for a moment) for up to
// 10 s in all (a model nobody can load fails every read at once).
func (w *clients) verify(ctx context.Context, ops []Op) {
	i := 0
	deadline := time.Now().Add(10 * time.Second)
	for _, op := range ops {
		if op.Kind != OpLearn || op.Outcome != OK || op.Pattern == "" {
			continue
		}
		n := w.c.Nodes[i%len(w.c.Nodes)]
		i++
		for {
			start := time.Now()
			a := w.do(ctx, http.MethodGet, n.APIURL+"/"+op.Model+"/model/"+op.Pattern, nil)
			if (a.status == http.StatusServiceUnavailable || a.status == 0) && time.Now().Before(deadline) && ctx.Err() == nil {
				pace(ctx, 200*time.Millisecond)
				continue
			}
			out, msg := outcome(a)
			w.log.Add(Op{Kind: OpCheck, Node: n.ID, Model: op.Model, Pattern: op.Pattern, Start: start, End: time.Now(),
				Outcome: out, Status: a.status, ServedBy: a.servedBy, Error: msg})
			break
		}
	}
}
