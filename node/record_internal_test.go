package node

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
)

// A status update that fails while the session lives on (the connection
// stalls for less than the TTL) is written again once etcd answers: the
// registry does not keep a status the node left (the fault suite saw a node
// stay "starting" for good after one such failure).
func TestFailedStatusUpdateIsWrittenAgain(t *testing.T) {
	px, pcli, direct := proxiedEtcd(t)

	n, err := New(Config{ID: "r", Model: "m", Port: 0, ListenHost: "127.0.0.1", AdvertiseHost: "127.0.0.1", TTL: 10 * time.Second},
		pcli, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- n.Run(ctx) }()
	defer func() { cancel(); <-done }()
	status := func() coord.Status {
		in, err := coord.GetInstance(ctx, direct, "r")
		if err != nil {
			return ""
		}
		return in.Status
	}
	etcdtest.Eventually(t, 30*time.Second, func() bool { return status() == coord.StatusRunning }, "r runs")
	n.mu.Lock()
	ep := n.cur
	n.mu.Unlock()

	px.Blackhole()
	uctx, ucancel := context.WithTimeout(ctx, 300*time.Millisecond)
	err = ep.setStatus(uctx, coord.StatusStandby)
	ucancel()
	if err == nil {
		t.Fatal("the update went through a blackholed connection")
	}
	px.Reset()
	px.Heal()
	etcdtest.Eventually(t, 20*time.Second, func() bool { return status() == coord.StatusStandby }, "the failed update is written again")
}
