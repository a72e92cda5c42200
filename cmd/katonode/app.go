package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node"
	"github.com/kato-coord/kato/node/kb"
)

const (
	catNode     = "node"
	catEmbedded = "embedded etcd"
)

// newApp builds the katonode command tree; run stores its drain timeout in
// limit, the bound main puts on a graceful stop.
func newApp(limit *stopLimit) *cli.App {
	app := &cli.App{
		Name:                 "katonode",
		Usage:                "run one KATO processor as a node of a cluster coordinated by etcd",
		Version:              cliutil.VersionString(),
		HideVersion:          true,
		EnableBashCompletion: true,
		Suggest:              true,
		Commands: []*cli.Command{
			runCommand(limit),
			cliutil.VersionCommand(),
		},
	}
	cliutil.OneLineUsageErrors(app)
	return app
}

func runCommand(limit *stopLimit) *cli.Command {
	flags := nodeFlags()
	flags = append(flags, geneFlags()...)
	flags = append(flags,
		&cli.BoolFlag{Name: "embedded-etcd", Category: catEmbedded, EnvVars: []string{"KATO_EMBEDDED_ETCD"},
			Usage: "start a single-member etcd inside this process (one machine, no etcd to set up)"},
		&cli.StringFlag{Name: "etcd-data-dir", Category: catEmbedded, Value: coord.DefaultEmbeddedDataDir(),
			EnvVars: []string{"KATO_ETCD_DATA_DIR"}, Usage: "data directory of the embedded etcd", TakesFile: true},
		&cli.StringFlag{Name: "etcd-listen-client", Category: catEmbedded, Value: "127.0.0.1:2379",
			EnvVars: []string{"KATO_ETCD_LISTEN_CLIENT"}, Usage: "client address of the embedded etcd; other processes use it as --endpoints"},
		&cli.StringFlag{Name: "etcd-listen-peer", Category: catEmbedded, Value: "127.0.0.1:2380",
			EnvVars: []string{"KATO_ETCD_LISTEN_PEER"}, Usage: "peer address of the embedded etcd"},
		&cli.StringFlag{Name: "etcd-auto-compaction-retention", Category: catEmbedded, Value: coord.DefaultAutoCompactionRetention,
			EnvVars: []string{"KATO_ETCD_AUTO_COMPACTION_RETENTION"},
			Usage:   "history the embedded etcd keeps: a duration (1h) or a number of revisions (10000); 0 turns compaction off"},
		&cli.Int64Flag{Name: "etcd-quota-backend-bytes", Category: catEmbedded, Value: coord.DefaultQuotaBackendBytes,
			EnvVars: []string{"KATO_ETCD_QUOTA_BACKEND_BYTES"},
			Usage:   "database size at which the embedded etcd raises the NOSPACE alarm and takes no more writes (README: defragment)"},
	)
	flags = append(flags, cliutil.EtcdFlags()...)
	flags = append(flags, cliutil.LogFlags("info")...)
	return &cli.Command{
		Name:      "run",
		Usage:     "run a node until SIGINT/SIGTERM or katoctl stop",
		UsageText: "katonode run [--id ID] [--model M] [--embedded-etcd] [flags]",
		Flags:     flags,
		Action:    func(c *cli.Context) error { return runAction(c, limit) },
	}
}

