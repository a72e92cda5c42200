package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord"
)

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// A cluster file: --id picks the entry, which goes over the defaults; flags
// override the file.
func TestClusterConfigFile(t *testing.T) {
	c := newCluster(t)
	cfg := writeFile(t, "cluster.yaml", `
defaults:
  model: shared-model
  name: from-defaults
  max-predictions: 3
  port: 0
instances:
  - id: first
    name: first node
  - id: second
    max-predictions: 9
`)
	c.node("--config", cfg, "--id", "first")
	in := c.waitStatus("first", coord.StatusRunning)
	if in.Name != "first node" || in.Model != "shared-model" || !strings.Contains(string(in.Genes), `"max_predictions":3`) {
		t.Fatalf("first: name %q model %q genes %s", in.Name, in.Model, in.Genes)
	}
	c.node("--config", cfg, "--id", "second", "--max-predictions", "5")
	in = c.waitStatus("second", coord.StatusStandby)
	if in.Name != "from-defaults" || in.Model != "shared-model" || !strings.Contains(string(in.Genes), `"max_predictions":5`) {
		t.Fatalf("second: name %q model %q genes %s (the flag must override the file)", in.Name, in.Model, in.Genes)
	}
	// KATO's own gene names are accepted as keys.
	c.node("--config", writeFile(t, "genes.yaml", "model: shared-model\nport: 0\nmax_predictions: 7\nrecall_threshold: 0.25\nmax_sequence_length: 4\n"), "--id", "third")
	in = c.waitStatus("third", coord.StatusStandby)
	for _, want := range []string{`"max_predictions":7`, `"recall_threshold":0.25`, `"max_sequence_length":4`} {
		if !strings.Contains(string(in.Genes), want) {
			t.Fatalf("third: genes %s lack %s", in.Genes, want)
		}
	}
}

func TestConfigFileErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct{ name, text, args, want string }{
		{"unknown.yaml", "instances:\n  - id: a\n    max-predicton: 3\n", "--id a", "instances[0].max-predicton: unknown key"},
		{"badvalue.json", `{"port": "eighty"}`, "", `port: invalid value "eighty"`},
		{"noentry.yaml", "instances:\n  - id: a\n", "--id b", `no instance with id "b" (have a)`},
		{"badyaml.yaml", "defaults: [1, 2\n", "", "not YAML or JSON"},
		{"extra.yaml", "defaults: {}\nnodes: []\n", "", "nodes: unknown key in a cluster file"},
		{"duration.yaml", "ttl: 10\n", "", `ttl: invalid value "10": use a duration with a unit, such as 10s`},
		{"alias.yaml", "max_predictions: 3\nmax-predictions: 4\n", "", "max-predictions and max_predictions set the same flag --max-predictions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"run", "--config", writeFile(t, tc.name, tc.text), "--endpoints", "127.0.0.1:1"}
			if tc.args != "" {
				args = append(args, strings.Fields(tc.args)...)
			}
			p := startKatonode(t, args...)
			if code := p.wait(t, 20*time.Second); code != 1 {
				t.Fatalf("exit %d, want 1:\n%s", code, p.out.String())
			}
			if !strings.Contains(p.out.String(), tc.want) {
				t.Fatalf("error does not say %q:\n%s", tc.want, p.out.String())
			}
		})
	}
}
