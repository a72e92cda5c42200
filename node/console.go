package node

// This file builds the web console on the node's directory, mailbox and
// metrics.

import (
	dto "github.com/prometheus/client_model/go"

	"github.com/kato-coord/kato/node/console"
)

// newConsole builds the web console on the node's directory, mailbox and
// metrics.
func (n *Node) newConsole() *console.Console {
	return console.New(console.Config{Client: n.cli, Directory: n.dir, Self: n.cfg.ID, Model: n.cfg.Model,
		Send: backend{n}.Send, Learns: n.learns, Logger: n.lg})
}

// learns is how many learns this node has handled, from its metrics.
func (n *Node) learns() uint64 {
	var m dto.Metric
	if err := n.m.Learn.Write(&m); err != nil {
		return 0
	}
	return m.GetHistogram().GetSampleCount()
}
