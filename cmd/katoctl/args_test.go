package main

import (
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kato-coord/kato/cmd/internal/cliutil/clitest"
)

// Every command takes its flags after its arguments and the global flags
// after the command (katoctl list -o json, katoctl get a -o yaml, katoctl msg
// send hello --to b); katoctl lock MODEL CMD... leaves CMD's flags alone.
func TestFlagsAnywhereEveryCommand(t *testing.T) {
	clitest.FlagsAnywhere(t, newApp, []string{"output", "json", "prefix", "/t/", "dial-timeout", "3s"}, "lock")
}

// The examples, run as the real binary against no etcd: they must
// fail on the connection, not on the command line.
func TestFlagsAfterArgumentsReachTheCommand(t *testing.T) {
	for _, args := range [][]string{
		{"list", "-o", "json"},
		{"locks", "ls", "-o", "json"},
		{"models", "ls", "-o", "json"},
		{"get", "a", "-o", "yaml"},
		{"msg", "send", "hello", "--to", "nobody"},
		{"models", "import", "copy", "FILE", "--replace"},
	} {
		r := katoctl(t, nil, append(args, "--endpoints", "127.0.0.1:1", "--dial-timeout", "1s")...)
		if r.code == 0 || !strings.Contains(r.stderr, "etcd does not answer at 127.0.0.1:1 (connection refused)") {
			t.Errorf("katoctl %q: exit %d, stderr %q; want the connection error", args, r.code, r.stderr)
		}
		if strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 || strings.Contains(r.stdout, "USAGE") {
			t.Errorf("katoctl %q: not one line:\nstdout %s\nstderr %s", args, r.stdout, r.stderr)
		}
	}
}

// Bad flag values and unknown flags get one line with a hint, not the help.
func TestUsageErrorsAreOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"stop", "x", "--timeout", "10"}, `--timeout "10": use a duration with a unit, such as 10s`},
		{[]string{"list", "--nosuch"}, "--nosuch: unknown flag for katoctl list; katoctl list --help lists them"},
		{[]string{"--dial-timeout", "5", "list"}, `--dial-timeout "5": use a duration`},
	} {
		r := katoctl(t, nil, tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stdout+r.stderr, "USAGE") ||
			strings.Count(strings.TrimSpace(r.stderr), "\n") > 0 {
			t.Errorf("katoctl %q: exit %d\nstdout %s\nstderr %s\nwant one line with %q", tc.args, r.code, r.stdout, r.stderr, tc.want)
		}
	}
	r := katoctl(t, nil, "--version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "katoctl ") {
		t.Errorf("katoctl --version: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
}

// Ctrl-C while katoctl waits for an etcd that does not answer ends the wait
// at once and says so, instead of the dial timeout's error.
func TestInterruptDuringConnect(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 8)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted <- c // held open, never answered
		}
	}()
	cmd := katoctlCmd(t, nil, "list", "--endpoints", ln.Addr().String(), "--dial-timeout", "60s")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(30 * time.Second):
		t.Fatal("katoctl never connected")
	}
	start := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("katoctl still waits 20 s after Ctrl-C (dial timeout 60 s)")
	}
	if !strings.Contains(stderr.String(), "interrupted while waiting for etcd") {
		t.Fatalf("after Ctrl-C (%v): %q", time.Since(start), stderr.String())
	}
}
