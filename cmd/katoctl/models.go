package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// Record kinds of the export format, and the keys (relative to
// models/<model>/) they live under.
const (
	kindPattern = "pattern"
	kindVector  = "vector"
	kindMeta    = "meta"

	patternsDir = "patterns/"
	vectorsDir  = "vectors/"
	metaKey     = "meta"
)

// Limits of one import transaction: etcd refuses more than 128 operations
// (--max-txn-ops) or 1.5 MiB (--max-request-bytes) by default.
const (
	importTxnOps   = 100
	importTxnBytes = 1 << 20
)

// modelsCommand is `katoctl models ls|export|import|rm`.
func modelsCommand() *cli.Command {
	progressFlag := func() cli.Flag {
		return &cli.IntFlag{Name: "progress", Value: 10000, Usage: "report progress on standard error every N records (0: only the summary)"}
	}
	force := func(usage string) cli.Flag { return &cli.BoolFlag{Name: "force", Usage: usage} }
	return &cli.Command{
		Name:    "models",
		Aliases: []string{"model"},
		Usage:   "list, export, import and remove models (knowledge bases kept in etcd)",
		Subcommands: []*cli.Command{
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list the models: patterns, vectors, size, lock holder",
				Description: "One row per model found under models/, and per model that only has a lock.\n" +
					"SIZE is the bytes of the model's keys (with --prefix) and values. HOLDER is\n" +
					"id@host of the lock holder and FENCE its fencing revision; - when unlocked.",
				Action: func(c *cli.Context) error {
					if c.NArg() != 0 {
						return fmt.Errorf("models ls takes no arguments, got %d", c.NArg())
					}
					return withEtcd(c, func(e env) error { return modelsList(c, e) })
				},
			},
			{
				Name:      "export",
				Usage:     "write a model as JSON lines on standard output",
				ArgsUsage: "MODEL",
				Description: "Writes one line per record, {\"kind\":\"pattern\"|\"vector\"|\"meta\",\"key\":\"patterns/<hash>\",\n" +
					"\"value\":<the stored JSON>}, all read at one etcd revision (a running node may go on\n" +
					"learning: the export is the model as it was at that revision). Progress and the\n" +
					"summary (\"exported N patterns, M vectors of MODEL at revision R\") go to standard error.\n" +
					"Keys that are neither patterns, vectors nor meta are skipped with a warning.",
				Flags: []cli.Flag{
					progressFlag(),
					&cli.DurationFlag{Name: "timeout", Usage: "give up after this long (0: no limit)"},
				},
				Action: onModel(modelsExport),
			},
			{
				Name:      "import",
				Usage:     "write a model from JSON lines (as export writes them) read from standard input or FILE",
				ArgsUsage: "MODEL [FILE|-]",
				Description: "The input is what models export writes: one {\"kind\",\"key\",\"value\"} record per line.\n" +
					"Every line is checked before anything is written: it must decode, its kind must\n" +
					"match its key, a pattern's name must be its key and the hash of its events, a\n" +
					"vector's name must be its key and the hash of its values, and the records together\n" +
					"must load as a model. The first bad line is reported by number and nothing is written.\n" +
					"\n" +
					"A model whose lock is held is refused: the running node would not see the import\n" +
					"(stop it first, katoctl stop ID). --force breaks the holder's lock instead; the\n" +
					"holder's later writes then fail and it loads the model again when it gets the lock\n" +
					"back (refused when other nodes wait for the lock: they, not katoctl, would get it).\n" +
					"A model that already has keys is refused unless --replace, which deletes them\n" +
					"first. katoctl takes the model lock itself (holder katoctl-import) and writes in\n" +
					"transactions of at most 100 records fenced by it, so no node can take the model\n" +
					"half-way. The import is not one transaction: if it fails half-way, run it again with\n" +
					"--replace. Progress goes to standard error.",
				Flags: []cli.Flag{
					progressFlag(),
					&cli.BoolFlag{Name: "replace", Usage: "delete the model's keys before importing"},
					force("break the lock of the model's holder (a running node) and import anyway"),
				},
				Action: func(c *cli.Context) error {
					if c.NArg() < 1 || c.NArg() > 2 {
						return fmt.Errorf("models import takes a model name and optionally a file, got %d arguments", c.NArg())
					}
					model := c.Args().First()
					if err := checkModel(model); err != nil {
						return err
					}
					return withEtcd(c, func(e env) error { return modelsImport(c, e, model, c.Args().Get(1)) })
				},
			},
			{
				Name:      "rm",
				Aliases:   []string{"remove"},
				Usage:     "delete a model's keys",
				ArgsUsage: "MODEL",
				Description: "Refused while the model is locked (the error names the holder): stop the node\n" +
					"first. --force breaks the holder's lock instead, and the node then runs on an empty\n" +
					"model when it takes the lock again (refused when other nodes wait for the lock).\n" +
					"katoctl takes the model lock itself (holder katoctl-rm) and deletes models/MODEL/\n" +
					"in one transaction fenced by it.",
				Flags:  []cli.Flag{force("break the lock of the model's holder (a running node) and remove anyway")},
				Action: onModel(modelsRemove),
			},
		},
	}
}

