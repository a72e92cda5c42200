// This file holds the tests' one poll-until helper: wait, with a deadline, for
// a condition that something else (etcd, a node, a watcher) makes true.

package etcdtest

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// PollInterval is how often Eventually and EventuallyNoError ask again.
const PollInterval = 10 * time.Millisecond

// Eventually asks cond every PollInterval until it returns true, and fails the
// test with Fatalf if it has not within timeout: "not within <timeout>:
// <format, args...>". Call it from the test's own goroutine (it calls
// t.Fatalf).
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, format string, args ...any) {
	t.Helper()
	errFalse := errors.New("false")
	if err := poll(timeout, func() error {
		if cond() {
			return nil
		}
		return errFalse
	}); err != nil {
		t.Fatalf("not within %v: %s", timeout, fmt.Sprintf(format, args...))
	}
}

// EventuallyNoError is Eventually for a condition that says why it does not
// hold yet: it asks cond until it returns nil, and the failure names cond's
// last error: "not within <timeout>: <format, args...>: <error>".
func EventuallyNoError(t testing.TB, timeout time.Duration, cond func() error, format string, args ...any) {
	t.Helper()
	if err := poll(timeout, cond); err != nil {
		t.Fatalf("not within %v: %s: %v", timeout, fmt.Sprintf(format, args...), err)
	}
}

// poll asks cond until it returns nil or timeout passes, and returns its last
// error. cond is asked once more at the deadline, so that a wait that ends
// just as the condition comes true passes.
func poll(timeout time.Duration, cond func() error) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(PollInterval)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return nil
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			return cond()
		}
	}
}
