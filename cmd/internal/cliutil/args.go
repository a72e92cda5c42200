package cliutil

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// NormalizeArgs reorders a command line so that urfave/cli, which stops
// reading flags at the first argument, accepts flags anywhere, as etcdctl and
// kubectl users expect: a flag of the app (--endpoints, -o) may come after
// the command, and a command's flags may come after its arguments.
//
// Each flag moves to the level (app, command, subcommand) that defines it,
// the deepest first; a flag no level defines stays at the deepest level, so
// urfave/cli still reports it. Arguments keep their order. After "--", and
// after the first argument of a command named in passthrough (its arguments
// are another command line, as for katoctl lock MODEL CMD...), nothing moves.
// A top-level --version becomes the version command when the app has one.
func NormalizeArgs(app *cli.App, args []string, passthrough ...string) []string {
	if len(args) == 0 {
		return args
	}
	type level struct {
		name  string // the command's name as typed; "" for the app
		flags []cli.Flag
		out   []string
	}
	levels := []*level{{flags: app.Flags}}
	cmds := app.Commands
	var path []string
	var positional []string
	// pending holds flags no level so far defines but a command further
	// down does (katonode --log-level debug run): they move down with it.
	var pending [][]string
	rest := args[1:]
	for len(rest) > 0 {
		arg := rest[0]
		rest = rest[1:]
		if arg == "--" {
			positional = append(positional, arg)
			positional = append(positional, rest...)
			break
		}
		if len(arg) > 1 && arg[0] == '-' {
			name, hasValue := flagName(arg)
			at := len(levels) - 1
			var f cli.Flag
			for i := len(levels) - 1; i >= 0; i-- {
				if g := findFlag(levels[i].flags, name); g != nil {
					at, f = i, g
					break
				}
			}
			if f == nil && len(levels) == 1 && (name == "version" || name == "v") && findCommand(cmds, "version") != nil {
				levels = append(levels, &level{name: "version"})
				cmds = nil
				continue
			}
			below := false
			if f == nil && len(positional) == 0 {
				f = findInTree(cmds, name)
				below = f != nil
			}
			flag := []string{arg}
			if f != nil && !hasValue && takesValue(f) && len(rest) > 0 {
				flag = append(flag, rest[0])
				rest = rest[1:]
			}
			if below {
				pending = append(pending, flag)
			} else {
				levels[at].out = append(levels[at].out, flag...)
			}
			continue
		}
		if len(positional) == 0 {
			if c := findCommand(cmds, arg); c != nil {
				l := &level{name: arg, flags: c.Flags}
				levels = append(levels, l)
				path = append(path, c.Name)
				cmds = c.Subcommands
				var still [][]string
				for _, p := range pending {
					if name, _ := flagName(p[0]); findFlag(c.Flags, name) != nil {
						l.out = append(l.out, p...)
					} else {
						still = append(still, p)
					}
				}
				pending = still
				continue
			}
		}
		positional = append(positional, arg)
		if len(path) > 0 && contains(passthrough, strings.Join(path, " ")) {
			positional = append(positional, rest...)
			break
		}
	}
	for _, p := range pending {
		last := levels[len(levels)-1]
		last.out = append(last.out, p...)
	}
	out := []string{args[0]}
	for i, l := range levels {
		if i > 0 {
			out = append(out, l.name)
		}
		out = append(out, l.out...)
	}
	return append(out, positional...)
}

// flagName returns the name of "-x", "--name" or "--name=value" and whether
// the value is in the same argument.
func flagName(arg string) (string, bool) {
	name := strings.TrimLeft(arg, "-")
	if i := strings.IndexByte(name, '='); i >= 0 {
		return name[:i], true
	}
	return name, false
}

func findFlag(flags []cli.Flag, name string) cli.Flag {
	for _, f := range flags {
		for _, n := range f.Names() {
			if n == name {
				return f
			}
		}
	}
	return nil
}

// findInTree finds a flag of any command in cmds or below.
func findInTree(cmds []*cli.Command, name string) cli.Flag {
	for _, c := range cmds {
		if f := findFlag(c.Flags, name); f != nil {
			return f
		}
		if f := findInTree(c.Subcommands, name); f != nil {
			return f
		}
	}
	return nil
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// takesValue reports whether f reads the next argument as its value
// (boolean flags do not).
func takesValue(f cli.Flag) bool {
	if tv, ok := f.(interface{ TakesValue() bool }); ok {
		return tv.TakesValue()
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