func checkModel(model string) error {
	if err := coord.CheckID(model); err != nil {
		return fmt.Errorf("model name: %w", err)
	}
	return nil
}

// onModel is the action of a command that takes one model name.
func onModel(fn func(*cli.Context, env, string) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() != 1 {
			return fmt.Errorf("%s takes one model name, got %d arguments", c.Command.FullName(), c.NArg())
		}
		model := c.Args().First()
		if err := checkModel(model); err != nil {
			return err
		}
		return withEtcd(c, func(e env) error { return fn(c, e, model) })
	}
}

// modelSummary is one model as `models ls` shows it.
type modelSummary struct {
	Model     string `json:"model"`
	Patterns  int    `json:"patterns"`
	Vectors   int    `json:"vectors"`
	Other     int    `json:"other_keys"` // meta and anything else under models/<model>/
	SizeBytes int64  `json:"size_bytes"`
	// Holder is the lock holder, nil when the model is not locked.
	Holder  *coord.LockEntry `json:"holder,omitempty"`
	Waiters int              `json:"waiters"`
}

func modelsList(c *cli.Context, e env) error {
	root, err := coord.NormalizePrefix(c.String("prefix"))
	if err != nil {
		return err
	}
	byModel := map[string]*modelSummary{}
	get := func(model string) *modelSummary {
		m := byModel[model]
		if m == nil {
			m = &modelSummary{Model: model}
			byModel[model] = m
		}
		return m
	}
	pfx := coord.ModelsPrefix()
	end := clientv3.GetPrefixRangeEnd(pfx)
	key, rev := pfx, int64(0)
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000)}
		if rev > 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		ctx, cancel := cliutil.CommandContext(c)
		resp, err := e.cli.Get(ctx, key, opts...)
		cancel()
		if err != nil {
			return fmt.Errorf("models ls: read %s: %w", key, err)
		}
		rev = resp.Header.Revision
		for _, kv := range resp.Kvs {
			model, rest, ok := strings.Cut(string(kv.Key[len(pfx):]), "/")
			if !ok {
				model, rest = string(kv.Key[len(pfx):]), ""
			}
			m := get(model)
			switch recordKind(rest) {
			case kindPattern:
				m.Patterns++
			case kindVector:
				m.Vectors++
			default:
				m.Other++
			}
			m.SizeBytes += int64(len(root) + len(kv.Key) + len(kv.Value))
		}
		if !resp.More || len(resp.Kvs) == 0 {
			break
		}
		key = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
	ctx, cancel := cliutil.CommandContext(c)
	locks, _, err := coord.ListLocks(ctx, e.cli.KV)
	cancel()
	if err != nil {
		return err
	}
	for _, l := range locks {
		m := get(l.Model)
		h := l.Holder
		m.Holder, m.Waiters = &h, len(l.Waiters)
	}
	list := make([]modelSummary, 0, len(byModel))
	for _, m := range byModel {
		list = append(list, *m)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Model < list[j].Model })
	t := cliutil.Table{Header: []string{"MODEL", "PATTERNS", "VECTORS", "SIZE", "HOLDER", "FENCE"}}
	for _, m := range list {
		holder, fence := "-", "-"
		if m.Holder != nil {
			holder, fence = holderName(*m.Holder), strconv.FormatInt(m.Holder.Rev, 10)
		}
		t.Rows = append(t.Rows, []string{m.Model, strconv.Itoa(m.Patterns), strconv.Itoa(m.Vectors),
			strconv.FormatInt(m.SizeBytes, 10), holder, fence})
	}
	return cliutil.Print(c, list, t)
}

