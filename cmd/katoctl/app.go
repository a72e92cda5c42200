package main

import (
	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
)

// newApp builds the katoctl command tree. Global flags (etcd connection,
// logging, output) may go anywhere once main has normalised the arguments
// (cliutil.NormalizeArgs): katoctl --endpoints h:2379 list -o json.
func newApp() *cli.App {
	flags := append(cliutil.EtcdFlags(), cliutil.LogFlags("warn")...)
	flags = append(flags, cliutil.OutputFlag())
	var commands []*cli.Command
	commands = append(commands, nodeCommands()...)
	commands = append(commands, stopCommand())
	commands = append(commands, msgCommand())
	commands = append(commands, lockCommands()...)
	commands = append(commands, modelsCommand(), cleanupCommand())
	commands = append(commands, sessionsCommand())
	commands = append(commands, benchCommand())
	commands = append(commands, cliutil.VersionCommand())
	app := &cli.App{
		Name:                 "katoctl",
		Usage:                "administer a KATO cluster through etcd",
		Version:              cliutil.VersionString(),
		HideVersion:          true,
		EnableBashCompletion: true,
		Suggest:              true,
		ExitErrHandler:       func(*cli.Context, error) {}, // main prints and exits
		Flags:                flags,
		Commands:             commands,
	}
	cliutil.OneLineUsageErrors(app)
	return app
}

// env is what a katoctl command needs to talk to etcd.
type env struct {
	lg  *zap.Logger
	cli *clientv3.Client
}

// withEtcd runs fn with a logger and an etcd client confined to --prefix,
// closing both afterwards.
func withEtcd(c *cli.Context, fn func(env) error) error {
	lg, err := cliutil.Logger(c)
	if err != nil {
		return err
	}
	defer lg.Sync()
	cli, err := cliutil.Connect(c, lg)
	if err != nil {
		return err
	}
	defer cli.Close()
	return fn(env{lg: lg, cli: cli})
}
