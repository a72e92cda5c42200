package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

const (
	catGenes  = "genes"
	catConfig = "config"
)

func env(name string) []string { return []string{"KATO_" + name} }

// nodeFlags are the instance flags of katonode run (DESIGN.md §7).
func nodeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "config", Category: catConfig, EnvVars: env("CONFIG"), TakesFile: true,
			Usage: "YAML or JSON file with the same keys as the flags; a cluster file has defaults: and instances:, and --id picks the entry"},
		&cli.StringFlag{Name: "id", Category: catNode, EnvVars: env("ID"),
			Usage: "instance id [A-Za-z0-9_-]{1,64} (other input is sanitized; default: from host, time and pid)"},
		&cli.StringFlag{Name: "name", Category: catNode, EnvVars: env("NAME"), Usage: "instance name (default: the id)"},
		&cli.StringFlag{Name: "model", Category: catNode, EnvVars: env("MODEL"), Usage: "model (knowledge base) name (default: the id)"},
		&cli.IntFlag{Name: "port", Category: catNode, EnvVars: env("PORT"), Value: 8000,
			Usage: "HTTP port; when taken, the next free one is used (0 = any)"},
		&cli.StringFlag{Name: "listen-host", Category: catNode, EnvVars: env("LISTEN_HOST"), Usage: "address to bind (default all interfaces)"},
		&cli.StringFlag{Name: "advertise-host", Category: catNode, EnvVars: env("ADVERTISE_HOST"),
			Usage: "host name or address other hosts reach this node by (default: the host name)"},
		&cli.DurationFlag{Name: "ttl", Category: catNode, EnvVars: env("TTL"), Value: 10 * time.Second,
			Usage: "session lease TTL: a dead node disappears after this long"},
		&cli.DurationFlag{Name: "lock-timeout", Category: catNode, EnvVars: env("LOCK_TIMEOUT"),
			Usage: "give up waiting for the model lock after this long (0 = wait forever)"},
		&cli.DurationFlag{Name: "drain-timeout", Category: catNode, EnvVars: env("DRAIN_TIMEOUT"), Value: 10 * time.Second,
			Usage: "on stop, how long in-flight requests may take"},
		&cli.StringFlag{Name: "api-token", Category: catNode, EnvVars: env("API_TOKEN"),
			Usage: "require this bearer token on the API (not on /healthz, /readyz, /metrics)"},
		&cli.Int64Flag{Name: "max-body-bytes", Category: catNode, EnvVars: env("MAX_BODY_BYTES"), Value: 4 << 20,
			Usage: "largest request body accepted"},
		&cli.DurationFlag{Name: "read-timeout", Category: catNode, EnvVars: env("READ_TIMEOUT"), Value: 30 * time.Second,
			Usage: "longest a client may take to send a request, body included"},
		&cli.DurationFlag{Name: "idle-timeout", Category: catNode, EnvVars: env("IDLE_TIMEOUT"), Value: 60 * time.Second,
			Usage: "close a keep-alive connection idle this long"},
		&cli.IntFlag{Name: "max-conns", Category: catNode, EnvVars: env("MAX_CONNS"), Value: 4096,
			Usage: "most connections served at once"},
		&cli.StringFlag{Name: "tls-cert", Category: catNode, EnvVars: env("TLS_CERT"), TakesFile: true,
			Usage: "serve the API over HTTPS with this certificate (PEM; with --tls-key)"},
		&cli.StringFlag{Name: "tls-key", Category: catNode, EnvVars: env("TLS_KEY"), TakesFile: true,
			Usage: "private key of --tls-cert (PEM)"},
		&cli.StringFlag{Name: "tls-ca", Category: catNode, EnvVars: env("TLS_CA"), TakesFile: true,
			Usage: "verify other nodes' HTTPS certificates with this CA bundle when forwarding (default: the system's)"},
		&cli.IntFlag{Name: "checkpoint-entries", Category: catNode, EnvVars: env("CHECKPOINT_ENTRIES"), Value: kb.DefaultPolicy().MinEntries,
			Usage: "fold the model's log into a new snapshot once it holds this many entries (and a quarter of the snapshot's records)"},
		&cli.Int64Flag{Name: "checkpoint-bytes", Category: catNode, EnvVars: env("CHECKPOINT_BYTES"), Value: kb.DefaultPolicy().MinBytes,
			Usage: "... or this many bytes (and half the snapshot's size)"},
		// For crash tests: the node kills itself (SIGKILL) when its
		// checkpoint reaches this step (node.CheckpointSteps).
		&cli.StringFlag{Name: "test-crash-at", Hidden: true},
	}
}

// geneFlags are the processor genes; defaults are processor.DefaultConfig.
func geneFlags() []cli.Flag {
	d := processor.DefaultConfig()
	return []cli.Flag{
		&cli.IntFlag{Name: "max-predictions", Category: catGenes, EnvVars: env("MAX_PREDICTIONS"), Value: d.MaxPredictions,
			Usage: "how many predictions to keep"},
		&cli.Float64Flag{Name: "recall-threshold", Category: catGenes, EnvVars: env("RECALL_THRESHOLD"), Value: d.RecallThreshold,
			Usage: "lowest similarity a model needs to become a prediction, in [0, 1]"},
		&cli.IntFlag{Name: "max-seq-length", Category: catGenes, EnvVars: env("MAX_SEQ_LENGTH"), Value: d.MaxSequenceLength,
			Usage: "auto-learn when the short-term memory holds this many events (0 = off)"},
		&cli.IntFlag{Name: "persistence", Category: catGenes, EnvVars: env("PERSISTENCE"), Value: d.Persistence,
			Usage: "length of a model's emotive window"},
		&cli.IntFlag{Name: "quiescence", Category: catGenes, EnvVars: env("QUIESCENCE"), Value: d.Quiescence, Usage: "stored only"},
		&cli.IntFlag{Name: "search-depth", Category: catGenes, EnvVars: env("SEARCH_DEPTH"), Value: d.SearchDepth, Usage: "stored only"},
		&cli.BoolFlag{Name: "sort", Category: catGenes, EnvVars: env("SORT"), Value: d.Sort, Usage: "sort the symbols of each event"},
		&cli.StringFlag{Name: "indexer-type", Category: catGenes, EnvVars: env("INDEXER_TYPE"), Value: d.IndexerType, Usage: "must be VI"},
	}
}

// geneAliases maps KATO's own gene names (PROCESSOR.md §2), which a config
// file may use, to the flag names.
var geneAliases = map[string]string{
	"max_predictions":     "max-predictions",
	"recall_threshold":    "recall-threshold",
	"max_sequence_length": "max-seq-length",
	"persistence":         "persistence",
	"quiescence":          "quiescence",
	"search_depth":        "search-depth",
	"sort":                "sort",
	"indexer_type":        "indexer-type",
}

func genesFrom(c *cli.Context) processor.Config {
	g := processor.DefaultConfig()
	g.MaxPredictions = c.Int("max-predictions")
	g.RecallThreshold = c.Float64("recall-threshold")
	g.MaxSequenceLength = c.Int("max-seq-length")
	g.Persistence = c.Int("persistence")
	g.Quiescence = c.Int("quiescence")
	g.SearchDepth = c.Int("search-depth")
	g.Sort = c.Bool("sort")
	g.IndexerType = c.String("indexer-type")
	return g
}