// holderName is id@host of a lock holder, or its lock key for a holder that
// recorded no id (a plain etcd mutex).
func holderName(h coord.LockEntry) string {
	switch {
	case h.ID != "" && h.Host != "":
		return h.ID + "@" + h.Host
	case h.ID != "":
		return h.ID
	}
	return "lock key " + h.Key
}

// recordKind is the export kind of a key relative to models/<model>/, or ""
// for a key that is none of them.
func recordKind(key string) string {
	switch {
	case strings.HasPrefix(key, patternsDir) && len(key) > len(patternsDir):
		return kindPattern
	case strings.HasPrefix(key, vectorsDir) && len(key) > len(vectorsDir):
		return kindVector
	case key == metaKey:
		return kindMeta
	}
	return ""
}

// exportLine is one line of the export format.
type exportLine struct {
	Kind  string          `json:"kind"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// exportCounts counts records by kind.
type exportCounts struct {
	patterns, vectors, meta int
}

func (n *exportCounts) add(kind string) {
	switch kind {
	case kindPattern:
		n.patterns++
	case kindVector:
		n.vectors++
	case kindMeta:
		n.meta++
	}
}

func (n exportCounts) total() int { return n.patterns + n.vectors + n.meta }

func (n exportCounts) String() string {
	s := fmt.Sprintf("%d patterns, %d vectors", n.patterns, n.vectors)
	if n.meta > 0 {
		s += " and the meta record"
	}
	return s
}

// progress reports on standard error every `every` records.
type progress struct {
	w     io.Writer
	verb  string
	every int
	of    int // total, 0 when unknown
	last  int
}

func (p *progress) at(n int) {
	if p.every <= 0 || n/p.every == p.last/p.every {
		return
	}
	p.last = n
	if p.of > 0 {
		fmt.Fprintf(p.w, "katoctl: %s %d of %d records\n", p.verb, n, p.of)
		return
	}
	fmt.Fprintf(p.w, "katoctl: %s %d records\n", p.verb, n)
}

func modelsExport(c *cli.Context, e env, model string) error {
	ctx := c.Context
	if d := c.Duration("timeout"); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	out := bufio.NewWriterSize(c.App.Writer, 64<<10)
	prog := &progress{w: c.App.ErrWriter, verb: "exported", every: c.Int("progress")}
	var (
		n       exportCounts
		skipped []string
		line    bytes.Buffer
	)
	rev, err := kb.Load(ctx, e.cli.KV, e.lg, model, func(r kb.Record) error {
		kind := recordKind(r.Key)
		if kind == "" {
			skipped = append(skipped, r.Key)
			return nil
		}
		line.Reset()
		if err := appendExportLine(&line, kind, r.Key, r.Value); err != nil {
			return err
		}
		if _, err := out.Write(line.Bytes()); err != nil {
			return err
		}
		n.add(kind)
		prog.at(n.total())
		return nil
	}, nil)
	if ferr := out.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write standard output: %w", ferr)
	}
	if err != nil {
		return fmt.Errorf("models export %s: %w (after %d records; the output is incomplete)", model, err, n.total())
	}
	if len(skipped) > 0 {
		fmt.Fprintf(c.App.ErrWriter, "katoctl: warning: skipped %d keys of %s that are neither patterns, vectors nor meta (first: %s)\n",
			len(skipped), coord.ModelPrefix(model), skipped[0])
	}
	fmt.Fprintf(c.App.ErrWriter, "exported %s of %s at revision %d\n", n, model, rev)
	return nil
}

// appendExportLine writes {"kind":...,"key":...,"value":...} and a newline.
// The stored value is copied as it is (only whitespace between tokens is
// dropped, to keep it on one line), so an import stores the same bytes.
func appendExportLine(buf *bytes.Buffer, kind, key string, value []byte) error {
	k, err := json.Marshal(key)
	if err != nil {
		return err
	}
	buf.WriteString(`{"kind":"`)
	buf.WriteString(kind)
	buf.WriteString(`","key":`)
	buf.Write(k)
	buf.WriteString(`,"value":`)
	if err := json.Compact(buf, value); err != nil {
		return fmt.Errorf("record %s is not JSON: %w", key, err)
	}
	buf.WriteString("}\n")
	return nil
}

// importRecord is a checked line of an import.
type importRecord struct {
	line  int
	kind  string
	key   string
	value []byte
}

// readImport reads and checks every line of an import. Blank lines are
// skipped. The error names the first bad line.
func readImport(r io.Reader) ([]importRecord, exportCounts, error) {
	var (
		recs  []importRecord
		n     exportCounts
		seen  = map[string]int{}
		pats  []processor.PatternRecord
		vecs  []processor.VectorRecord
		lines = map[string]int{} // record name -> line, for the whole-model check
	)
	br := bufio.NewReaderSize(r, 64<<10)
	for no := 1; ; no++ {
		b, err := br.ReadBytes('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, n, fmt.Errorf("read line %d: %w", no, err)
		}
		if len(bytes.TrimSpace(b)) > 0 {
			rec, pat, vec, cerr := checkImportLine(b)
			if cerr != nil {
				return nil, n, fmt.Errorf("line %d: %w", no, cerr)
			}
			if first, dup := seen[rec.key]; dup {
				return nil, n, fmt.Errorf("line %d: key %s already given on line %d", no, rec.key, first)
			}
			seen[rec.key] = no
			rec.line = no
			recs = append(recs, rec)
			n.add(rec.kind)
			switch rec.kind {
			case kindPattern:
				pats = append(pats, pat)
				lines[pat.Name] = no
			case kindVector:
				vecs = append(vecs, vec)
				lines[vec.Name] = no
			}
		}
		if err != nil { // io.EOF
			break
		}
	}
	if err := checkLoadable(pats, vecs, lines); err != nil {
		return nil, n, err
	}
	return recs, n, nil
}

// checkImportLine decodes one line and checks that the record matches its
// key.
func checkImportLine(b []byte) (importRecord, processor.PatternRecord, processor.VectorRecord, error) {
	var (
		l   exportLine
		pat processor.PatternRecord
		vec processor.VectorRecord
	)
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return importRecord{}, pat, vec, fmt.Errorf("not a record line (want {\"kind\",\"key\",\"value\"}): %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return importRecord{}, pat, vec, errors.New("more than one JSON value on the line")
	}
	rec := importRecord{kind: l.Kind, key: l.Key, value: l.Value}
	if len(l.Value) == 0 || string(l.Value) == "null" {
		return rec, pat, vec, fmt.Errorf("record %s has no value", l.Key)
	}
	switch l.Kind {
	case kindPattern:
		name, ok := strings.CutPrefix(l.Key, patternsDir)
		if !ok {
			return rec, pat, vec, fmt.Errorf("pattern key %q does not start with %s", l.Key, patternsDir)
		}
		if err := pat.UnmarshalJSON(l.Value); err != nil {
			return rec, pat, vec, fmt.Errorf("pattern %s: %w", l.Key, err)
		}
		if pat.Name != name {
			return rec, pat, vec, fmt.Errorf("key %s holds pattern %q", l.Key, pat.Name)
		}
		if h := processor.ModelName(pat.Events); h != pat.Name {
			return rec, pat, vec, fmt.Errorf("pattern %s: its events hash to %s", pat.Name, h)
		}
	case kindVector:
		hash, ok := strings.CutPrefix(l.Key, vectorsDir)
		if !ok {
			return rec, pat, vec, fmt.Errorf("vector key %q does not start with %s", l.Key, vectorsDir)
		}
		if err := vec.UnmarshalJSON(l.Value); err != nil {
			return rec, pat, vec, fmt.Errorf("vector %s: %w", l.Key, err)
		}
		if vec.Name != processor.VectorPrefix+hash {
			return rec, pat, vec, fmt.Errorf("key %s holds vector %q", l.Key, vec.Name)
		}
		if h := processor.VectorName(vec.Vector); h != vec.Name {
			return rec, pat, vec, fmt.Errorf("vector %s: its values hash to %s", vec.Name, h)
		}
	case kindMeta:
		if l.Key != metaKey {
			return rec, pat, vec, fmt.Errorf("meta record key %q, want %q", l.Key, metaKey)
		}
		if l.Value[0] != '{' {
			return rec, pat, vec, errors.New("meta record value is not a JSON object")
		}
	default:
		return rec, pat, vec, fmt.Errorf("kind %q: want %s, %s or %s", l.Kind, kindPattern, kindVector, kindMeta)
	}
	return rec, pat, vec, nil
}

// checkLoadable loads the records the way a node does, so that an import
// never leaves a model the node refuses. On failure it finds the first
// record that fails on its own, to name its line.
func checkLoadable(pats []processor.PatternRecord, vecs []processor.VectorRecord, lines map[string]int) error {
	cfg := processor.DefaultConfig()
	load := func(ps []processor.PatternRecord, vs []processor.VectorRecord) error {
		_, err := processor.Load(cfg, "katoctl-import", "katoctl import", ps, vs)
		return err
	}
	err := load(pats, vecs)
	if err == nil {
		return nil
	}
	for _, p := range pats {
		if perr := load([]processor.PatternRecord{p}, nil); perr != nil {
			return fmt.Errorf("line %d: %w", lines[p.Name], perr)
		}
	}
	for _, v := range vecs {
		if verr := load(nil, []processor.VectorRecord{v}); verr != nil {
			return fmt.Errorf("line %d: %w", lines[v.Name], verr)
		}
	}
	return fmt.Errorf("the records do not load as a model: %w", err)
}

func modelsImport(c *cli.Context, e env, model, file string) error {
	in := c.App.Reader
	name := "standard input"
	if file != "" && file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return fmt.Errorf("models import %s: %w", model, err)
		}
		defer f.Close()
		in, name = f, file
	}
	recs, n, err := readImport(in)
	if err != nil {
		return fmt.Errorf("models import %s: %s: %w; nothing written", model, name, err)
	}
	if len(recs) == 0 {
		return fmt.Errorf("models import %s: %s holds no records; nothing written", model, name)
	}
	lock, release, err := lockForWrite(c, e, model, "katoctl-import", "import")
	if err != nil {
		return fmt.Errorf("models import %s: %w; nothing written", model, err)
	}
	defer release()
	pfx := coord.ModelPrefix(model)

	ctx, cancel := cliutil.CommandContext(c)
	resp, err := e.cli.Get(ctx, pfx, clientv3.WithPrefix(), clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return fmt.Errorf("models import %s: %w; nothing written", model, err)
	}
	if resp.Count > 0 {
		if !c.Bool("replace") {
			return fmt.Errorf("models import %s: the model already has %d keys; --replace deletes them first (or katoctl models rm %s); nothing written",
				model, resp.Count, model)
		}
		ctx, cancel := cliutil.CommandContext(c)
		dresp, err := lock.Txn(ctx).Then(clientv3.OpDelete(pfx, clientv3.WithPrefix())).Commit()
		cancel()
		if err != nil {
			return fmt.Errorf("models import %s: delete the old keys: %w; nothing written", model, err)
		}
		fmt.Fprintf(c.App.ErrWriter, "katoctl: deleted the %d keys model %s had\n", dresp.Responses[0].GetResponseDeleteRange().Deleted, model)
	}

	prog := &progress{w: c.App.ErrWriter, verb: "imported", every: c.Int("progress"), of: len(recs)}
	var written int
	var rev int64
	for written < len(recs) {
		var ops []clientv3.Op
		size := 0
		for i := written; i < len(recs) && len(ops) < importTxnOps; i++ {
			r := recs[i]
			sz := len(pfx) + len(r.key) + len(r.value)
			if len(ops) > 0 && size+sz > importTxnBytes {
				break
			}
			size += sz
			ops = append(ops, clientv3.OpPut(pfx+r.key, string(r.value)))
		}
		ctx, cancel := cliutil.CommandContext(c)
		resp, err := lock.Txn(ctx).Then(ops...).Commit()
		cancel()
		if err != nil {
			if errors.Is(err, rpctypes.ErrRequestTooLarge) {
				err = fmt.Errorf("%w (the record on line %d is too large for one etcd request)", err, recs[written].line)
			}
			return fmt.Errorf("models import %s: wrote %d of %d records, then: %w; the model is partly imported: run the import again with --replace",
				model, written, len(recs), err)
		}
		written += len(ops)
		rev = resp.Header.Revision
		prog.at(written)
	}
	fmt.Fprintf(c.App.Writer, "imported %s into %s at revision %d\n", n, model, rev)
	return nil
}

