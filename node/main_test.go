// This file holds the package's TestMain: after the tests, no goroutine any
// of them started (a node, its watchers, an in-process etcd) is still running.

package node_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
