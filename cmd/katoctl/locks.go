// katoctl locks: list model locks, break a stuck one, and run a command under a lock.

package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
	"github.com/kato-coord/kato/coord"
)

// exitLockLost is katoctl lock's exit status when the lock was lost while the
// command ran (the command was stopped).
const exitLockLost = 3

func lockCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:  "locks",
			Usage: "list or break model locks",
			Subcommands: []*cli.Command{
				{
					Name:    "ls",
					Aliases: []string{"list"},
					Usage:   "list model locks: holder, host, since, fencing revision, waiters in order",
					Action:  locksList,
				},
				{
					Name:      "break",
					Usage:     "remove the holder's lock key (admin): its fenced writes fail and the next waiter takes the lock",
					ArgsUsage: "MODEL",
					Action:    locksBreak,
				},
			},
		},
		{
			Name:      "lock",
			Usage:     "run a command while holding a model lock",
			ArgsUsage: "MODEL -- CMD [ARGS...]",
			Description: "Waits for the lock of MODEL (at most --lock-timeout), then runs CMD with\n" +
				"KATO_LOCK_MODEL, KATO_LOCK_KEY (the full etcd key) and KATO_LOCK_REV (the\n" +
				"fencing revision) in its environment; ETCD_LOCK_KEY and ETCD_LOCK_REV too, as\n" +
				"etcdctl lock sets them. Writes the command makes to etcd should be fenced:\n" +
				"a transaction whose If compares the create revision of KATO_LOCK_KEY with\n" +
				"KATO_LOCK_REV.\n\n" +
				"If the lock is lost (session expired, or katoctl locks break), CMD gets\n" +
				"SIGTERM, then SIGKILL after --kill-grace, and katoctl exits with status 3.\n" +
				"SIGINT or SIGTERM to katoctl is passed on the same way. Otherwise katoctl\n" +
				"exits with CMD's status (128+N when CMD was killed by signal N).",
			Flags: []cli.Flag{
				&cli.DurationFlag{Name: "lock-timeout", EnvVars: []string{"KATO_LOCK_TIMEOUT"},
					Usage: "give up waiting for the lock after this long (0 = wait forever)"},
				&cli.DurationFlag{Name: "ttl", Value: coord.DefaultTTL, EnvVars: []string{"KATO_TTL"},
					Usage: "session lease TTL: the lock is lost this long after katoctl stops reaching etcd"},
				&cli.DurationFlag{Name: "kill-grace", Value: 10 * time.Second, EnvVars: []string{"KATO_KILL_GRACE"},
					Usage: "how long CMD has to exit after SIGTERM before SIGKILL"},
				&cli.StringFlag{Name: "holder", EnvVars: []string{"KATO_LOCK_HOLDER"},
					Usage: "holder id shown by katoctl locks ls (default katoctl-<pid>)"},
			},
			Action: lockRun,
		},
	}
}

func locksList(c *cli.Context) error {
	return withEtcd(c, func(e env) error {
		ctx, cancel := cliutil.CommandContext(c)
		defer cancel()
		locks, _, err := coord.ListLocks(ctx, e.cli)
		if err != nil {
			return err
		}
		t := cliutil.Table{Header: []string{"MODEL", "HOLDER", "HOST", "SINCE", "FENCE", "WAITERS"}}
		for _, l := range locks {
			var waiters []string
			for _, w := range l.Waiters {
				waiters = append(waiters, lockEntryName(w))
			}
			since := "-"
			if !l.Holder.Since.IsZero() {
				since = l.Holder.Since.UTC().Format(time.RFC3339)
			}
			t.Rows = append(t.Rows, []string{l.Model, lockEntryName(l.Holder), orDash(l.Holder.Host), since,
				fmt.Sprint(l.Holder.Rev), orDash(strings.Join(waiters, ","))})
		}
		return cliutil.Print(c, locks, t)
	})
}

// lockEntryName is the holder id, or the lease of a plain etcd lock.
func lockEntryName(e coord.LockEntry) string {
	if e.ID != "" {
		return e.ID
	}
	return "lease:" + e.Lease
}

// breakResult is what katoctl locks break prints as JSON or YAML.
type breakResult struct {
	Model   string           `json:"model"`
	Removed coord.LockEntry  `json:"removed"`
	Next    *coord.LockEntry `json:"next,omitempty"`
}

func locksBreak(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("locks break takes one model name, got %d arguments", c.NArg())
	}
	model := c.Args().First()
	return withEtcd(c, func(e env) error {
		ctx, cancel := cliutil.CommandContext(c)
		defer cancel()
		st, err := coord.BreakLock(ctx, e.cli, model)
		if err != nil {
			return err
		}
		res := breakResult{Model: model, Removed: st.Holder}
		next := "nobody waits: the model is free"
		if len(st.Waiters) > 0 {
			res.Next = &st.Waiters[0]
			next = fmt.Sprintf("%s takes the lock next", lockEntryName(st.Waiters[0]))
		}
		if f := c.String("output"); f == "json" || f == "yaml" {
			return cliutil.Print(c, res, cliutil.Table{})
		}
		fmt.Fprintf(c.App.Writer, "broke the lock of model %s: removed key %s of %s on %s (fence %d); its fenced writes now fail; %s\n",
			model, st.Holder.Key, lockEntryName(st.Holder), orDash(st.Holder.Host), st.Holder.Rev, next)
		return nil
	})
}

