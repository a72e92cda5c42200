package node

// This file publishes the node's message history to etcd.

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// historyEvery bounds how often the message history is written to etcd:
// at most one write a second, however many messages arrive.
const historyEvery = time.Second

// publishHistory writes the node's message history to etcd when it changed,
// at most every historyEvery, under the session's lease, until ctx ends.
func (n *Node) publishHistory(ctx context.Context, s *coord.Session) {
	var published uint64
	tick := time.NewTicker(historyEvery)
	defer tick.Stop()
	for {
		if list, version := n.history.List(); version != published {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			err := coord.PutHistory(pctx, s, n.cfg.ID, list)
			cancel()
			if err == nil {
				published = version
			} else if ctx.Err() == nil {
				n.lg.Debug("cannot publish the message history; retrying", zap.Error(err))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
