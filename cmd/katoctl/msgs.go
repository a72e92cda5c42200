package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
	"github.com/kato-coord/kato/coord"
)

// msgCommand is `katoctl msg send|ls|rm|recv`.
func msgCommand() *cli.Command {
	return &cli.Command{
		Name:  "msg",
		Usage: "send, list and receive messages between instances",
		Subcommands: []*cli.Command{
			{
				Name:  "send",
				Usage: "send a message to an instance (it waits in the inbox until read or expired)",
				Description: "The body is TEXT, or standard input with -. Sending to an id that is not registered\n" +
					"is allowed: the message waits for it, and katoctl warns. --all, --name and --model\n" +
					"send one copy to each registered instance that matches instead.",
				ArgsUsage: "TEXT|-",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "to", Usage: "recipient instance id"},
					&cli.BoolFlag{Name: "all", Usage: "send to every registered instance"},
					&cli.StringFlag{Name: "name", Usage: "send to the registered instances with this name"},
					&cli.StringFlag{Name: "model", Usage: "send to the registered instances serving this model"},
					&cli.StringFlag{Name: "kind", Value: coord.KindText, Usage: "message kind ([A-Za-z0-9_.-], e.g. data_ready or control)"},
					&cli.DurationFlag{Name: "ttl", Value: coord.DefaultMessageTTL,
						Usage: fmt.Sprintf("delete the message if nobody reads it within this time (%v to %v)", coord.MinMessageTTL, coord.MaxMessageTTL)},
					&cli.StringFlag{Name: "from", Value: "katoctl", Usage: "sender id written in the message"},
				},
				Action: func(c *cli.Context) error {
					return withEtcd(c, func(e env) error { return msgSend(c, e) })
				},
			},
			{
				Name:      "ls",
				Usage:     "list the messages waiting for an instance, without consuming them, and those it received lately",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					id, err := oneID(c)
					if err != nil {
						return err
					}
					return withEtcd(c, func(e env) error { return msgList(c, e, id) })
				},
			},
			{
				Name:  "rm",
				Usage: "delete every message waiting for an instance that is not registered (an inbox nobody will read)",
				Description: "Refused while an instance with that id is registered: it reads its own messages.\n" +
					"The check and the delete are one etcd transaction.",
				ArgsUsage: "ID",
				Action: func(c *cli.Context) error {
					id, err := oneID(c)
					if err != nil {
						return err
					}
					return withEtcd(c, func(e env) error {
						ctx, cancel := cliutil.CommandContext(c)
						defer cancel()
						n, err := coord.RemoveInbox(ctx, e.cli.KV, id)
						if err != nil {
							return err
						}
						fmt.Fprintf(c.App.Writer, "removed %d messages waiting for %s\n", n, id)
						return nil
					})
				},
			},
			{
				Name:  "recv",
				Usage: "consume an instance's messages, printing each as it arrives",
				Description: "Prints and deletes the waiting messages, then exits; with --follow it keeps\n" +
					"waiting for new ones until interrupted. A running instance receives its own\n" +
					"messages: katoctl refuses to compete with it unless --force is given.",
				ArgsUsage: "ID",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep receiving until interrupted"},
					&cli.BoolFlag{Name: "force", Usage: "receive even though the instance is registered (it then misses what katoctl takes)"},
				},
				Action: func(c *cli.Context) error {
					id, err := oneID(c)
					if err != nil {
						return err
					}
					return withEtcd(c, func(e env) error { return msgRecv(c, e, id) })
				},
			},
		},
	}
}

func oneID(c *cli.Context) (string, error) {
	if c.NArg() != 1 {
		return "", fmt.Errorf("%s takes one instance id, got %d arguments", c.Command.FullName(), c.NArg())
	}
	id := c.Args().First()
	return id, coord.CheckID(id)
}

// newMailbox opens a session for the command's lifetime and a mailbox on it.
func newMailbox(c *cli.Context, e env, id string) (*coord.Mailbox, func(), error) {
	ctx, cancel := cliutil.CommandContext(c)
	defer cancel()
	s, err := coord.NewSession(ctx, e.cli, e.lg, coord.WithTTL(10*time.Second))
	if err != nil {
		return nil, nil, err
	}
	closeSession := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	}
	return coord.NewMailbox(s, id, coord.WithMailboxLogger(e.lg)), closeSession, nil
}

