// Package clitest holds test support for the commands: a check, for every
// command of a urfave/cli app, that cliutil.NormalizeArgs lets flags come
// anywhere on the command line, and a build of the katoctl binary for tests
// that run it as a process.
package clitest

import (
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
)

// FlagsAnywhere runs every leaf command of the app newApp builds (its action
// replaced by one that records what urfave/cli parsed) with every one of the
// command's flags after an argument, and the app's flags given as extra
// (name, value pairs) after the command. It checks that each flag was set to
// the value given and that the argument stayed an argument. For a command in
// passthrough, the flags after its first argument must stay arguments.
func FlagsAnywhere(t *testing.T, newApp func() *cli.App, extra []string, passthrough ...string) {
	t.Helper()
	app := newApp()
	var walk func(path []string, cmds []*cli.Command)
	count := 0
	walk = func(path []string, cmds []*cli.Command) {
		for _, c := range cmds {
			p := append(append([]string(nil), path...), c.Name)
			if len(c.Subcommands) > 0 {
				walk(p, c.Subcommands)
				continue
			}
			count++
			t.Run(strings.Join(p, "_"), func(t *testing.T) { checkCommand(t, newApp, p, extra, passthrough) })
		}
	}
	walk(nil, app.Commands)
	if count == 0 {
		t.Fatal("no command found")
	}
}

func checkCommand(t *testing.T, newApp func() *cli.App, path, extra, passthrough []string) {
	app := newApp()
	app.Writer, app.ErrWriter = io.Discard, io.Discard
	app.ExitErrHandler = func(*cli.Context, error) {}
	cmd := find(app.Commands, path)
	want := map[string]string{}
	var flagArgs []string
	for _, f := range cmd.Flags {
		name := f.Names()[0]
		if name == "help" {
			continue
		}
		v := sample(f)
		want[name] = v
		if v == "" {
			flagArgs = append(flagArgs, "--"+name)
			want[name] = "true"
		} else {
			flagArgs = append(flagArgs, "--"+name, v)
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		want[extra[i]] = extra[i+1]
	}
	var got *cli.Context
	cmd.Action = func(c *cli.Context) error { got = c; return nil }
	cmd.Before, cmd.After = nil, nil

	pass := contains(passthrough, strings.Join(path, " "))
	args := append([]string{app.Name}, path...)
	args = append(args, "ARG")
	extraArgs := make([]string, 0, len(extra))
	for i := 0; i+1 < len(extra); i += 2 {
		extraArgs = append(extraArgs, "--"+extra[i], extra[i+1])
	}
	wantArgs := []string{"ARG"}
	if pass {
		// Flags before the argument move; after it they are the command's.
		args = append(append(append([]string{app.Name}, path...), flagArgs...), "ARG", "cmd", "-o", "x")
		args = append(args[:1], append(extraArgs, args[1:]...)...)
		wantArgs = []string{"ARG", "cmd", "-o", "x"}
	} else {
		args = append(args, flagArgs...)
		args = append(args, extraArgs...)
	}
	norm := cliutil.NormalizeArgs(app, args, passthrough...)
	if err := app.Run(norm); err != nil {
		t.Fatalf("%q (normalised %q): %v", args, norm, err)
	}
	if got == nil {
		t.Fatalf("%q: the action did not run", args)
	}
	if a := got.Args().Slice(); !reflect.DeepEqual(a, wantArgs) {
		t.Fatalf("%q: arguments %q, want %q", args, a, wantArgs)
	}
	for name, v := range want {
		if !got.IsSet(name) {
			t.Errorf("%q: --%s not set", args, name)
			continue
		}
		if s := value(got, name); s != v {
			t.Errorf("%q: --%s = %q, want %q", args, name, s, v)
		}
	}
}

// sample is a value of the flag's type ("" for a switch).
func sample(f cli.Flag) string {
	switch f.(type) {
	case *cli.BoolFlag:
		return ""
	case *cli.DurationFlag:
		return "7s"
	case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
		return "7"
	case *cli.Float64Flag:
		return "0.5"
	}
	return "v7"
}

func value(c *cli.Context, name string) string {
	for _, l := range c.Lineage() {
		if l.Command == nil && l.App == nil {
			continue
		}
		if v := l.Value(name); v != nil {
			switch x := v.(type) {
			case cli.StringSlice:
				return strings.Join(x.Value(), ",")
			case fmt.Stringer:
				return x.String()
			}
			return fmt.Sprint(v)
		}
	}
	return ""
}

func find(cmds []*cli.Command, path []string) *cli.Command {
	for _, c := range cmds {
		if c.Name == path[0] {
			if len(path) == 1 {
				return c
			}
			return find(c.Subcommands, path[1:])
		}
	}
	panic("no command " + strings.Join(path, " "))
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
