package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
	"github.com/kato-coord/kato/coord"
)

// sessionsCommand is `katoctl sessions ls|get|rm`.
func sessionsCommand() *cli.Command {
	modelFlag := &cli.StringFlag{Name: "model", Usage: "only the sessions of this model"}
	return &cli.Command{
		Name:  "sessions",
		Usage: "list, show and remove KATO 3 sessions",
		Subcommands: []*cli.Command{
			{
				Name:  "ls",
				Usage: "list the live sessions (of every model, or of --model)",
				Flags: []cli.Flag{modelFlag},
				Action: func(c *cli.Context) error {
					return withEtcd(c, func(e env) error { return sessionsList(c, e) })
				},
			},
			{
				Name:      "get",
				Usage:     "show one session: record, config, STM and TTL left",
				ArgsUsage: "SESSION_ID",
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return fmt.Errorf("sessions get takes one session id, got %d arguments", c.NArg())
					}
					return withEtcd(c, func(e env) error { return sessionsGet(c, e, c.Args().First()) })
				},
			},
			{
				Name:  "rm",
				Usage: "remove sessions by id, or every session of --model",
				Description: "Revokes each session's lease: etcd deletes the session at once, the node serving it\n" +
					"drops it, and its id answers 404 from then on.",
				ArgsUsage: "[SESSION_ID...]",
				Flags:     []cli.Flag{modelFlag},
				Action: func(c *cli.Context) error {
					if (c.NArg() == 0) == !c.IsSet("model") {
						return errors.New("sessions rm: give session ids, or --model MODEL to remove all of a model's sessions")
					}
					return withEtcd(c, func(e env) error { return sessionsRemove(c, e) })
				},
			},
		},
	}
}

// sessionView is what katoctl shows of a session record (the node writes it;
// node/sessions.go has the full format).
type sessionView struct {
	SessionID string          `json:"session_id"`
	Model     string          `json:"node_id"`
	CreatedAt time.Time       `json:"created_at"`
	TTL       int64           `json:"ttl_seconds"`
	TTLLeft   int64           `json:"ttl_left_seconds"`
	Metadata  json.RawMessage `json:"metadata,omitempty"`
	State     struct {
		Config json.RawMessage `json:"config"`
		Time   int64           `json:"time"`
		STM    [][]string      `json:"stm"`
	} `json:"state"`
	lease clientv3.LeaseID
}

func decodeSession(kv []byte, lease int64) (sessionView, error) {
	var v sessionView
	err := json.Unmarshal(kv, &v)
	v.lease = clientv3.LeaseID(lease)
	return v, err
}

func sessionPrefix(c *cli.Context) (string, error) {
	if m := c.String("model"); m != "" {
		return coord.SessionPrefix(m), coord.CheckID(m)
	}
	return coord.SessionsPrefix(), nil
}

func sessionsList(c *cli.Context, e env) error {
	ctx, cancel := cliutil.CommandContext(c)
	defer cancel()
	prefix, err := sessionPrefix(c)
	if err != nil {
		return err
	}
	resp, err := e.cli.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return err
	}
	views := []sessionView{}
	t := cliutil.Table{Header: []string{"SESSION", "MODEL", "AGE", "TTL", "LEFT", "STM", "TIME"}}
	now := time.Now()
	for _, kv := range resp.Kvs {
		v, err := decodeSession(kv.Value, kv.Lease)
		if err != nil {
			fmt.Fprintf(c.App.ErrWriter, "katoctl: %s: not a session record (%v); skipped\n", kv.Key, err)
			continue
		}
		v.TTLLeft = ttlLeft(ctx, e.cli, fmt.Sprintf("%x", int64(v.lease)))
		views = append(views, v)
		t.Rows = append(t.Rows, []string{v.SessionID, v.Model, fmtDuration(now.Sub(v.CreatedAt)), strconv.FormatInt(v.TTL, 10) + "s",
			fmtTTL(v.TTLLeft), strconv.Itoa(len(v.State.STM)), strconv.FormatInt(v.State.Time, 10)})
	}
	return cliutil.Print(c, views, t)
}

func sessionsGet(c *cli.Context, e env, sid string) error {
	ctx, cancel := cliutil.CommandContext(c)
	defer cancel()
	model, ok := coord.SessionModel(sid)
	if !ok {
		return fmt.Errorf("sessions get: %q is not a session id (MODEL.<32 hex digits>); katoctl sessions ls lists them", sid)
	}
	resp, err := e.cli.Get(ctx, coord.SessionKey(model, sid))
	if err != nil {
		return err
	}
	if len(resp.Kvs) == 0 {
		return fmt.Errorf("sessions get: no session %s (expired or removed); katoctl sessions ls lists the live ones", sid)
	}
	v, err := decodeSession(resp.Kvs[0].Value, resp.Kvs[0].Lease)
	if err != nil {
		return fmt.Errorf("sessions get: %s is not a session record: %w", sid, err)
	}
	v.TTLLeft = ttlLeft(ctx, e.cli, fmt.Sprintf("%x", int64(v.lease)))
	stm, _ := json.Marshal(v.State.STM)
	t := cliutil.Table{Header: []string{"FIELD", "VALUE"}, Rows: [][]string{
		{"session", v.SessionID}, {"model", v.Model}, {"created", v.CreatedAt.Format(time.RFC3339)},
		{"ttl", strconv.FormatInt(v.TTL, 10) + "s"}, {"left", fmtTTL(v.TTLLeft)}, {"time", strconv.FormatInt(v.State.Time, 10)},
		{"config", string(v.State.Config)}, {"metadata", orDash(string(v.Metadata))}, {"stm", string(stm)},
	}}
	return cliutil.Print(c, v, t)
}

func sessionsRemove(c *cli.Context, e env) error {
	ctx, cancel := cliutil.CommandContext(c)
	defer cancel()
	var keys []string
	if c.IsSet("model") {
		prefix, err := sessionPrefix(c)
		if err != nil {
			return err
		}
		resp, err := e.cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return err
		}
		for _, kv := range resp.Kvs {
			keys = append(keys, string(kv.Key))
		}
	}
	for _, sid := range c.Args().Slice() {
		model, ok := coord.SessionModel(sid)
		if !ok {
			return fmt.Errorf("sessions rm: %q is not a session id (MODEL.<32 hex digits>); katoctl sessions ls lists them", sid)
		}
		keys = append(keys, coord.SessionKey(model, sid))
	}
	removed := 0
	for _, key := range keys {
		sid := key[strings.LastIndexByte(key, '/')+1:]
		resp, err := e.cli.Get(ctx, key)
		if err != nil {
			return err
		}
		if len(resp.Kvs) == 0 {
			fmt.Fprintf(c.App.ErrWriter, "katoctl: no session %s (expired or removed already)\n", sid)
			continue
		}
		if _, err := e.cli.Revoke(ctx, clientv3.LeaseID(resp.Kvs[0].Lease)); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return fmt.Errorf("sessions rm %s: %w", sid, err)
		}
		removed++
		fmt.Fprintf(c.App.Writer, "removed %s\n", sid)
	}
	if c.IsSet("model") {
		fmt.Fprintf(c.App.Writer, "removed %d sessions of %s\n", removed, c.String("model"))
	}
	return nil
}