func lockRun(c *cli.Context) error {
	args := c.Args().Slice()
	if len(args) > 0 && args[0] == "--" {
		args = args[1:]
	}
	if len(args) < 2 {
		return errors.New("lock takes a model and a command: katoctl lock MODEL -- CMD [ARGS...]")
	}
	model, argv := args[0], args[1:]
	if argv[0] == "--" {
		argv = argv[1:]
	}
	if len(argv) == 0 {
		return errors.New("lock: no command after --")
	}
	if err := coord.CheckID(model); err != nil {
		return fmt.Errorf("model name: %w", err)
	}
	prefix, err := coord.NormalizePrefix(c.String("prefix"))
	if err != nil {
		return err
	}
	holder := c.String("holder")
	if holder == "" {
		holder = fmt.Sprintf("katoctl-%d", os.Getpid())
	}
	return withEtcd(c, func(e env) error {
		ctx, cancel := cliutil.CommandContext(c)
		s, err := coord.NewSession(ctx, e.cli, e.lg, coord.WithTTL(c.Duration("ttl")))
		cancel()
		if err != nil {
			return err
		}
		defer func() {
			ctx, cancel := lockCleanupContext(c)
			defer cancel()
			s.Close(ctx)
		}()
		l := coord.NewModelLock(s, model, coord.WithHolder(holder, coord.Hostname()), coord.WithLockLogger(e.lg))
		f, err := acquireLock(c, l)
		if err != nil {
			return err
		}
		code, lost, err := runLocked(c, l, f, prefix, argv)
		uctx, ucancel := lockCleanupContext(c)
		defer ucancel()
		if uerr := l.Unlock(uctx); uerr != nil && lost == nil {
			fmt.Fprintf(c.App.ErrWriter, "katoctl: release the lock of model %s: %v\n", model, uerr)
		}
		switch {
		case err != nil:
			return err
		case lost != nil:
			return cli.Exit(fmt.Sprintf("%v; %s was stopped", lost, argv[0]), exitLockLost)
		case code != 0:
			return cli.Exit("", code)
		}
		return nil
	})
}

// lockCleanupContext bounds a clean-up request by --command-timeout, also after
// katoctl was interrupted.
func lockCleanupContext(c *cli.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(c.Context), c.Duration("command-timeout"))
}

// acquireLock takes the lock, saying on stderr who holds it when it has to wait.
func acquireLock(c *cli.Context, l *coord.ModelLock) (coord.Fence, error) {
	ctx, cancel := cliutil.CommandContext(c)
	f, err := l.TryLock(ctx)
	cancel()
	if !errors.Is(err, coord.ErrLocked) {
		return f, err
	}
	fmt.Fprintf(c.App.ErrWriter, "katoctl: waiting: %v\n", err)
	ctx = c.Context
	if d := c.Duration("lock-timeout"); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	return l.Lock(ctx)
}

// runLocked runs argv while the lock is held. It returns the command's exit
// status and, when the lock was lost, why; err when the command could not be
// started.
func runLocked(c *cli.Context, l *coord.ModelLock, f coord.Fence, prefix string, argv []string) (code int, lost, err error) {
	lostc := l.Lost()
	// stop is cancelled when the lock is lost or katoctl is told to stop: the
	// command then gets SIGTERM, and SIGKILL after the grace period.
	stop, cancel := context.WithCancel(c.Context)
	defer cancel()
	cmd := exec.CommandContext(stop, argv[0], argv[1:]...)
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = c.Duration("kill-grace")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, c.App.Writer, c.App.ErrWriter
	key := prefix + f.Key
	rev := fmt.Sprint(f.Rev)
	cmd.Env = append(os.Environ(),
		"KATO_LOCK_MODEL="+l.Model(), "KATO_LOCK_KEY="+key, "KATO_LOCK_REV="+rev,
		"ETCD_LOCK_KEY="+key, "ETCD_LOCK_REV="+rev)
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	select {
	case err := <-exited:
		return childExitCode(cmd, err), nil, nil
	case <-lostc:
		lost = l.Err()
		fmt.Fprintf(c.App.ErrWriter, "katoctl: %v: sending SIGTERM to %s (SIGKILL after %v)\n", lost, argv[0], cmd.WaitDelay)
		cancel()
	case <-c.Context.Done():
		fmt.Fprintf(c.App.ErrWriter, "katoctl: interrupted: sending SIGTERM to %s (SIGKILL after %v)\n", argv[0], cmd.WaitDelay)
	}
	code = childExitCode(cmd, <-exited)
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		fmt.Fprintf(c.App.ErrWriter, "katoctl: %s killed by %v\n", argv[0], ws.Signal())
	}
	return code, lost, nil
}

// childExitCode is the command's exit status, 128+N when signal N killed it.
func childExitCode(cmd *exec.Cmd, err error) int {
	if cmd.ProcessState == nil {
		return 1
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	if code := cmd.ProcessState.ExitCode(); code >= 0 {
		return code
	}
	if err != nil {
		return 1
	}
	return 0
}
