// Command katoctl administers a KATO cluster through etcd: instances, locks,
// messages and models.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp()
	// katoctl lock MODEL CMD...: the flags of CMD stay CMD's.
	err := app.RunContext(ctx, cliutil.NormalizeArgs(app, os.Args, "lock"))
	stop()
	if err != nil {
		if ec, ok := err.(cli.ExitCoder); ok {
			if msg := cliutil.ErrorLine(err); msg != "" {
				fmt.Fprintln(os.Stderr, "katoctl:", msg)
			}
			os.Exit(ec.ExitCode())
		}
		fmt.Fprintln(os.Stderr, "katoctl:", cliutil.ErrorLine(err))
		os.Exit(1)
	}
}
