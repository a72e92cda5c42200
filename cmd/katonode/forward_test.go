package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// A body over the limit sent to a standby is the standby's 413 (it was 503
// HOLDER_UNREACHABLE), and a forward with "Expect: 100-continue" is counted
// under its real status code, not 100.
func TestOversizedBodyThroughStandbyIs413(t *testing.T) {
	c := newCluster(t)
	c.node("--id", "a", "--model", "m", "--port", "0", "--max-body-bytes", "65536")
	c.waitStatus("a", coord.StatusRunning)
	c.node("--id", "b", "--model", "m", "--port", "0", "--max-body-bytes", "65536")
	rb := c.waitStatus("b", coord.StatusStandby)
	post := func(body string) (int, string) {
		req, err := http.NewRequest("POST", rb.APIURL+"/m/observe", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Expect", "100-continue")
		tr := &http.Transport{ExpectContinueTimeout: time.Second}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr, Timeout: 30 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post(`{"strings":["` + strings.Repeat("x", 100000) + `"],"vectors":[],"emotives":{}}`); code != http.StatusRequestEntityTooLarge || !strings.Contains(body, "BODY_TOO_LARGE") {
		t.Fatalf("oversized body through the standby: %d %s", code, body)
	}
	if code, body := post(obs("fine")); code != 200 {
		t.Fatalf("small body through the standby: %d %s", code, body)
	}
	metrics := api{t, rb.APIURL}.do("GET", "/metrics", "")
	if !bytes.Contains(metrics.body, []byte(`kato_http_requests_total{code="413",route="observe"} 1`)) ||
		!bytes.Contains(metrics.body, []byte(`kato_http_requests_total{code="200",route="observe"} 1`)) {
		t.Fatalf("the standby's request counter lacks the 413 and the 200:\n%s", grepLines(metrics.body, "kato_http_requests_total"))
	}
	if bytes.Contains(metrics.body, []byte(`code="100"`)) {
		t.Fatalf("status 100 counted:\n%s", grepLines(metrics.body, "kato_http_requests_total"))
	}
}

func grepLines(b []byte, s string) string {
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// A request forwarded to a holder that stopped answering (SIGSTOP) times
// out after the TTL (it hung for 35 s before). A read is then sent once more
// to the new holder, and again while that holder answers 503 (it takes the
// lock before it is ready), so the client gets its answer; a write is not,
// since the stopped holder may have applied it (a kill -9 after its commit
// looks the same from here): it is answered 503 OUTCOME_UNKNOWN, and the
// client reads before it sends it again.
func TestForwardToStoppedHolderRetriesNewHolder(t *testing.T) {
	c := newCluster(t)
	const ttl = 2 * time.Second
	a, _, _, _ := c.holderAndStandby("m", ttl)
	c.node("--id", "c", "--port", "0", "--ttl", ttl.String())
	rc := c.waitStatus("c", coord.StatusRunning)
	client := api{t, rc.APIURL}
	if r := client.do("POST", "/m/observe", obs("x")); r.code != 200 || r.hdr.Get("X-Kato-Served-By") != "a" {
		t.Fatalf("before the stop: %d %s (served by %q)", r.code, r.body, r.hdr.Get("X-Kato-Served-By"))
	}
	if err := a.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	defer a.cmd.Process.Signal(syscall.SIGCONT)
	type answer struct {
		code     int
		body     string
		servedBy string
		err      error
	}
	send := func(method, path, body string, out chan<- answer) {
		req, err := http.NewRequest(method, rc.APIURL+path, strings.NewReader(body))
		if err != nil {
			out <- answer{err: err}
			return
		}
		// A bound for the test, not a speed goal: the forward waits a TTL
		// for the stopped holder and up to another for the new one.
		resp, err := (&http.Client{Timeout: 10 * ttl}).Do(req)
		if err != nil {
			out <- answer{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out <- answer{code: resp.StatusCode, body: string(b), servedBy: resp.Header.Get("X-Kato-Served-By")}
	}
	read, write := make(chan answer, 1), make(chan answer, 1)
	go send("GET", "/m/working-memory", "", read)
	go send("POST", "/m/observe", obs("y"), write)
	if r := <-read; r.err != nil || r.code != 200 || r.servedBy != "b" {
		t.Fatalf("read forwarded while the holder is stopped: %d %s (served by %q, %v), want 200 from b", r.code, r.body, r.servedBy, r.err)
	}
	if w := <-write; w.err != nil || w.code != http.StatusServiceUnavailable || !strings.Contains(w.body, "OUTCOME_UNKNOWN") {
		t.Fatalf("write forwarded while the holder is stopped: %d %s (%v), want 503 OUTCOME_UNKNOWN", w.code, w.body, w.err)
	}
	m := client.do("GET", "/metrics", "")
	if !bytes.Contains(m.body, []byte(`kato_requests_forwarded_total{result="retried"} 1`)) {
		t.Fatalf("the retry is not counted:\n%s", grepLines(m.body, "kato_requests_forwarded_total"))
	}
}

// With etcd auth, a node whose mailbox receiver fails (here: its etcd user
// may not read its inbox yet) keeps starting it again, shows it in /readyz
// and its metrics, and receives messages once it can: katoctl stop reaches
// it. The receiver used to stop for good after one such error.
func TestMailboxReceiverRestartsAfterAnError(t *testing.T) {
	c := newCluster(t)
	ctx := c.ctx
	const user, password = "katonode", "node-secret"
	root := authCluster(t, c, user, password, false)
	p := c.node("--id", "mb", "--port", "0", "--user", user, "--password", password)
	in := c.waitStatusAs(root, "mb", coord.StatusRunning)
	client := api{t, in.APIURL}
	waitFor(t, ctx, func() error {
		r := client.do("GET", "/metrics", "")
		if !bytes.Contains(r.body, []byte("kato_mailbox_receiver_restarts_total 1")) &&
			!bytes.Contains(r.body, []byte("kato_mailbox_receiver_restarts_total 2")) {
			return fmt.Errorf("no receiver restart yet:\n%s", grepLines(r.body, "kato_mailbox"))
		}
		return nil
	})
	if r := client.do("GET", "/readyz", ""); !bytes.Contains(r.body, []byte(`"mailbox":"restarting"`)) && !bytes.Contains(r.body, []byte(`"mailbox":"receiving"`)) {
		t.Fatalf("/readyz does not show the mailbox: %s", r.body)
	}
	// Now the user may read its inbox: the next restart receives.
	if _, err := root.RoleGrantPermission(ctx, "kato-node", coord.DefaultPrefix+"inbox/", clientv3.GetPrefixRangeEnd(coord.DefaultPrefix+"inbox/"), clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, ctx, func() error {
		if r := client.do("GET", "/readyz", ""); !bytes.Contains(r.body, []byte(`"mailbox":"receiving"`)) {
			return fmt.Errorf("/readyz: %s", r.body)
		}
		if r := client.do("GET", "/metrics", ""); !bytes.Contains(r.body, []byte("kato_mailbox_receiving 1")) {
			return fmt.Errorf("metrics: %s", grepLines(r.body, "kato_mailbox"))
		}
		return nil
	})
	s, err := coord.NewSession(ctx, root, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	if _, err := coord.NewMailbox(s, "test").Send(ctx, "mb", coord.Message{Kind: coord.KindControl, Body: coord.ControlStop}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if code := p.wait(t, 60*time.Second); code != 0 {
		t.Fatalf("exit %d after the stop message", code)
	}
	if !strings.Contains(p.out.String(), "stop requested by message") {
		t.Fatalf("the stop message did not reach the node:\n%s", p.out.String())
	}
}

// authCluster turns etcd auth on with a root user and a node user whose
// role may read and write /kato/ (but not /kato/inbox/ unless inbox) and
// returns a root client confined to /kato/.
func authCluster(t *testing.T, c *cluster, user, password string, inbox bool) *clientv3.Client {
	t.Helper()
	ctx := c.ctx
	rw := clientv3.PermissionType(clientv3.PermReadWrite)
	p := coord.DefaultPrefix
	steps := []func() error{
		func() error { _, err := c.cli.RoleAdd(ctx, "kato-node"); return err },
		func() error {
			if inbox {
				_, err := c.cli.RoleGrantPermission(ctx, "kato-node", p, clientv3.GetPrefixRangeEnd(p), rw)
				return err
			}
			if _, err := c.cli.RoleGrantPermission(ctx, "kato-node", p, p+"inbox/", rw); err != nil {
				return err
			}
			_, err := c.cli.RoleGrantPermission(ctx, "kato-node", clientv3.GetPrefixRangeEnd(p+"inbox/"), clientv3.GetPrefixRangeEnd(p), rw)
			return err
		},
		func() error { _, err := c.cli.UserAdd(ctx, user, password); return err },
		func() error { _, err := c.cli.UserGrantRole(ctx, user, "kato-node"); return err },
		func() error { _, err := c.cli.UserAdd(ctx, "root", "root-secret"); return err },
		func() error { _, err := c.cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.cli.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth set-up step %d: %v", i, err)
		}
	}
	root, err := coord.Connect(ctx, coord.ClientConfig{Endpoints: c.etc.Endpoints(), User: "root", Password: "root-secret"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { root.Close() })
	return root
}

// waitStatusAs is waitStatus with another client (after auth is on).
func (c *cluster) waitStatusAs(cli *clientv3.Client, id string, st coord.Status) coord.Instance {
	c.t.Helper()
	var in coord.Instance
	waitFor(c.t, c.ctx, func() error {
		var err error
		if in, err = coord.GetInstance(c.ctx, cli, id); err != nil {
			return err
		}
		if in.Status != st {
			return fmt.Errorf("%s is %s, want %s", id, in.Status, st)
		}
		return nil
	})
	return in
}

// Three nodes serve HTTPS with a bearer token; a request to a node that does
// not hold the model is forwarded to the holder over HTTPS, verified with
// --tls-ca; plain HTTP and a missing token are refused.
func TestHTTPSWithTokenBetweenThreeNodes(t *testing.T) {
	c := newCluster(t)
	certs := etcdtest.NewCerts(t)
	cert, key := certs.Valid(t, "node", "127.0.0.1")
	const token = "s3cret-token"
	tlsArgs := []string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", certs.CAFile, "--api-token", token, "--port", "0"}
	c.node(append([]string{"--id", "a", "--model", "m"}, tlsArgs...)...)
	ra := c.waitStatus("a", coord.StatusRunning)
	c.node(append([]string{"--id", "b", "--model", "m"}, tlsArgs...)...)
	c.waitStatus("b", coord.StatusStandby)
	c.node(append([]string{"--id", "c"}, tlsArgs...)...)
	rc := c.waitStatus("c", coord.StatusRunning)
	if !strings.HasPrefix(ra.APIURL, "https://") || !strings.HasPrefix(rc.APIURL, "https://") {
		t.Fatalf("registered addresses %s, %s are not HTTPS", ra.APIURL, rc.APIURL)
	}
	caPEM, err := os.ReadFile(certs.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	do := func(url, tok, body string) (int, http.Header, string) {
		req, err := http.NewRequest("POST", url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	for i, s := range []string{"p", "q"} {
		code, hdr, body := do(rc.APIURL+"/m/observe", token, obs(s))
		if code != 200 || hdr.Get("X-Kato-Served-By") != "a" {
			t.Fatalf("observe %d through c: %d %s (served by %q)", i, code, body, hdr.Get("X-Kato-Served-By"))
		}
	}
	if code, _, body := do(rc.APIURL+"/m/learn", token, ""); code != 200 || !strings.Contains(body, "MODEL|") {
		t.Fatalf("learn through c: %d %s", code, body)
	}
	if code, _, _ := do(rc.APIURL+"/m/observe", "", obs("x")); code != http.StatusUnauthorized {
		t.Fatalf("without the token: %d, want 401", code)
	}
	plain := strings.Replace(rc.APIURL, "https://", "http://", 1)
	if r := (api{t, plain}).do("GET", "/m/ping", ""); r.code == 200 {
		t.Fatalf("plain HTTP to the HTTPS port answered 200: %s", r.body)
	}
}
