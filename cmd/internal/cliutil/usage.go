package cliutil

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
)

// OneLineUsageErrors makes every usage error of app (a bad flag value, an
// unknown flag) one line that names the cause and the next step, instead of
// urfave/cli's "Incorrect Usage" and the whole help.
func OneLineUsageErrors(app *cli.App) {
	app.OnUsageError = usageError
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.OnUsageError = usageError
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
}

var (
	badValue  = regexp.MustCompile(`^invalid value "(.*)" for flag -([^:]+): `)
	undefined = regexp.MustCompile(`^flag provided but not defined: -+(.+)$`)
)

func usageError(c *cli.Context, err error, _ bool) error {
	var flags []cli.Flag
	where := c.App.Name
	if c.Command != nil && c.Command.Name != "" {
		flags = c.Command.Flags
		where = c.App.Name + " " + c.Command.FullName()
	} else {
		flags = c.App.Flags
	}
	help := where + " --help"
	msg := err.Error()
	if m := badValue.FindStringSubmatch(msg); m != nil {
		val, name := m[1], m[2]
		return fmt.Errorf("%s %q: %s", dashed(name), val, ValueHint(findFlag(flags, name), name))
	}
	if m := undefined.FindStringSubmatch(msg); m != nil {
		return fmt.Errorf("%s: unknown flag for %s; %s lists them", dashed(m[1]), where, help)
	}
	return fmt.Errorf("%s; see %s", strings.TrimSpace(msg), help)
}

// ValueHint says what the value of flag f (named name) must look like.
func ValueHint(f cli.Flag, name string) string {
	switch f.(type) {
	case *cli.DurationFlag:
		return "use a duration with a unit, such as 10s, 500ms or 1m30s"
	case *cli.IntFlag, *cli.Int64Flag, *cli.UintFlag, *cli.Uint64Flag:
		return "use a whole number"
	case *cli.Float64Flag:
		return "use a number, such as 0.1"
	case *cli.BoolFlag:
		return fmt.Sprintf("use %s=true or %s=false", dashed(name), dashed(name))
	}
	return "not a valid value"
}

func dashed(name string) string {
	if len(name) == 1 {
		return "-" + name
	}
	return "--" + name
}

// pkgPrefix is a package name that errors carry for logs ("coord: ").
var pkgPrefix = regexp.MustCompile(`(^|: )(coord|node|kb|api|processor|cliutil): `)

// ErrorLine is err as one line for the user: without the package prefixes
// that wrapped errors repeat ("coord: register a: coord: ..."), on one line.
func ErrorLine(err error) string {
	s := err.Error()
	for {
		t := pkgPrefix.ReplaceAllString(s, "$1")
		if t == s {
			break
		}
		s = t
	}
	return strings.Join(strings.Fields(s), " ")
}