func msgSend(c *cli.Context, e env) error {
	broadcast := c.Bool("all") || c.IsSet("name") || c.IsSet("model")
	if c.IsSet("to") == broadcast {
		return errors.New("msg send: give --to ID, or --all / --name / --model")
	}
	if c.NArg() != 1 {
		return fmt.Errorf("msg send takes the body (TEXT, or - for standard input), got %d arguments", c.NArg())
	}
	body := c.Args().First()
	if body == "-" {
		b, err := io.ReadAll(io.LimitReader(c.App.Reader, coord.MaxBodySize+1))
		if err != nil {
			return fmt.Errorf("msg send: read standard input: %w", err)
		}
		body = string(b)
	}
	msg := coord.Message{Kind: c.String("kind"), Body: body}
	mb, closeSession, err := newMailbox(c, e, c.String("from"))
	if err != nil {
		return err
	}
	defer closeSession()
	ctx, cancel := cliutil.CommandContext(c)
	defer cancel()
	var sent []coord.Sent
	if broadcast {
		sent, err = mb.Broadcast(ctx, coord.BroadcastFilter{Name: c.String("name"), Model: c.String("model")}, msg, c.Duration("ttl"))
		if err == nil && len(sent) == 0 {
			return errors.New("msg send: no registered instance matches")
		}
	} else {
		var one coord.Sent
		one, err = mb.Send(ctx, c.String("to"), msg, c.Duration("ttl"))
		if err == nil {
			sent = append(sent, one)
		}
	}
	if err != nil {
		return err
	}
	for _, s := range sent {
		if !s.Registered {
			fmt.Fprintf(c.App.ErrWriter, "katoctl: warning: no instance %q is registered; the message waits for it until %s\n",
				s.To, s.ExpiresAt.Local().Format(time.RFC3339))
		}
	}
	t := cliutil.Table{Header: []string{"ID", "TO", "REGISTERED", "EXPIRES"}}
	for _, s := range sent {
		t.Rows = append(t.Rows, []string{s.ID, s.To, strconv.FormatBool(s.Registered), s.ExpiresAt.Local().Format(time.RFC3339)})
	}
	if broadcast {
		return cliutil.Print(c, sent, t)
	}
	return cliutil.Print(c, sent[0], t)
}

// messageView is a message as `msg ls` shows it: waiting in the inbox, or
// received lately by the instance (from the history it publishes).
type messageView struct {
	coord.Message
	State      string     `json:"state"`                 // waiting or received
	TTLLeft    int64      `json:"ttl_left_s"`            // -1 when the lease is gone (or received)
	ReceivedAt *time.Time `json:"received_at,omitempty"` // received only
}

func msgList(c *cli.Context, e env, id string) error {
	ctx, cancel := cliutil.CommandContext(c)
	defer cancel()
	msgs, err := coord.ListMessages(ctx, e.cli.KV, id)
	if err != nil {
		return err
	}
	received, err := coord.GetHistory(ctx, e.cli.KV, id)
	if err != nil {
		return err
	}
	// Messages share bucket leases: ask once per lease.
	left := map[clientv3.LeaseID]int64{}
	views := make([]messageView, 0, len(msgs)+len(received))
	now := time.Now()
	t := cliutil.Table{Header: []string{"ID", "FROM", "KIND", "AGE", "TTL", "STATE", "BODY"}}
	for _, m := range msgs {
		ttl, ok := left[m.Lease]
		if !ok {
			ttl = -1
			if resp, err := e.cli.TimeToLive(ctx, m.Lease); err == nil && resp.TTL >= 0 {
				ttl = resp.TTL
			}
			left[m.Lease] = ttl
		}
		views = append(views, messageView{Message: m, State: "waiting", TTLLeft: ttl})
		t.Rows = append(t.Rows, []string{m.ID, m.From, m.Kind, fmtDuration(now.Sub(m.SentAt)), fmtTTL(ttl), "waiting", shortBody(m.Body, 60)})
	}
	for _, r := range received {
		at := r.ReceivedAt
		views = append(views, messageView{Message: coord.Message{ID: r.ID, From: r.From, To: id, Kind: r.Kind, Body: r.Body, SentAt: r.SentAt},
			State: "received", TTLLeft: -1, ReceivedAt: &at})
		t.Rows = append(t.Rows, []string{r.ID, r.From, r.Kind, fmtDuration(now.Sub(r.SentAt)), "-",
			"received " + fmtDuration(now.Sub(r.ReceivedAt)) + " ago", shortBody(r.Body, 60)})
	}
	return cliutil.Print(c, views, t)
}

func msgRecv(c *cli.Context, e env, id string) error {
	format := c.String("output")
	if format == "yaml" {
		return errors.New("msg recv prints a line per message: use -o table or -o json")
	}
	if !c.Bool("force") {
		ctx, cancel := cliutil.CommandContext(c)
		resp, err := e.cli.Get(ctx, coord.InstanceKey(id), clientv3.WithCountOnly())
		cancel()
		if err != nil {
			return err
		}
		if resp.Count > 0 {
			return fmt.Errorf("msg recv: instance %s is registered and receives its own messages; --force takes them here instead", id)
		}
	}
	mb, closeSession, err := newMailbox(c, e, id)
	if err != nil {
		return err
	}
	defer closeSession()
	w := c.App.Writer
	enc := json.NewEncoder(w)
	show := func(_ context.Context, m coord.Message) error {
		if format == "json" {
			return enc.Encode(m)
		}
		_, err := fmt.Fprintf(w, "%s %s %s %s %s\n", m.SentAt.Local().Format(time.RFC3339), m.ID, m.From, m.Kind, lineBody(m.Body))
		return err
	}
	if !c.Bool("follow") {
		n, err := mb.ReceivePending(c.Context, show)
		if err != nil {
			return err
		}
		if n == 0 && format != "json" {
			fmt.Fprintf(c.App.ErrWriter, "no messages for %s\n", id)
		}
		return nil
	}
	err = mb.Receive(c.Context, show)
	if errors.Is(err, context.Canceled) {
		return nil // interrupted
	}
	return err
}

// lineBody prints a body on one line: as is when it is plain, quoted when it
// holds line breaks or other control characters (or is empty).
func lineBody(s string) string {
	if s == "" || strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f }) {
		return strconv.Quote(s)
	}
	return s
}

// shortBody is lineBody cut to about n characters.
func shortBody(s string, n int) string {
	if r := []rune(s); len(r) > n {
		s = string(r[:n]) + "…"
	}
	return lineBody(s)
}
