// Command katonode runs one KATO processor as a node of the cluster.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The first SIGINT/SIGTERM asks for a graceful stop, bounded by the drain
	// timeout whatever etcd is doing; a second one stops at once.
	limit := &stopLimit{}
	limit.set(10 * time.Second)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		sig := <-sigs
		cancel()
		d := limit.get()
		fmt.Fprintf(os.Stderr, "katonode: %v: stopping gracefully within %v (send it again to stop at once)\n", sig, d)
		select {
		case sig = <-sigs:
			fmt.Fprintf(os.Stderr, "katonode: %v again: stopping now\n", sig)
			os.Exit(130)
		case <-time.After(d):
			fmt.Fprintf(os.Stderr, "katonode: not stopped within --drain-timeout %v: stopping now (the lease expires by itself)\n", d)
			os.Exit(1)
		}
	}()
	app := newApp(limit)
	if err := app.RunContext(ctx, cliutil.NormalizeArgs(app, os.Args)); err != nil {
		fmt.Fprintln(os.Stderr, "katonode:", cliutil.ErrorLine(err))
		os.Exit(1)
	}
}

// stopLimit is how long a graceful stop may take before main ends the
// process: the drain timeout, once run has read it.
type stopLimit struct{ d atomic.Int64 }

func (l *stopLimit) set(d time.Duration) { l.d.Store(int64(d)) }
func (l *stopLimit) get() time.Duration  { return time.Duration(l.d.Load()) }
