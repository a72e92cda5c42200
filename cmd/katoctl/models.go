package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/cmd/internal/cliutil"
	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// maxImportLine bounds one line of an import: a record of at most
// kb.MaxRecordBytes, and its key and framing.
const maxImportLine = kb.MaxRecordBytes + 64<<10

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
					"PATTERNS and VECTORS count the model's records (its snapshot's and the new ones of its\n" +
					"log); LOG is the number of log entries (transactions of changes) written since the\n" +
					"snapshot, which the holder folds into a new snapshot in the background. SNAPSHOT is the stored (compressed) size of the\n" +
					"snapshot. HOLDER is id@host of the lock holder and FENCE its fencing revision; -\n" +
					"when unlocked. Nothing but the head, meta and count-only reads is read.",
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
				Description: "Writes one line per record, {\"kind\":\"pattern\"|\"vector\",\"key\":\"patterns/<hash>\",\n" +
					"\"value\":<the record as JSON>}, all read at one etcd revision (a running node may go\n" +
					"on learning: the export is the model as it was at that revision). The snapshot is\n" +
					"streamed, never held: memory is bounded by the model's log. Progress and the\n" +
					"summary (\"exported N patterns, M vectors of MODEL at revision R\") go to standard error.",
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
				Description: "The input is what models export writes: one {\"kind\",\"key\",\"value\"} record per line\n" +
					"(meta lines of older exports are skipped). Every line is checked as it is read: it\n" +
					"must decode, its kind must match its key, a pattern's name must be its key and the\n" +
					"hash of its events, a vector's name must be its key and the hash of its values, and\n" +
					"no name or learn sequence number may repeat. The records are written as they are\n" +
					"read into a new snapshot that nothing sees until the last line was read and checked;\n" +
					"then one transaction makes it the model. The first bad line is reported by number\n" +
					"and the model is left as it was. Memory stays bounded whatever the input's size.\n" +
					"\n" +
					"A model whose lock is held is refused: the running node would not see the import\n" +
					"(stop it first, katoctl stop ID). --force breaks the holder's lock instead; the\n" +
					"holder's later writes then fail and it loads the model again when it gets the lock\n" +
					"back (refused when other nodes wait for the lock: they, not katoctl, would get it).\n" +
					"A model that already has keys is refused unless --replace, which replaces them in\n" +
					"that last transaction. katoctl takes the model lock itself (holder katoctl-import)\n" +
					"and fences every write by it. Progress goes to standard error.",
				Flags: []cli.Flag{
					progressFlag(),
					&cli.BoolFlag{Name: "replace", Usage: "replace what the model holds"},
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
	Model    string `json:"model"`
	Patterns int64  `json:"patterns"`
	Vectors  int64  `json:"vectors"`
	// LogEntries counts the log entries written since the snapshot.
	LogEntries    int64 `json:"log_entries"`
	Keys          int64 `json:"keys"`
	SnapshotBytes int64 `json:"snapshot_bytes"`
	// Holder is the lock holder, nil when the model is not locked.
	Holder  *coord.LockEntry `json:"holder,omitempty"`
	Waiters int              `json:"waiters"`
}

