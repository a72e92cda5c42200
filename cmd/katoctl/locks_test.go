package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// lockHolder returns a ModelLock of model on a session of its own.
func lockHolder(t *testing.T, ctx context.Context, cli *clientv3.Client, model, id string) *coord.ModelLock {
	t.Helper()
	return coord.NewModelLock(testSession(t, ctx, cli, coord.WithTTL(30*time.Second)), model, coord.WithHolder(id, "host-"+id))
}

func lockWaiters(ctx context.Context, cli *clientv3.Client, model string) int {
	st, _, err := coord.GetLock(ctx, cli, model)
	if err != nil {
		return -1
	}
	return len(st.Waiters)
}

func TestLocksLsAndBreak(t *testing.T) {
	cli, flags := modelEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := lockHolder(t, ctx, cli, "m", "node-a")
	fa, err := a.Lock(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lost := a.Lost()
	// Two waiters, queued in order; they give up when the test ends.
	wctx, wcancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	acquired := make(chan string, 2)
	for i, id := range []string{"node-b", "node-c"} {
		l := lockHolder(t, ctx, cli, "m", id)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := l.Lock(wctx); err == nil {
				acquired <- id
			}
		}()
		etcdtest.Eventually(t, 30*time.Second, func() bool { return lockWaiters(ctx, cli, "m") == i+1 }, "%s queued", id)
	}
	defer func() { wcancel(); wg.Wait() }()
	// A plain etcd mutex on another model.
	cs, err := concurrency.NewSession(cli, concurrency.WithTTL(30))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	mu := concurrency.NewMutex(cs, strings.TrimSuffix(coord.LockPrefix("raw"), "/"))
	if err := mu.Lock(ctx); err != nil {
		t.Fatal(err)
	}

	r := katoctl(t, nil, append(flags, "locks", "ls")...)
	if r.code != 0 {
		t.Fatalf("locks ls: exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "MODEL HOLDER HOST SINCE FENCE WAITERS" {
		t.Fatalf("locks ls:\n%s", r.stdout)
	}
	m := strings.Fields(lines[1])
	if len(m) != 6 || m[0] != "m" || m[1] != "node-a" || m[2] != "host-node-a" || m[4] != fmt.Sprint(fa.Rev) || m[5] != "node-b,node-c" {
		t.Fatalf("row of m: %q", lines[1])
	}
	if _, err := time.Parse(time.RFC3339, m[3]); err != nil {
		t.Fatalf("SINCE %q: %v", m[3], err)
	}
	raw := strings.Fields(lines[2])
	if len(raw) != 6 || raw[0] != "raw" || !strings.HasPrefix(raw[1], "lease:") || raw[2] != "-" || raw[3] != "-" || raw[5] != "-" {
		t.Fatalf("row of the plain mutex: %q", lines[2])
	}

	r = katoctl(t, nil, append(flags, "-o", "json", "locks", "ls")...)
	var got []coord.LockState
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil || len(got) != 2 {
		t.Fatalf("locks ls -o json: %v\n%s", err, r.stdout)
	}
	if got[0].Holder.Key != fa.Key || got[0].Holder.Rev != fa.Rev || len(got[0].Waiters) != 2 || got[0].Waiters[1].ID != "node-c" {
		t.Fatalf("decoded %+v", got[0])
	}

	r = katoctl(t, nil, append(flags, "locks", "break", "m")...)
	if r.code != 0 {
		t.Fatalf("locks break: exit %d: %s", r.code, r.stderr)
	}
	for _, want := range []string{"broke the lock of model m", fa.Key, "node-a", fmt.Sprint("fence ", fa.Rev), "node-b takes the lock next"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("locks break output lacks %q: %s", want, r.stdout)
		}
	}
	select {
	case <-lost:
	case <-ctx.Done():
		t.Fatal("the broken holder's Lost was not closed")
	}
	select {
	case id := <-acquired:
		if id != "node-b" {
			t.Fatalf("%s took the lock after the break, want node-b", id)
		}
	case <-ctx.Done():
		t.Fatal("nobody took the lock after the break")
	}

	r = katoctl(t, nil, append(flags, "locks", "break", "free")...)
	if r.code != 1 || !strings.Contains(r.stderr, "not held") {
		t.Fatalf("break of a free model: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestLockRunsCommandWithLockEnv(t *testing.T) {
	cli, flags := modelEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := katoctl(t, nil, append(flags, "lock", "--holder", "job-1", "m", "--", "sh", "-c",
		`echo "$KATO_LOCK_MODEL $KATO_LOCK_KEY $KATO_LOCK_REV $ETCD_LOCK_KEY $ETCD_LOCK_REV"; exit 7`)...)
	if r.code != 7 {
		t.Fatalf("exit %d, want the command's 7; stderr %q", r.code, r.stderr)
	}
	f := strings.Fields(r.stdout)
	if len(f) != 5 || f[0] != "m" || !strings.HasPrefix(f[1], coord.DefaultPrefix+coord.LockPrefix("m")) || f[3] != f[1] || f[4] != f[2] {
		t.Fatalf("command saw %q", r.stdout)
	}
	// The lock is free again.
	if _, _, err := coord.GetLock(ctx, cli, "m"); !errors.Is(err, coord.ErrNotLocked) {
		t.Fatalf("after katoctl lock: %v, want the model free", err)
	}
	r = katoctl(t, nil, append(flags, "lock", "m", "--", "true")...)
	if r.code != 0 {
		t.Fatalf("lock m -- true: exit %d: %s", r.code, r.stderr)
	}
	r = katoctl(t, nil, append(flags, "lock", "m")...)
	if r.code != 1 || !strings.Contains(r.stderr, "MODEL -- CMD") {
		t.Fatalf("lock without a command: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestLockTimeoutNamesHolder(t *testing.T) {
	cli, flags := modelEtcd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := lockHolder(t, ctx, cli, "m", "node-a").Lock(ctx); err != nil {
		t.Fatal(err)
	}
	r := katoctl(t, nil, append(flags, "lock", "--lock-timeout", "300ms", "m", "--", "true")...)
	if r.code != 1 || !strings.Contains(r.stderr, "waiting") || !strings.Contains(r.stderr, "node-a") || !strings.Contains(r.stderr, "deadline exceeded") {
		t.Fatalf("lock of a held model: exit %d, stderr %q", r.code, r.stderr)
	}
	if n := lockWaiters(ctx, cli, "m"); n != 0 {
		t.Fatalf("katoctl left %d waiters", n)
	}
}

// When the lock is broken, katoctl lock stops the command: SIGTERM, and
// SIGKILL when the command ignores SIGTERM past the grace period.
func TestLockKillsCommandWhenLockBroken(t *testing.T) {
	for _, tc := range []struct {
		name, script, killedBy string
	}{
		{"SIGTERM", `echo ready; exec sleep 60`, "killed by terminated"},
		{"SIGKILL after grace", `trap "" TERM; echo ready; while :; do sleep 0.1; done`, "killed by killed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cli, flags := modelEtcd(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := katoctlCmd(t, nil, append(flags, "lock", "--kill-grace", "300ms", "m", "--", "sh", "-c", tc.script)...)
			stdout, stderr := &lineReader{ch: make(chan string, 16)}, &bytes.Buffer{}
			cmd.Stdout, cmd.Stderr = stdout, stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			// stop ends katoctl if it still runs; stderr may be read after it.
			stop := func() error {
				cmd.Process.Kill()
				err := <-exited
				exited <- err
				return err
			}
			defer stop()
			select {
			case line := <-stdout.ch:
				if line != "ready" {
					stop()
					t.Fatalf("command printed %q\n%s", line, stderr)
				}
			case <-ctx.Done():
				stop()
				t.Fatalf("command did not start\n%s", stderr)
			}
			st, err := coord.BreakLock(ctx, cli, "m")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(st.Holder.ID, "katoctl-") {
				t.Fatalf("broke %+v, want katoctl's lock", st.Holder)
			}
			var exitErr error
			select {
			case exitErr = <-exited:
				exited <- exitErr
			case <-ctx.Done():
				stop()
				t.Fatalf("katoctl still ran after its lock was broken\n%s", stderr)
			}
			var ee *exec.ExitError
			if !errors.As(exitErr, &ee) || ee.ExitCode() != exitLockLost {
				t.Fatalf("katoctl exit: %v, want status %d\n%s", exitErr, exitLockLost, stderr)
			}
			for _, want := range []string{"lock key deleted", "sending SIGTERM", tc.killedBy, "was stopped"} {
				if !strings.Contains(stderr.String(), want) {
					t.Errorf("stderr lacks %q:\n%s", want, stderr)
				}
			}
		})
	}
}
