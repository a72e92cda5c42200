package main

import (
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kato-coord/kato/cmd/internal/cliutil/clitest"
)

// katonode run's flags are accepted after arguments too (run takes none,
// which it then reports), and before the command (katonode --id a run).
func TestFlagsAnywhereEveryCommand(t *testing.T) {
	clitest.FlagsAnywhere(t, func() *cli.App { return newApp(&stopLimit{}) }, nil)
}

func TestUsageErrorsAreOneLine(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"run", "--ttl", "10"}, `--ttl "10": use a duration with a unit, such as 10s`},
		{[]string{"--ttl", "10", "run"}, `--ttl "10": use a duration with a unit, such as 10s`},
		{[]string{"run", "--sort", "maybe"}, `a switch such as --sort takes its value after =, as in --sort=false`},
		{[]string{"run", "--max-predictions", "many"}, `--max-predictions "many": use a whole number`},
		{[]string{"run", "--nosuch"}, `--nosuch: unknown flag for katonode run`},
		{[]string{"--log-level", "debug", "run", "--endpoints", "127.0.0.1:1"}, `etcd does not answer at 127.0.0.1:1 (connection refused)`},
	} {
		p := startKatonode(t, tc.args...)
		code := p.wait(t, 30*time.Second)
		out := p.out.String()
		if code != 1 || !strings.Contains(out, tc.want) || strings.Contains(out, "USAGE") {
			t.Errorf("katonode %q: exit %d, want 1 and one line with %q:\n%s", tc.args, code, tc.want, out)
		}
	}
	p := startKatonode(t, "--version")
	if code := p.wait(t, 10*time.Second); code != 0 || !strings.HasPrefix(p.out.String(), "katonode ") {
		t.Errorf("katonode --version: exit %d: %s", code, p.out.String())
	}
}
