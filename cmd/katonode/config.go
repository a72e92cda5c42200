package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/urfave/cli/v2"
	"sigs.k8s.io/yaml"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
)

// applyConfigFile sets every flag the user did not set (on the command line
// or in the environment) from --config. A cluster file holds defaults: and
// instances: (a list of entries with an id); the entry of --id goes over the
// defaults. Unknown keys and bad values are errors naming the key's path.
func applyConfigFile(c *cli.Context, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--config: %w", err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return fmt.Errorf("--config %s: not YAML or JSON: %w", path, err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js, &doc); err != nil {
		return fmt.Errorf("--config %s: the top level must be a mapping of keys: %w", path, err)
	}
	var entries []cfgEntry
	_, hasDefaults := doc["defaults"]
	_, hasInstances := doc["instances"]
	if hasDefaults || hasInstances {
		for k := range doc {
			if k != "defaults" && k != "instances" {
				return fmt.Errorf("--config %s: %s: unknown key in a cluster file (want defaults: and instances:)", path, k)
			}
		}
		if d, ok := doc["defaults"]; ok {
			m, ok := d.(map[string]any)
			if !ok {
				return fmt.Errorf("--config %s: defaults: must be a mapping", path)
			}
			entries = append(entries, cfgEntry{"defaults", m})
		}
		id := c.String("id")
		list, ok := doc["instances"].([]any)
		if hasInstances && !ok {
			return fmt.Errorf("--config %s: instances: must be a list", path)
		}
		found := false
		var ids []string
		for i, e := range list {
			m, ok := e.(map[string]any)
			if !ok {
				return fmt.Errorf("--config %s: instances[%d]: must be a mapping", path, i)
			}
			eid, _ := m["id"].(string)
			if eid == "" {
				return fmt.Errorf("--config %s: instances[%d].id: missing", path, i)
			}
			ids = append(ids, eid)
			if eid == id {
				found = true
				entries = append(entries, cfgEntry{fmt.Sprintf("instances[%d]", i), m})
			}
		}
		if !found && len(list) > 0 {
			if id == "" {
				return fmt.Errorf("--config %s is a cluster file: pick an entry with --id (one of %s)", path, strings.Join(ids, ", "))
			}
			return fmt.Errorf("--config %s: no instance with id %q (have %s)", path, id, strings.Join(ids, ", "))
		}
	} else {
		entries = append(entries, cfgEntry{"", doc})
	}

	flags := map[string]cli.Flag{}
	for _, f := range c.Command.Flags {
		for _, n := range f.Names() {
			flags[n] = f
		}
	}
	set := map[string]string{}   // later entries (the instance) override earlier ones (defaults)
	setAt := map[string]string{} // where each key was set, for error messages
	for _, e := range entries {
		keys := make([]string, 0, len(e.keys))
		for k := range e.keys {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		here := map[string]string{} // flag -> key of this entry that set it
		for _, k := range keys {
			where := k
			if e.path != "" {
				where = e.path + "." + k
			}
			if k == "config" || k == "embedded-etcd" {
				return fmt.Errorf("--config %s: %s: not allowed in a config file", path, where)
			}
			name := k
			if alias, ok := geneAliases[k]; ok {
				name = alias
			}
			if _, ok := flags[name]; !ok {
				return fmt.Errorf("--config %s: %s: unknown key", path, where)
			}
			v, err := flagValue(e.keys[k])
			if err != nil {
				return fmt.Errorf("--config %s: %s: %v", path, where, err)
			}
			if at, dup := here[name]; dup {
				return fmt.Errorf("--config %s: %s and %s set the same flag --%s", path, at, where, name)
			}
			here[name] = where
			set[name] = v
			setAt[name] = where
		}
	}
	for k, v := range set {
		if c.IsSet(k) {
			continue // flags and environment override the file
		}
		if err := c.Set(k, v); err != nil {
			return fmt.Errorf("--config %s: %s: invalid value %q: %s", path, setAt[k], v, cliutil.ValueHint(flags[k], k))
		}
	}
	return nil
}

// cfgEntry is one mapping of a config file and its path in the file.
type cfgEntry struct {
	path string
	keys map[string]any
}

// flagValue renders a config value as flag text.
func flagValue(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case bool:
		return fmt.Sprint(x), nil
	case float64:
		if x == float64(int64(x)) {
			return fmt.Sprint(int64(x)), nil
		}
		return fmt.Sprint(x), nil
	case []any:
		parts := make([]string, len(x))
		for i, e := range x {
			s, err := flagValue(e)
			if err != nil {
				return "", err
			}
			parts[i] = s
		}
		return strings.Join(parts, ","), nil
	case nil:
		return "", fmt.Errorf("empty value")
	}
	return "", fmt.Errorf("want a string, number, boolean or list, got %T", v)
}
