package node

// This file is the node's side of its mailbox: the receiver an epoch runs,
// and what the node does with the messages it gets.

import (
	"context"
	"time"

	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// Mailbox receiver states, shown in /readyz.
const (
	mailboxReceiving  = "receiving"
	mailboxRestarting = "restarting"
	mailboxNoSession  = "no-session"
)

// receive runs the mailbox receiver for as long as the session lives,
// starting it again (after a backoff of up to 5 s) whenever it ends with an
// error: an error etcd gives once (an expired auth token, a compaction race)
// must not leave the node deaf to messages, katoctl stop included.
func (ep *epoch) receive(ctx context.Context) {
	n, s := ep.n, ep.s
	defer n.setMailboxState(mailboxNoSession)
	const most = 5 * time.Second
	bo := coord.Backoff{Min: 100 * time.Millisecond, Max: most}
	for {
		n.setMailboxState(mailboxReceiving)
		start := time.Now()
		err := ep.mb.Receive(ctx, n.handleMessage)
		if ctx.Err() != nil || s.Err() != nil {
			return
		}
		n.setMailboxState(mailboxRestarting)
		n.m.MailboxRestarts.Inc()
		if time.Since(start) > most {
			bo.Reset()
		}
		backoff := bo.Next()
		n.lg.Warn("mailbox receive ended; starting it again", zap.Error(err), zap.Duration("backoff", backoff))
		if n.sleep(ctx, s, backoff) != nil {
			return
		}
	}
}

func (n *Node) handleMessage(_ context.Context, msg coord.Message) error {
	n.m.MessagesReceived.WithLabelValues(msg.Kind).Inc()
	n.history.Add(msg, time.Now())
	if !msg.SentAt.IsZero() {
		n.m.MessageLatency.Observe(time.Since(msg.SentAt).Seconds())
	}
	switch {
	case !msg.IsControl(coord.ControlStop):
	case msg.Revision < n.firstRev.Load():
		// Left by katoctl stop --force for an earlier run of this id.
		n.lg.Info("ignoring a stop message sent before this process registered", zap.String("from", msg.From),
			zap.Time("sent", msg.SentAt))
	default:
		n.lg.Info("stop requested by message", zap.String("from", msg.From))
		n.Stop()
	}
	return nil
}

func (n *Node) setMailboxState(st string) {
	n.mbState.Store(st)
	v := 0.0
	if st == mailboxReceiving {
		v = 1
	}
	n.m.MailboxReceiving.Set(v)
}

// MailboxState is the state of the mailbox receiver: receiving, restarting
// (after an error) or no-session.
func (n *Node) MailboxState() string {
	if st, ok := n.mbState.Load().(string); ok {
		return st
	}
	return mailboxNoSession
}
