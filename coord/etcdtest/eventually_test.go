// This file tests Eventually: it returns once its condition holds, and fails
// the test, naming what it waited for, when the condition never does.

package etcdtest_test

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord/etcdtest"
)

func TestEventuallyReturnsOnceTrue(t *testing.T) {
	var n atomic.Int32
	etcdtest.Eventually(t, 10*time.Second, func() bool { return n.Add(1) >= 3 }, "the third call")
	if got := n.Load(); got != 3 {
		t.Fatalf("cond asked %d times, want 3", got)
	}
}

// fatalTB records Fatalf and ends its goroutine, as testing.T's does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestEventuallyFailsAtTheDeadline(t *testing.T) {
	f := &fatalTB{TB: t}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		etcdtest.Eventually(f, 50*time.Millisecond, func() bool { return false }, "model %s", "m")
	}()
	<-done
	if want := "not within 50ms: model m"; f.msg != want {
		t.Fatalf("Fatalf(%q), want %q", f.msg, want)
	}
	if el := time.Since(start); el < 50*time.Millisecond {
		t.Fatalf("failed after %v, before its 50ms deadline", el)
	}
	if strings.Contains(f.msg, "%!") {
		t.Fatalf("bad format: %q", f.msg)
	}
}

func TestEventuallyNoErrorNamesTheLastError(t *testing.T) {
	var n atomic.Int32
	etcdtest.EventuallyNoError(t, 10*time.Second, func() error {
		if n.Add(1) < 3 {
			return fmt.Errorf("call %d", n.Load())
		}
		return nil
	}, "the third call")

	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		etcdtest.EventuallyNoError(f, 30*time.Millisecond, func() error { return fmt.Errorf("still %s", "down") }, "etcd %d", 1)
	}()
	<-done
	if want := "not within 30ms: etcd 1: still down"; f.msg != want {
		t.Fatalf("Fatalf(%q), want %q", f.msg, want)
	}
}
