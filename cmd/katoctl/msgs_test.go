package main

import (
	"context"
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord"
)

// msgEtcd starts etcd with the given instances registered and returns the
// global flags to reach it and a client under the default prefix.
func msgEtcd(t *testing.T, ins ...coord.Instance) ([]string, *coord.Mailbox) {
	t.Helper()
	c, flags := registered(t, ins...)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return flags, coord.NewMailbox(testSession(t, ctx, katoClient(t, c)), "tester")
}

func TestMsgSendLsRecv(t *testing.T) {
	flags, _ := msgEtcd(t)
	msg := func(args ...string) result {
		t.Helper()
		return katoctl(t, nil, append(append(flags, "msg"), args...)...)
	}

	// An id nobody registered: sent, with a warning.
	r := msg("send", "--to", "trainer", "--kind", "data_ready", "batch 7 is ready")
	if r.code != 0 {
		t.Fatalf("send: exit %d: %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, `no instance "trainer" is registered`) {
		t.Fatalf("send to an unregistered id did not warn: %q", r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], "trainer") || !strings.Contains(lines[1], "false") {
		t.Fatalf("send output:\n%s", r.stdout)
	}
	firstID := strings.Fields(lines[1])[0]

	// Standard input, JSON output.
	cmd := katoctlCmd(t, nil, append(flags, "-o", "json", "msg", "send", "--to", "trainer", "--ttl", "10m", "--from", "prep-1", "-")...)
	cmd.Stdin = strings.NewReader("line one\nline two")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("send from stdin: %v", err)
	}
	var sent coord.Sent
	if err := json.Unmarshal(out, &sent); err != nil || sent.To != "trainer" || sent.Registered || !strings.HasSuffix(sent.ID, "-prep-1") {
		t.Fatalf("send -o json: %v %+v\n%s", err, sent, out)
	}

	// ls shows both, oldest first, without consuming them.
	for i := 0; i < 2; i++ {
		r = msg("ls", "trainer")
		lines = strings.Split(strings.TrimSpace(r.stdout), "\n")
		if r.code != 0 || len(lines) != 3 {
			t.Fatalf("ls: exit %d, out:\n%s%s", r.code, r.stdout, r.stderr)
		}
	}
	for _, want := range []string{"FROM", "KIND", "TTL", "BODY"} {
		if !strings.Contains(lines[0], want) {
			t.Fatalf("ls header %q lacks %s", lines[0], want)
		}
	}
	if f := strings.Fields(lines[1]); f[0] != firstID || f[1] != "katoctl" || f[2] != "data_ready" || !strings.HasSuffix(lines[1], "batch 7 is ready") {
		t.Fatalf("ls row 1: %q", lines[1])
	}
	if !strings.Contains(lines[2], "prep-1") || !strings.HasSuffix(lines[2], `"line one\nline two"`) {
		t.Fatalf("ls row 2: %q", lines[2])
	}
	r = katoctl(t, nil, append(flags, "-o", "json", "msg", "ls", "trainer")...)
	var views []messageView
	if err := json.Unmarshal([]byte(r.stdout), &views); err != nil || len(views) != 2 {
		t.Fatalf("ls -o json: %v\n%s", err, r.stdout)
	}
	if v := views[1]; v.ID != sent.ID || v.Body != "line one\nline two" || v.TTLLeft <= 0 || v.TTLLeft > int64((10*time.Minute+coord.BucketWidth(10*time.Minute))/time.Second) {
		t.Fatalf("ls -o json[1] = %+v", v)
	}

	// recv consumes them and exits.
	r = katoctl(t, nil, append(flags, "-o", "json", "msg", "recv", "trainer")...)
	if r.code != 0 {
		t.Fatalf("recv: exit %d: %s", r.code, r.stderr)
	}
	var got []coord.Message
	dec := json.NewDecoder(strings.NewReader(r.stdout))
	for dec.More() {
		var m coord.Message
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		got = append(got, m)
	}
	if len(got) != 2 || got[0].ID != firstID || got[0].Kind != "data_ready" || got[1].Body != "line one\nline two" {
		t.Fatalf("recv printed %+v", got)
	}
	r = msg("ls", "trainer")
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 1 {
		t.Fatalf("inbox after recv:\n%s", r.stdout)
	}
	r = msg("recv", "trainer")
	if r.code != 0 || !strings.Contains(r.stderr, "no messages for trainer") {
		t.Fatalf("recv of an empty inbox: exit %d, %q", r.code, r.stderr)
	}
}