func runAction(c *cli.Context, limit *stopLimit) error {
	if c.Args().Present() {
		return fmt.Errorf("run takes no arguments, got %q; a switch such as --sort takes its value after =, as in --sort=false", c.Args().Slice())
	}
	if path := c.String("config"); path != "" {
		if err := applyConfigFile(c, path); err != nil {
			return err
		}
	}
	if d := c.Duration("drain-timeout"); d > 0 {
		limit.set(d)
	}
	lg, err := cliutil.Logger(c)
	if err != nil {
		return err
	}
	defer lg.Sync()

	id, err := instanceID(c, lg)
	if err != nil {
		return err
	}
	ctx := c.Context
	if c.Bool("embedded-etcd") {
		e, err := coord.StartEmbedded(ctx, coord.EmbeddedConfig{
			DataDir:    c.String("etcd-data-dir"),
			ClientAddr: c.String("etcd-listen-client"),
			PeerAddr:   c.String("etcd-listen-peer"),

			AutoCompactionRetention: c.String("etcd-auto-compaction-retention"),
			QuotaBackendBytes:       c.Int64("etcd-quota-backend-bytes"),
		}, lg)
		if err != nil {
			return err
		}
		defer func() {
			e.Close()
			lg.Info("embedded etcd stopped")
		}()
		if !c.IsSet("endpoints") {
			if err := c.Set("endpoints", e.Endpoint()); err != nil {
				return err
			}
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		defer cancel()
		go func() {
			select {
			case err := <-e.Err():
				lg.Error("embedded etcd failed", zap.Error(err))
				cancel()
			case <-ctx.Done():
			}
		}()
	}

	cli, err := coord.Connect(ctx, cliutil.ClientConfig(c), lg)
	if err != nil {
		return err
	}
	defer cli.Close()

	n, err := node.New(node.Config{
		ID:               id,
		Name:             c.String("name"),
		Model:            c.String("model"),
		ListenHost:       c.String("listen-host"),
		Port:             c.Int("port"),
		AdvertiseHost:    c.String("advertise-host"),
		Genes:            genesFrom(c),
		TTL:              c.Duration("ttl"),
		LockTimeout:      c.Duration("lock-timeout"),
		DrainTimeout:     c.Duration("drain-timeout"),
		APIToken:         c.String("api-token"),
		MaxBodyBytes:     c.Int64("max-body-bytes"),
		ReadTimeout:      c.Duration("read-timeout"),
		IdleTimeout:      c.Duration("idle-timeout"),
		MaxConns:         c.Int("max-conns"),
		TLSCert:          c.String("tls-cert"),
		TLSKey:           c.String("tls-key"),
		TLSCA:            c.String("tls-ca"),
		Version:          cliutil.VersionString(),
		EmbeddedEtcd:     c.Bool("embedded-etcd"),
		CheckpointPolicy: &kb.Policy{MinEntries: c.Int("checkpoint-entries"), MinBytes: c.Int64("checkpoint-bytes")},
		CheckpointStep:   crashAt(c.String("test-crash-at")),
	}, cli, lg)
	if err != nil {
		return err
	}
	if c.Bool("embedded-etcd") {
		printNextSteps(c, n, id)
	}
	return n.Run(ctx)
}

// crashAt returns a checkpoint step hook that kills the process at step
// (for crash tests), or nil.
func crashAt(step string) func(string) {
	if step == "" {
		return nil
	}
	return func(s string) {
		if s == step {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}

// printNextSteps tells a quick-start user where the node answers and what
// to try first.
func printNextSteps(c *cli.Context, n *node.Node, id string) {
	host := c.String("listen-host")
	if host == "" || host == "0.0.0.0" || host == "::" {
		host = "localhost"
	}
	base := "http://" + net.JoinHostPort(host, strconv.Itoa(n.Addr().(*net.TCPAddr).Port))
	ctl := "katoctl"
	if c.IsSet("etcd-listen-client") {
		ctl += " --endpoints " + c.String("etcd-listen-client")
	}
	fmt.Fprintf(c.App.ErrWriter, "katonode: node %q answers at %s once it runs (model %q). Next, in another terminal:\n"+
		"  %s list\n"+
		"  curl -XPOST %s/%s/observe -d '{\"strings\":[\"hello\",\"world\"],\"vectors\":[],\"emotives\":{}}'\n"+
		"  curl %s/%s/status\n",
		id, base, n.Model(), ctl, base, id, base, id)
}

// instanceID returns --id, sanitized (telling the user), or the default id
// of this host and data dir, which a restart finds again.
func instanceID(c *cli.Context, lg *zap.Logger) (string, error) {
	raw := c.String("id")
	if raw == "" {
		id := coord.DefaultID(coord.Hostname(), c.String("etcd-data-dir"), coord.DefaultEmbeddedDataDir())
		lg.Info("no --id given; using the id of this host and data dir (a restart finds it again)", zap.String("id", id))
		fmt.Fprintf(c.App.ErrWriter, "katonode: no --id given; this node is %q (the same on every restart with this --etcd-data-dir)\n", id)
		return id, nil
	}
	id, changed, err := coord.SanitizeID(raw)
	if err != nil {
		return "", fmt.Errorf("--id: %w", err)
	}
	if changed {
		lg.Warn("--id sanitized", zap.String("given", raw), zap.String("id", id))
		fmt.Fprintf(c.App.ErrWriter, "katonode: --id %q is not a valid id; using %q\n", raw, id)
	}
	return id, nil
}
