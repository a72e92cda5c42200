package node

// This file logs etcd outages from the state of the client's connection.

import (
	"context"
	"time"

	"go.uber.org/zap"
	"google.golang.org/grpc/connectivity"
)

// outageGrace is how long the connection to etcd may be down before the
// node calls it an outage (a reconnect to another member takes less).
const outageGrace = time.Second

// watchEtcd logs an etcd outage once when it starts and once when it ends.
// It follows the state of the client's connection and sends no request of
// its own. It returns when ctx ends.
func (n *Node) watchEtcd(ctx context.Context) {
	conn := n.cli.ActiveConnection()
	if conn == nil {
		return
	}
	var downSince time.Time
	logged := false
	state := conn.GetState()
	for {
		switch {
		case state == connectivity.Ready:
			if logged {
				n.lg.Info("etcd reachable again", zap.Duration("outage", time.Since(downSince).Round(time.Millisecond)))
			}
			downSince, logged = time.Time{}, false
		case downSince.IsZero():
			downSince = time.Now()
		}
		if state == connectivity.Idle {
			conn.Connect()
		}
		wctx, cancel := ctx, context.CancelFunc(func() {})
		if !downSince.IsZero() && !logged {
			wctx, cancel = context.WithDeadline(ctx, downSince.Add(outageGrace))
		}
		changed := conn.WaitForStateChange(wctx, state)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if !changed {
			logged = true
			n.lg.Warn("etcd unreachable: model writes, registration and messages wait; reads are served while the session lasts; reconnecting at most 1 s apart",
				zap.Strings("endpoints", n.cli.Endpoints()), zap.String("since", downSince.UTC().Format(time.RFC3339Nano)))
			continue
		}
		state = conn.GetState()
	}
}