func TestMsgSendRejects(t *testing.T) {
	flags, _ := msgEtcd(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"send", "--to", "x", "--ttl", "1s", "hi"}, "message TTL out of range"},
		{[]string{"send", "--to", "x", "--kind", "a b", "hi"}, "invalid message"},
		{[]string{"send", "--to", "bad/id", "hi"}, "invalid instance id"},
		{[]string{"send", "hi"}, "give --to ID"},
		{[]string{"send", "--to", "x", "--all", "hi"}, "give --to ID"},
		{[]string{"send", "--to", "x"}, "takes the body"},
		{[]string{"send", "--all", "hi"}, "no registered instance matches"},
		{[]string{"ls"}, "takes one instance id"},
		{[]string{"recv", "a/b"}, "invalid instance id"},
	} {
		r := katoctl(t, nil, append(append(flags, "msg"), tc.args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("msg %v: exit %d, stderr %q; want exit 1 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
	// A body above the limit through standard input.
	cmd := katoctlCmd(t, nil, append(flags, "msg", "send", "--to", "x", "-")...)
	cmd.Stdin = strings.NewReader(strings.Repeat("x", coord.MaxBodySize+1))
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "message body too large") {
		t.Fatalf("oversized body: %v, %s", err, out)
	}
}

func TestMsgBroadcastAndRecvGuard(t *testing.T) {
	flags, _ := msgEtcd(t, sampleInstances()...) // alpha and beta, both model m1
	r := katoctl(t, nil, append(flags, "-o", "json", "msg", "send", "--model", "m1", "--kind", "control", "stop")...)
	if r.code != 0 {
		t.Fatalf("broadcast: exit %d: %s", r.code, r.stderr)
	}
	var sent []coord.Sent
	if err := json.Unmarshal([]byte(r.stdout), &sent); err != nil || len(sent) != 2 || sent[0].To != "alpha" || sent[1].To != "beta" || !sent[0].Registered {
		t.Fatalf("broadcast sent %+v (%v)", sent, err)
	}
	if r.stderr != "" {
		t.Fatalf("broadcast to registered instances warned: %q", r.stderr)
	}
	// alpha is registered: recv refuses to compete with it, unless forced.
	r = katoctl(t, nil, append(flags, "msg", "recv", "alpha")...)
	if r.code != 1 || !strings.Contains(r.stderr, "alpha is registered") {
		t.Fatalf("recv of a registered instance: exit %d, %q", r.code, r.stderr)
	}
	r = katoctl(t, nil, append(flags, "msg", "recv", "--force", "alpha")...)
	if r.code != 0 || !strings.Contains(r.stdout, " control stop") {
		t.Fatalf("recv --force: exit %d, out %q, err %q", r.code, r.stdout, r.stderr)
	}
}

func TestMsgRecvFollowPrintsAsMessagesArrive(t *testing.T) {
	flags, sender := msgEtcd(t)
	cmd := katoctlCmd(t, nil, append(flags, "msg", "recv", "--follow", "worker")...)
	out := &lineReader{ch: make(chan string, 16)}
	cmd.Stdout = out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, body := range []string{"first", "second\twith a tab", "third"} {
		if _, err := sender.Send(ctx, "worker", coord.Message{Kind: "job", Body: body}, time.Minute); err != nil {
			t.Fatal(err)
		}
		select {
		case line := <-out.ch:
			if !strings.Contains(line, " tester job ") || !strings.HasSuffix(line, lineBody(body)) {
				t.Fatalf("line %q for body %q", line, body)
			}
		case <-ctx.Done():
			t.Fatalf("katoctl msg recv --follow did not print %q", body)
		}
	}
	// Interrupted, it exits 0 after deleting what it printed.
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err
		if err != nil {
			t.Fatalf("recv --follow after SIGINT: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("recv --follow did not exit on SIGINT")
	}
	msgs, err := sender.Pending(ctx, "worker")
	if err != nil || len(msgs) != 0 {
		t.Fatalf("after recv --follow: %d pending (%v)", len(msgs), err)
	}
}

// msg rm deletes the inbox of an id nobody has registered and refuses a
// registered instance's inbox.
func TestMsgRm(t *testing.T) {
	flags, mb := msgEtcd(t, coord.Instance{ID: "alpha", Name: "alpha", Model: "m1", Status: coord.StatusRunning, StartedAt: time.Now()})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, to := range []string{"alpha", "old", "old"} {
		if _, err := mb.Send(ctx, to, coord.Message{Body: "x"}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	r := katoctl(t, nil, append(flags, "msg", "rm", "alpha")...)
	if r.code != 1 || !strings.Contains(r.stderr, "alpha is registered and reads its own messages") {
		t.Fatalf("rm of a registered inbox: exit %d, %q", r.code, r.stderr)
	}
	r = katoctl(t, nil, append(flags, "msg", "rm", "old")...)
	if r.code != 0 || strings.TrimSpace(r.stdout) != "removed 2 messages waiting for old" {
		t.Fatalf("rm old: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	r = katoctl(t, nil, append(flags, "msg", "ls", "alpha")...)
	if lines := strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 {
		t.Fatalf("alpha's inbox after the refused rm:\n%s", r.stdout)
	}
}
