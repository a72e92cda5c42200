package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
	"github.com/kato-coord/kato/coord"
)

func stopCommand() *cli.Command {
	return &cli.Command{
		Name:      "stop",
		Usage:     "stop instances gracefully (a control message) and wait until they are gone",
		ArgsUsage: "ID|NAME... | --all",
		Description: "An instance whose process runs the etcd (katonode run --embedded-etcd) is\n" +
			"stopped last, so that the others can still be seen to go.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all", Usage: "stop every registered instance"},
			&cli.BoolFlag{Name: "force", Usage: "for an instance that does not stop: send the stop message, then revoke its lease at once " +
				"(its record and model lock go now; the process stops when it reaches etcd again)"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "how long to wait for each instance to go"},
		},
		Action: func(c *cli.Context) error {
			if c.Bool("all") == c.Args().Present() {
				return errors.New("stop: give instance ids or names, or --all")
			}
			return withEtcd(c, func(e env) error { return stopInstances(c, e) })
		},
	}
}

func stopInstances(c *cli.Context, e env) error {
	ctx, cancel := cliutil.CommandContext(c)
	list, _, err := coord.ListInstances(ctx, e.cli)
	cancel()
	if err != nil {
		return err
	}
	var targets []coord.Instance
	if c.Bool("all") {
		targets = list
	} else {
		for _, arg := range c.Args().Slice() {
			found := false
			for _, in := range list {
				if in.ID == arg || in.Name == arg {
					targets = append(targets, in)
					found = true
				}
			}
			if !found {
				return fmt.Errorf("stop: no registered instance with id or name %q", arg)
			}
		}
	}
	if len(targets) == 0 {
		fmt.Fprintln(c.App.Writer, "no instances registered")
		return nil
	}
	// The instance that runs the etcd goes last: with it, etcd goes too.
	sort.SliceStable(targets, func(i, j int) bool { return !targets[i].EmbeddedEtcd && targets[j].EmbeddedEtcd })
	sctx, scancel := cliutil.CommandContext(c)
	s, err := coord.NewSession(sctx, e.cli, e.lg, coord.WithTTL(10*time.Second))
	scancel()
	if err != nil {
		return err
	}
	defer func() {
		// The etcd may have gone with the last instance: do not wait for it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		s.Close(ctx)
	}()
	mb := coord.NewMailbox(s, "katoctl-"+strconv.Itoa(os.Getpid()), coord.WithMailboxLogger(e.lg))
	var failed []string
	for _, in := range targets {
		sctx, cancel := cliutil.CommandContext(c)
		_, err := mb.Send(sctx, in.ID, coord.Message{Kind: coord.KindControl, Body: coord.ControlStop}, time.Minute)
		cancel()
		if err != nil {
			return fmt.Errorf("stop %s: %w", in.ID, err)
		}
		if c.Bool("force") {
			if err := forceStop(c, e, in); err != nil {
				return err
			}
			continue
		}
		gone, err := waitGone(c.Context, e.cli, e.lg, in, c.Duration("timeout"))
		if err != nil {
			failed = append(failed, in.ID)
			fmt.Fprintf(c.App.ErrWriter, "katoctl: %s did not stop within %v (katoctl stop --force %s revokes its lease)\n", in.ID, c.Duration("timeout"), in.ID)
			continue
		}
		fmt.Fprintf(c.App.Writer, "stopped %s%s\n", in.ID, gone)
	}
	if len(failed) > 0 {
		return cli.Exit("", 1)
	}
	return nil
}

// waitGone waits until instances/<id> is deleted. For an instance that runs
// the etcd, etcd no longer answering after the stop message counts as gone
// too: the record went with it. It returns a note for the user.
func waitGone(ctx context.Context, cli *clientv3.Client, lg *zap.Logger, in coord.Instance, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if in.EmbeddedEtcd {
		for {
			gctx, gcancel := context.WithTimeout(ctx, time.Second)
			_, err := coord.GetInstance(gctx, cli, in.ID)
			gcancel()
			switch {
			case errors.Is(err, coord.ErrNotFound):
				return "", nil
			case ctx.Err() != nil:
				return "", ctx.Err()
			case err != nil:
				return " (the etcd it ran went with it)", nil
			}
			select {
			case <-ctx.Done():
				return "", ctx.Err()
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	_, rev, err := coord.ListInstances(ctx, cli)
	if err != nil {
		return "", err
	}
	if _, err := coord.GetInstance(ctx, cli, in.ID); errors.Is(err, coord.ErrNotFound) {
		return "", nil
	}
	gone := errors.New("gone")
	err = coord.WatchInstances(ctx, cli, lg, rev+1, func(ev coord.InstanceEvent) {
		if ev.Type == coord.EventRemoved && ev.Instance.ID == in.ID {
			cancel()
			gone = nil
		}
	})
	if gone == nil {
		return "", nil
	}
	return "", err
}

// forceStop revokes the instance's lease right after its stop message was
// sent: the record and model lock go at once, and the process, which would
// otherwise register again, finds the message when it does and stops.
func forceStop(c *cli.Context, e env, in coord.Instance) error {
	var lease int64
	if _, err := fmt.Sscanf(in.LeaseID, "%x", &lease); err != nil {
		return fmt.Errorf("stop --force %s: record has no lease id (%q)", in.ID, in.LeaseID)
	}
	ctx, cancel := cliutil.CommandContext(c)
	_, err := e.cli.Revoke(ctx, clientv3.LeaseID(lease))
	cancel()
	if err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("stop --force %s: revoke lease %s: %w", in.ID, in.LeaseID, err)
	}
	fmt.Fprintf(c.App.Writer, "revoked lease %s of %s: its record and model lock are gone; "+
		"a stop message waits in its inbox for 1m, so the process stops when it reaches etcd again\n", in.LeaseID, in.ID)
	return nil
}