func modelsRemove(c *cli.Context, e env, model string) error {
	lock, release, err := lockForWrite(c, e, model, "katoctl-rm", "removal")
	if err != nil {
		return fmt.Errorf("models rm %s: %w; nothing removed", model, err)
	}
	defer release()
	fence, _ := lock.Fence()
	ctx, cancel := cliutil.CommandContext(c)
	defer cancel()
	resp, err := lock.Txn(ctx).Then(clientv3.OpDelete(coord.ModelPrefix(model), clientv3.WithPrefix())).Commit()
	if err != nil {
		return fmt.Errorf("models rm %s: %w", model, err)
	}
	deleted := resp.Responses[0].GetResponseDeleteRange().Deleted
	if deleted == 0 {
		return fmt.Errorf("models rm %s: %w: no keys under %s", model, coord.ErrNotFound, coord.ModelPrefix(model))
	}
	fmt.Fprintf(c.App.Writer, "removed %d keys of model %s (fence %d)\n", deleted, model, fence.Rev)
	return nil
}

// lockForWrite takes the model lock for katoctl's own fenced writes, under a
// session of its own. A model locked by someone else is refused, naming the
// holder, unless --force: then the holder's lock is broken first. what names
// the operation in errors. release unlocks and ends the session.
func lockForWrite(c *cli.Context, e env, model, holder, what string) (*coord.ModelLock, func(), error) {
	ctx, cancel := cliutil.CommandContext(c)
	defer cancel()
	st, _, err := coord.GetLock(ctx, e.cli.KV, model)
	forced := false
	switch {
	case errors.Is(err, coord.ErrNotLocked):
	case err != nil:
		return nil, nil, err
	case !c.Bool("force"):
		return nil, nil, lockedError(ctx, e, model, st.Holder, what)
	case len(st.Waiters) > 0:
		// Breaking the lock would hand the model to the next waiter, not to us.
		return nil, nil, fmt.Errorf("%w: model %s is held by %s (fence %d) and %d more wait for it (first: %s): --force would hand the model to them; stop the nodes of model %s first",
			coord.ErrLocked, model, holderName(st.Holder), st.Holder.Rev, len(st.Waiters), holderName(st.Waiters[0]), model)
	default:
		// BreakLock removes st.Holder or nothing (it fails if the lock changed hands).
		if _, err := coord.BreakLock(ctx, e.cli.KV, model); err != nil {
			return nil, nil, err
		}
		forced = true
		fmt.Fprintf(c.App.ErrWriter, "katoctl: broke the lock of %s on model %s (fence %d)\n", holderName(st.Holder), model, st.Holder.Rev)
	}
	s, err := coord.NewSession(ctx, e.cli, e.lg, coord.WithTTL(10*time.Second))
	if err != nil {
		return nil, nil, err
	}
	closeSession := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Close(ctx)
	}
	lock := coord.NewModelLock(s, model, coord.WithHolder(holder, coord.Hostname()), coord.WithLockLogger(e.lg))
	if _, err := lock.TryLock(ctx); err != nil {
		closeSession()
		if forced && errors.Is(err, coord.ErrLocked) {
			return nil, nil, fmt.Errorf("%w (a node took the lock first: stop the nodes of model %s and try again)", err, model)
		}
		return nil, nil, err
	}
	release := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := lock.Unlock(ctx); err != nil {
			fmt.Fprintf(c.App.ErrWriter, "katoctl: warning: release the lock of model %s: %v\n", model, err)
		}
		closeSession()
	}
	return lock, release, nil
}

// lockedError explains why a locked model is refused, and what to do.
func lockedError(ctx context.Context, e env, model string, h coord.LockEntry, what string) error {
	lease, perr := strconv.ParseInt(h.Lease, 16, 64)
	live := false
	if perr == nil && lease != 0 {
		resp, err := e.cli.TimeToLive(ctx, clientv3.LeaseID(lease))
		live = err != nil || resp.TTL >= 0 // unknown counts as live
	}
	if !live {
		return fmt.Errorf("%w: model %s: lock key %s has no live lease (a stale key: katoctl cleanup removes it), or give --force",
			coord.ErrLocked, model, h.Key)
	}
	stop := "stop it first"
	if h.ID != "" {
		stop = "stop it first (katoctl stop " + h.ID + ")"
	}
	return fmt.Errorf("%w: model %s is held by %s (fence %d): a running node would not see the %s; %s, or give --force to break its lock",
		coord.ErrLocked, model, holderName(h), h.Rev, what, stop)
}
