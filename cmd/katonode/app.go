package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node"
)

const (
	catNode     = "node"
	catEmbedded = "embedded etcd"
)

func newApp() *cli.App {
	return &cli.App{
		Name:                 "katonode",
		Usage:                "run one KATO processor as a node of a cluster coordinated by etcd",
		Version:              cliutil.VersionString(),
		HideVersion:          true,
		EnableBashCompletion: true,
		Suggest:              true,
		Commands: []*cli.Command{
			runCommand(),
			cliutil.VersionCommand(),
		},
	}
}

func runCommand() *cli.Command {
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
		Action:    runAction,
	}
}

func runAction(c *cli.Context) error {
	if c.Args().Present() {
		return fmt.Errorf("run takes no arguments, got %q", c.Args().Slice())
	}
	if path := c.String("config"); path != "" {
		if err := applyConfigFile(c, path); err != nil {
			return err
		}
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
		ID:            id,
		Name:          c.String("name"),
		Model:         c.String("model"),
		ListenHost:    c.String("listen-host"),
		Port:          c.Int("port"),
		AdvertiseHost: c.String("advertise-host"),
		Genes:         genesFrom(c),
		TTL:           c.Duration("ttl"),
		LockTimeout:   c.Duration("lock-timeout"),
		DrainTimeout:  c.Duration("drain-timeout"),
		APIToken:      c.String("api-token"),
		MaxBodyBytes:  c.Int64("max-body-bytes"),
		Version:       cliutil.VersionString(),
	}, cli, lg)
	if err != nil {
		return err
	}
	return n.Run(ctx)
}

// instanceID returns --id, sanitized (telling the user), or one generated
// from host, time and pid.
func instanceID(c *cli.Context, lg *zap.Logger) (string, error) {
	raw := c.String("id")
	if raw == "" {
		id := coord.GenerateID(coord.Hostname(), time.Now(), os.Getpid())
		lg.Info("no --id given; using a generated one", zap.String("id", id))
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