func modelsList(c *cli.Context, e env) error {
	byModel := map[string]*modelSummary{}
	get := func(model string) *modelSummary {
		m := byModel[model]
		if m == nil {
			m = &modelSummary{Model: model}
			byModel[model] = m
		}
		return m
	}
	// The models: the first key of each, skipping the rest of it.
	pfx := coord.ModelsPrefix()
	end := clientv3.GetPrefixRangeEnd(pfx)
	for key := pfx; ; {
		ctx, cancel := cliutil.CommandContext(c)
		resp, err := e.cli.Get(ctx, key, clientv3.WithRange(end), clientv3.WithLimit(1), clientv3.WithKeysOnly())
		cancel()
		if err != nil {
			return fmt.Errorf("models ls: read %s: %w", key, err)
		}
		if len(resp.Kvs) == 0 {
			break
		}
		model, _, _ := strings.Cut(string(resp.Kvs[0].Key[len(pfx):]), "/")
		ctx, cancel = cliutil.CommandContext(c)
		sum, err := kb.Summarize(ctx, e.cli.KV, model, nil)
		cancel()
		if err != nil {
			return fmt.Errorf("models ls: %w", err)
		}
		m := get(model)
		m.Patterns, m.Vectors, m.LogEntries, m.Keys, m.SnapshotBytes = sum.Patterns, sum.Vectors, sum.LogEntries, sum.Keys, sum.SnapshotBytes
		key = clientv3.GetPrefixRangeEnd(coord.ModelPrefix(model))
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
	t := cliutil.Table{Header: []string{"MODEL", "PATTERNS", "VECTORS", "LOG", "SNAPSHOT", "HOLDER", "FENCE"}}
	for _, m := range list {
		holder, fence := "-", "-"
		if m.Holder != nil {
			holder, fence = holderName(*m.Holder), strconv.FormatInt(m.Holder.Rev, 10)
		}
		t.Rows = append(t.Rows, []string{m.Model, strconv.FormatInt(m.Patterns, 10), strconv.FormatInt(m.Vectors, 10),
			strconv.FormatInt(m.LogEntries, 10), strconv.FormatInt(m.SnapshotBytes, 10), holder, fence})
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
	var line []byte
	total := 0
	rev, n, err := kb.Export(ctx, e.cli.KV, e.lg, model, func(ch processor.Change) error {
		var err error
		if line, err = kb.AppendExportLine(line[:0], ch); err != nil {
			return err
		}
		if _, err := out.Write(line); err != nil {
			return err
		}
		total++
		prog.at(total)
		return nil
	})
	if ferr := out.Flush(); err == nil && ferr != nil {
		err = fmt.Errorf("write standard output: %w", ferr)
	}
	switch {
	case errors.Is(err, kb.ErrNotFound):
		return fmt.Errorf("models export: no model %q (katoctl models ls lists them)", model)
	case err != nil:
		return fmt.Errorf("models export %s: %w (after %d records; the output is incomplete)", model, err, total)
	}
	fmt.Fprintf(c.App.ErrWriter, "exported %s of %s at revision %d\n", n, model, rev)
	return nil
}

// readLine reads one line of at most max bytes (without its newline); it
// returns io.EOF after the last.
func readLine(br *bufio.Reader, max int, buf []byte) ([]byte, error) {
	buf = buf[:0]
	for {
		frag, err := br.ReadSlice('\n')
		buf = append(buf, frag...)
		if len(buf) > max {
			return nil, fmt.Errorf("line longer than %d bytes (a record is at most %d)", max, kb.MaxRecordBytes)
		}
		switch {
		case err == nil:
			return buf[:len(buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(buf) > 0:
			return buf, nil
		}
		return nil, err
	}
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
	if resp.Count > 0 && !c.Bool("replace") {
		return fmt.Errorf("models import %s: the model already has %d keys; --replace replaces them (or katoctl models rm %s); nothing written",
			model, resp.Count, model)
	}

	fence, _ := lock.Fence()
	meta := kb.Meta{V: coord.SchemaVersion, Model: model, Writer: "katoctl-import", Host: coord.Hostname(), Fence: fence.Rev}
	im := kb.NewImport(model, lock.Txn, meta.Encode)
	// abort leaves the model as it was. Every write of the import (its chunks)
	// also put the meta record; a model that had no keys gets none back, not
	// a lone meta record that would make it look like a model.
	abort := func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Context), 10*time.Second)
		defer cancel()
		if resp.Count == 0 {
			_, _ = lock.Txn(ctx).Then(clientv3.OpDelete(pfx, clientv3.WithPrefix())).Commit()
			return
		}
		im.Abort(ctx)
	}
	prog := &progress{w: c.App.ErrWriter, verb: "imported", every: c.Int("progress")}
	br := bufio.NewReaderSize(in, 64<<10)
	var buf []byte
	for no := 1; ; no++ {
		b, err := readLine(br, maxImportLine, buf)
		if errors.Is(err, io.EOF) {
			break
		}
		if err == nil && len(bytes.TrimSpace(b)) > 0 {
			var kind string
			var ch processor.Change
			if kind, ch, err = kb.ParseExportLine(b); err == nil && kind != kb.KindMeta {
				err = checkRecordSize(len(b), ch)
			}
			if err == nil && kind != kb.KindMeta {
				ctx, cancel := cliutil.CommandContext(c)
				err = im.Add(ctx, ch)
				cancel()
			}
		}
		if err != nil {
			abort()
			return fmt.Errorf("models import %s: %s: line %d: %w; the model is as it was", model, name, no, err)
		}
		buf = b[:0]
		prog.at(int(im.Counts().Total()))
	}
	n := im.Counts()
	if n.Total() == 0 {
		return fmt.Errorf("models import %s: %s holds no records; nothing written", model, name)
	}
	ctx, cancel = cliutil.CommandContext(c)
	defer cancel()
	h, err := im.Publish(ctx, "katoctl-import")
	if err != nil {
		abort()
		return fmt.Errorf("models import %s: %w; the model is as it was", model, err)
	}
	fmt.Fprintf(c.App.Writer, "imported %s into %s (snapshot %s, %d bytes in %d chunks)\n", n, model, h.Snapshot, h.Bytes, h.Chunks)
	return nil
}

// checkRecordSize refuses a record whose stored form (its JSON, as a node
// would write it) is larger than kb.MaxRecordBytes: a node never writes one,
// and one transaction may not hold it. Escaping makes JSON at most six times
// the bytes it escapes, so a line shorter than a sixth of the bound is not
// encoded again.
func checkRecordSize(lineBytes int, ch processor.Change) error {
	if lineBytes <= kb.MaxRecordBytes/6 {
		return nil
	}
	var b []byte
	var err error
	name := ch.Pattern.Name
	if ch.Kind == processor.PutVector {
		b, err = ch.Vector.MarshalJSON()
		name = ch.Vector.Name
	} else {
		b, err = ch.Pattern.MarshalJSON()
	}
	if err != nil {
		return err
	}
	if len(b) > kb.MaxRecordBytes {
		return fmt.Errorf("record %s is too large: %d bytes, a record is at most %d", name, len(b), kb.MaxRecordBytes)
	}
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
