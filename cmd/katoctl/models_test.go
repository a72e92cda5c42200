package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// modelEtcd starts etcd and returns a client under the default prefix and the
// global flags that reach it.
func modelEtcd(t *testing.T) (*clientv3.Client, []string) {
	t.Helper()
	c, flags := registered(t)
	return katoClient(t, c), flags
}

// testCtx is a bounded context for the test's own etcd calls.
func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// holdLock takes model's lock on a session of its own, recording holder
// id@host, and keeps it until the test ends (or it is broken).
func holdLock(t *testing.T, cli *clientv3.Client, model, id, host string) *coord.ModelLock {
	t.Helper()
	ctx := testCtx(t)
	l := coord.NewModelLock(testSession(t, ctx, cli, coord.WithTTL(30*time.Second)), model, coord.WithHolder(id, host))
	if _, err := l.TryLock(ctx); err != nil {
		t.Fatal(err)
	}
	return l
}

// lockModel takes model's lock on a session of its own, recording holder
// id@test; release unlocks it and ends the session.
func lockModel(t *testing.T, ctx context.Context, cli *clientv3.Client, model, id string) (l *coord.ModelLock, release func()) {
	t.Helper()
	s, err := coord.NewSession(ctx, cli, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	l = coord.NewModelLock(s, model, coord.WithHolder(id, "test"))
	if _, err := l.TryLock(ctx); err != nil {
		s.Close(context.Background())
		t.Fatal(err)
	}
	return l, func() {
		l.Unlock(context.Background())
		s.Close(context.Background())
	}
}

// testPattern is pattern i of a test model. Its symbols need JSON escapes
// and HTML-sensitive characters, to show that records travel byte for byte.
func testPattern(i int) processor.PatternRecord {
	events := [][]string{{fmt.Sprintf("sym-%d", i), `a<b&"c"`}, {"é\u2028", "x"}}
	return processor.PatternRecord{
		Name: processor.ModelName(events), Events: events, Length: 4, Frequency: int64(i%3 + 1),
		Emotives: []processor.Emotives{{{Name: "joy", Value: 0.1 * float64(i)}}}, Seq: uint64(i),
	}
}

func testVector(i int) processor.VectorRecord {
	v := processor.IntVector(int64(i), 2, 3)
	if i%2 == 1 {
		v = processor.FloatVector(float64(i)+0.5, -1e-9)
	}
	return processor.VectorRecord{Name: processor.VectorName(v), Vector: v, Seq: uint64(i)}
}

// seedModel writes patterns and vectors into model the way nodes before
// format version 1 did (one key per record, the layout still loaded):
// under the model lock, in fenced transactions.
func seedModel(t *testing.T, cli *clientv3.Client, model string, patterns, vectors int) {
	t.Helper()
	ctx := testCtx(t)
	l, release := lockModel(t, ctx, cli, model, "seeder")
	defer release()
	pfx := coord.ModelPrefix(model)
	var ops []clientv3.Op
	put := func(key string, v json.Marshaler) {
		b, err := v.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		ops = append(ops, clientv3.OpPut(pfx+key, string(b)))
		if len(ops) == 100 {
			if _, err := l.Txn(ctx).Then(ops...).Commit(); err != nil {
				t.Fatal(err)
			}
			ops = ops[:0]
		}
	}
	for i := range patterns {
		p := testPattern(i)
		put(patternKey(p), p)
	}
	for i := range vectors {
		v := testVector(i)
		put(vectorKey(v), v)
	}
	if len(ops) > 0 {
		if _, err := l.Txn(ctx).Then(ops...).Commit(); err != nil {
			t.Fatal(err)
		}
	}
}

// modelKeys reads every key of model, relative to models/<model>/.
func modelKeys(t *testing.T, cli *clientv3.Client, model string) map[string]string {
	t.Helper()
	resp, err := cli.Get(testCtx(t), coord.ModelPrefix(model), clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, kv := range resp.Kvs {
		out[strings.TrimPrefix(string(kv.Key), coord.ModelPrefix(model))] = string(kv.Value)
	}
	return out
}

// exportOf is model as an export (kb.Export), read directly from etcd; ""
// for a model with nothing stored.
func exportOf(t *testing.T, cli *clientv3.Client, model string) string {
	t.Helper()
	var out []byte
	_, _, err := kb.Export(testCtx(t), cli.KV, zap.NewNop(), model, func(ch processor.Change) error {
		var err error
		out, err = kb.AppendExportLine(out, ch)
		return err
	})
	if errors.Is(err, kb.ErrNotFound) {
		return ""
	}
	if err != nil {
		t.Fatalf("export %s: %v", model, err)
	}
	return string(out)
}

// summary is kb.Summarize of model.
func summary(t *testing.T, cli *clientv3.Client, model string) kb.Summary {
	t.Helper()
	s, err := kb.Summarize(testCtx(t), cli.KV, model, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// checkOneSnapshot fails unless model's snapshot chunks are exactly those of
// the snapshot its head names: no chunk of an aborted import is left.
func checkOneSnapshot(t *testing.T, cli *clientv3.Client, model string) {
	t.Helper()
	s := summary(t, cli, model)
	n := 0
	for k := range modelKeys(t, cli, model) {
		if !strings.HasPrefix(k, "snap/") {
			continue
		}
		if s.Head == nil || !strings.HasPrefix(k, "snap/"+s.Head.Snapshot+"/") {
			t.Fatalf("model %s holds chunk %s of no published snapshot (head %+v)", model, k, s.Head)
		}
		n++
	}
	if s.Head != nil && n != s.Head.Chunks {
		t.Fatalf("model %s holds %d chunks, its head names %d", model, n, s.Head.Chunks)
	}
}

// nopLoader reads a model and keeps nothing.
type nopLoader struct{}

func (nopLoader) Record(processor.Change) error   { return nil }
func (nopLoader) Built() error                    { return nil }
func (nopLoader) Changes(processor.Changes) error { return nil }

// learnLog appends changes to model's log the way a holder does: under the
// model lock, one fenced log entry per change, through a kb.Committer.
func learnLog(t *testing.T, cli *clientv3.Client, model string, changes ...processor.Change) {
	t.Helper()
	ctx := testCtx(t)
	l, release := lockModel(t, ctx, cli, model, "learner")
	defer release()
	st, err := kb.Load(ctx, cli.KV, zap.NewNop(), model, nopLoader{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	fence, _ := l.Fence()
	meta := kb.Meta{V: coord.SchemaVersion, Model: model, Writer: "learner", Host: "test", Fence: fence.Rev}
	com := kb.NewCommitter(model, l.Txn, zap.NewNop(), st.NextSeq, nil, kb.WithMeta(meta.Encode))
	runCtx, stop := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- com.Run(runCtx) }()
	defer func() { stop(); <-ran }()
	for _, ch := range changes {
		if err := com.Submit(ctx, ch); err != nil {
			t.Fatal(err)
		}
	}
}

func putPattern(p processor.PatternRecord) processor.Change {
	return processor.Change{Kind: processor.PutPattern, Pattern: p}
}

func putVector(v processor.VectorRecord) processor.Change {
	return processor.Change{Kind: processor.PutVector, Vector: v}
}

// importFile runs katoctl models import ARGS FILE, FILE holding input.
func importFile(t *testing.T, input string, args ...string) result {
	t.Helper()
	file := filepath.Join(t.TempDir(), "import.jsonl")
	if err := os.WriteFile(file, []byte(input), 0o600); err != nil {
		t.Fatal(err)
	}
	return katoctl(t, nil, append(args, file)...)
}

// waitLost waits until l's hold ends.
func waitLost(t *testing.T, l *coord.ModelLock) {
	t.Helper()
	select {
	case <-l.Lost():
	case <-time.After(15 * time.Second):
		t.Fatalf("the lock of %s was not lost", l.Model())
	}
}

// exportLine is a line of an export.
type exportLine struct {
	Kind  string          `json:"kind"`
	Key   string          `json:"key"`
	Value json.RawMessage `json:"value"`
}

// oldExportLine is a line as the export of the layout before format version
// 1 wrote it: the record's stored JSON under its old key.
func oldExportLine(t *testing.T, kind, key string, v json.Marshaler) string {
	t.Helper()
	b, err := v.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf(`{"kind":%q,"key":%q,"value":%s}`, kind, key, b)
}

// patternKey and vectorKey are a record's key relative to models/<model>/
// in the layout before format version 1.
func patternKey(p processor.PatternRecord) string { return "patterns/" + p.Name }
func vectorKey(v processor.VectorRecord) string {
	return "vectors/" + strings.TrimPrefix(v.Name, processor.VectorPrefix)
}

// oldPatternLine and oldVectorLine are a record's line in an export written
// before format version 1.
func oldPatternLine(t *testing.T, p processor.PatternRecord) string {
	return oldExportLine(t, "pattern", patternKey(p), p)
}
func oldVectorLine(t *testing.T, v processor.VectorRecord) string {
	return oldExportLine(t, "vector", vectorKey(v), v)
}

// oldExportLines are the lines of an export written before format version
// 1 of the first patterns test patterns and vectors test vectors.
func oldExportLines(t *testing.T, patterns, vectors int) []string {
	var lines []string
	for i := range patterns {
		lines = append(lines, oldPatternLine(t, testPattern(i)))
	}
	for i := range vectors {
		lines = append(lines, oldVectorLine(t, testVector(i)))
	}
	return lines
}

func TestModelsExportImportRoundTrip(t *testing.T) {
	cli, flags := modelEtcd(t)
	// src: a model in the old layout, then changed through the log the way a
	// node running on it does (new patterns, a pattern learned again, a vector).
	seedModel(t, cli, "src", 250, 5)
	relearned := testPattern(3)
	relearned.Frequency, relearned.Seq = 9, 300
	changes := []processor.Change{putPattern(relearned), putVector(testVector(5))}
	for i := 250; i < 260; i++ {
		changes = append(changes, putPattern(testPattern(i)))
	}
	learnLog(t, cli, "src", changes...)
	if s := summary(t, cli, "src"); s.Patterns != 260 || s.LogEntries != 12 {
		t.Fatalf("src summary %+v, want 260 patterns (250 in the old layout, 10 new in the log, one re-learned) and 12 log entries", s)
	}

	r := katoctl(t, nil, append(flags, "models", "export", "--progress", "100", "src")...)
	if r.code != 0 {
		t.Fatalf("export: exit %d: %s", r.code, r.stderr)
	}
	if want := exportOf(t, cli, "src"); r.stdout != want {
		t.Fatalf("katoctl export differs from kb.Export:\n%s\nwant\n%s", r.stdout, want)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 266 {
		t.Fatalf("export wrote %d lines, want 260 patterns and 6 vectors", len(lines))
	}
	for i, l := range lines {
		kind, ch, err := kb.ParseExportLine([]byte(l))
		if err != nil {
			t.Fatalf("line %d %q does not import: %v", i+1, l, err)
		}
		if kind == kb.KindPattern && ch.Pattern.Name == relearned.Name && (ch.Pattern.Frequency != 9 || ch.Pattern.Seq != 300) {
			t.Fatalf("pattern %s exported as stored before its log entry: %s", relearned.Name, l)
		}
	}
	for _, want := range []string{"exported 100 records", "exported 200 records", "exported 260 patterns, 6 vectors of src at revision "} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("export stderr lacks %q:\n%s", want, r.stderr)
		}
	}
	export := r.stdout

	// From standard input.
	cmd := katoctlCmd(t, nil, append(flags, "models", "import", "--progress", "100", "copy")...)
	cmd.Stdin = strings.NewReader(export)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("import: %v: %s", err, stderr.String())
	}
	if !strings.Contains(string(out), "imported 260 patterns, 6 vectors into copy (snapshot ") || !strings.Contains(stderr.String(), "imported 200 records") {
		t.Fatalf("import output: %q / %q", out, stderr.String())
	}
	if got := exportOf(t, cli, "copy"); got != export {
		t.Fatalf("copy differs from src:\n%s\nwant\n%s", got, export)
	}
	if s := summary(t, cli, "copy"); s.Head == nil || s.Patterns != 260 || s.Vectors != 6 || s.LogEntries != 0 || s.Meta.Writer != "katoctl-import" {
		t.Fatalf("copy summary %+v", s)
	}
	checkOneSnapshot(t, cli, "copy")
	// The lock katoctl took for the import is released.
	if _, _, err := coord.GetLock(testCtx(t), cli, "copy"); !errors.Is(err, coord.ErrNotLocked) {
		t.Fatalf("copy still locked after the import: %v", err)
	}

	// Into a model that has keys: refused without --replace.
	keys := len(modelKeys(t, cli, "copy"))
	r = importFile(t, export, append(flags, "models", "import", "copy")...)
	if r.code != 1 || !strings.Contains(r.stderr, fmt.Sprintf("already has %d keys", keys)) || !strings.Contains(r.stderr, "--replace") {
		t.Fatalf("import over a model: exit %d, stderr %q", r.code, r.stderr)
	}
	// --replace with a part: only that part is left.
	part := strings.Join(strings.SplitAfter(export, "\n")[:10], "")
	r = importFile(t, part, append(flags, "models", "import", "--replace", "copy")...)
	if r.code != 0 || exportOf(t, cli, "copy") != part {
		t.Fatalf("import --replace: exit %d, stderr %q, model now\n%s", r.code, r.stderr, exportOf(t, cli, "copy"))
	}
	checkOneSnapshot(t, cli, "copy")
	// --replace back to the whole model.
	r = importFile(t, export, append(flags, "models", "import", "--replace", "copy")...)
	if r.code != 0 || exportOf(t, cli, "copy") != export {
		t.Fatalf("import --replace: exit %d, stderr %q", r.code, r.stderr)
	}
	// --replace over a model in the old layout with a log: the old keys and
	// the log go in the same transaction.
	r = importFile(t, part, append(flags, "models", "import", "--replace", "src")...)
	if r.code != 0 || exportOf(t, cli, "src") != part {
		t.Fatalf("import --replace over the old layout: exit %d, stderr %q", r.code, r.stderr)
	}
	for k := range modelKeys(t, cli, "src") {
		if k != kb.HeadKey && k != kb.MetaKey && !strings.HasPrefix(k, "snap/") {
			t.Fatalf("import --replace left %s", k)
		}
	}
	checkOneSnapshot(t, cli, "src")
}

// An export written before format version 1 (records as the old layout
// stored them, a meta line first) still imports, record for record.
func TestModelsImportOldExport(t *testing.T) {
	cli, flags := modelEtcd(t)
	lines := append([]string{`{"kind":"meta","key":"meta","value":{"v":1,"model":"old","writer":"node-a","fence":42}}`},
		oldExportLines(t, 30, 4)...)
	r := importFile(t, strings.Join(lines, "\n")+"\n", append(flags, "models", "import", "old")...)
	if r.code != 0 || !strings.Contains(r.stdout, "imported 30 patterns, 4 vectors into old") {
		t.Fatalf("import of an old export: exit %d, out %q, err %q", r.code, r.stdout, r.stderr)
	}
	if got, want := exportOf(t, cli, "old"), strings.Join(lines[1:], "\n")+"\n"; got != want {
		t.Fatalf("the model exports as\n%s\nwant (the old export without its meta line)\n%s", got, want)
	}
	r = katoctl(t, nil, append(flags, "models", "export", "old")...)
	if r.code != 0 || r.stdout != strings.Join(lines[1:], "\n")+"\n" {
		t.Fatalf("katoctl export: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestModelsExportUnknownAndBadNames(t *testing.T) {
	_, flags := modelEtcd(t)
	r := katoctl(t, nil, append(flags, "models", "export", "nothing")...)
	if r.code != 1 || r.stdout != "" || !strings.Contains(r.stderr, `katoctl: models export: no model "nothing" (katoctl models ls lists them)`) {
		t.Fatalf("export of an unknown model: exit %d, out %q, err %q", r.code, r.stdout, r.stderr)
	}
	for _, args := range [][]string{{"export", "bad name"}, {"import", "a/b"}, {"rm", ""}} {
		r := katoctl(t, nil, append(append(flags, "models"), args...)...)
		if r.code != 1 || !strings.Contains(r.stderr, "model name") {
			t.Errorf("models %q: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
	r = katoctl(t, nil, append(flags, "models", "export")...)
	if r.code != 1 || !strings.Contains(r.stderr, "takes one model name") {
		t.Fatalf("export without a model: exit %d, stderr %q", r.code, r.stderr)
	}
}

// bulkPattern is a pattern of about 1 KB: 600 of them make more than one
// snapshot chunk (512 KiB), so an import has written chunks when it meets a
// bad line after them.
func bulkPattern(i int) processor.PatternRecord {
	events := [][]string{{fmt.Sprintf("bulk-%d", i), strings.Repeat("b", 1000)}}
	return processor.PatternRecord{Name: processor.ModelName(events), Events: events, Length: 2, Frequency: 1,
		Emotives: []processor.Emotives{}, Seq: uint64(1000 + i)}
}

func TestModelsImportRejectsBadLineAndWritesNothing(t *testing.T) {
	cli, flags := modelEtcd(t)
	line := func(kind, key string, value any) string {
		b, err := json.Marshal(map[string]any{"kind": kind, "key": key, "value": value})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	raw := func(v json.Marshaler) json.RawMessage {
		b, err := v.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	p0, p1 := testPattern(0), testPattern(1)
	v0, v1 := testVector(0), testVector(1)
	vecLine := func(v processor.VectorRecord) string {
		return line("vector", vectorKey(v), raw(v))
	}
	good0 := line("pattern", patternKey(p0), raw(p0))
	good1 := line("pattern", patternKey(p1), raw(p1))
	vec := vecLine(v0)
	var bulk []string
	for i := range 700 {
		p := bulkPattern(i)
		bulk = append(bulk, line("pattern", patternKey(p), raw(p)))
	}
	after := func(tail ...string) []string { return append(append([]string{good0, vec}, bulk...), tail...) }
	nBulk := 2 + len(bulk)

	otherName := p1
	otherName.Name = p0.Name
	wrongVec := v0
	wrongVec.Vector = processor.IntVector(9, 9)
	sameSeq := p1
	sameSeq.Seq = p0.Seq
	vecSameSeq := v1
	vecSameSeq.Seq = v0.Seq
	// Records each line checks alone (PatternRecord.Validate): what the check
	// of the whole model, gone with the streaming import, used to catch.
	badLength := p1
	badLength.Length = 7
	noFrequency := p1
	noFrequency.Frequency = 0
	oneSymbol := processor.PatternRecord{Events: [][]string{{"alone"}}, Length: 1, Frequency: 1, Seq: 5}
	oneSymbol.Name = processor.ModelName(oneSymbol.Events)
	emptyEvent := processor.PatternRecord{Events: [][]string{{"a", "b"}, {}}, Length: 2, Frequency: 1, Seq: 6}
	emptyEvent.Name = processor.ModelName(emptyEvent.Events)
	// A record larger than a node may store, on a line short enough to read.
	hugeEvents := [][]string{{"huge", strings.Repeat("h", kb.MaxRecordBytes)}}
	huge := processor.PatternRecord{Name: processor.ModelName(hugeEvents), Events: hugeEvents, Length: 2, Frequency: 1, Seq: 7}

	cases := []struct {
		name  string
		input []string
		line  int
		want  string
	}{
		{"not JSON", []string{good0, "{not json"}, 2, "not a record line"},
		{"unknown field", []string{good0, `{"kind":"pattern","key":"k","value":{},"extra":1}`}, 2, "unknown field"},
		{"two values", []string{good0 + " " + good1}, 1, "more than one JSON value"},
		{"unknown kind", []string{vec, line("symbol", "symbols/x", map[string]int{"a": 1})}, 2, `kind "symbol"`},
		{"no value", []string{line("pattern", patternKey(p0), nil)}, 1, "has no value"},
		{"key is not the name", []string{good0, vec, line("pattern", patternKey(p1), raw(otherName))}, 3, "holds pattern"},
		{"name is not the hash", []string{line("pattern", patternKey(p0), raw(otherName))}, 1, "hash to"},
		{"pattern under vectors/", []string{line("vector", patternKey(p0), raw(p0))}, 1, "does not start with vectors/"},
		{"vector values", []string{line("vector", "vectors/"+strings.TrimPrefix(v0.Name, "VECTOR|"), raw(wrongVec))}, 1, "hash to"},
		{"duplicate pattern", []string{good0, vec, "", good0}, 4, "given twice"},
		{"duplicate pattern seq", []string{good0, vec, line("pattern", patternKey(p1), raw(sameSeq))}, 3, "another pattern has seq 0"},
		{"duplicate vector", []string{good0, vec, good1, vec}, 4, "given twice"},
		{"duplicate vector seq", []string{vec, vecLine(vecSameSeq)}, 2, "another vector has seq 0"},
		{"bad length", []string{good0, vec, line("pattern", "patterns/"+p1.Name, raw(badLength))}, 3, "has length 7, events hold 4"},
		{"no frequency", []string{good0, line("pattern", "patterns/"+p1.Name, raw(noFrequency))}, 2, "frequency 0"},
		{"one symbol", []string{good0, line("pattern", "patterns/"+oneSymbol.Name, raw(oneSymbol))}, 2, "has 1 symbols"},
		{"empty event", []string{good0, line("pattern", "patterns/"+emptyEvent.Name, raw(emptyEvent))}, 2, "empty event"},
		{"bad meta", []string{good0, line("meta", "meta", []int{1})}, 2, "not a JSON object"},
		{"line too long", []string{good0, vec, line("meta", "meta", map[string]string{"pad": strings.Repeat("x", 2<<20)})}, 3, "line longer than"},
		// After chunks were written: nothing of them is left.
		{"bad line after chunks", after("{not json"), nBulk + 1, "not a record line"},
		{"duplicate after chunks", after(bulk[0]), nBulk + 1, "given twice"},
		{"record too large after chunks", after(line("pattern", "patterns/"+huge.Name, raw(huge))), nBulk + 1, "too large"},
	}
	// target holds a model; each import --replace fails and leaves it as it
	// was. empty holds nothing, and still holds nothing after.
	if r := importFile(t, strings.Join([]string{good0, vec}, "\n"), append(flags, "models", "import", "target")...); r.code != 0 {
		t.Fatalf("import: exit %d, stderr %q", r.code, r.stderr)
	}
	before, beforeSum := exportOf(t, cli, "target"), summary(t, cli, "target")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			input := strings.Join(tc.input, "\n") + "\n"
			for _, target := range []string{"target", "empty"} {
				r := importFile(t, input, append(flags, "models", "import", "--replace", target)...)
				if r.code != 1 {
					t.Fatalf("%s: exit %d, stderr %q", target, r.code, r.stderr)
				}
				if want := fmt.Sprintf("line %d: ", tc.line); !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "the model is as it was") {
					t.Fatalf("%s: stderr %q lacks %q, %q or \"the model is as it was\"", target, r.stderr, want, tc.want)
				}
			}
			if got, s := exportOf(t, cli, "target"), summary(t, cli, "target"); got != before || s.Head == nil || *s.Head != *beforeSum.Head {
				t.Fatalf("a rejected import changed the model: head %+v, was %+v; now\n%s", s.Head, beforeSum.Head, got)
			}
			checkOneSnapshot(t, cli, "target")
			if keys := modelKeys(t, cli, "empty"); len(keys) != 0 {
				t.Fatalf("a rejected import into an empty model left %d keys", len(keys))
			}
		})
	}

	r := importFile(t, "\n\n", append(flags, "models", "import", "empty")...)
	if r.code != 1 || !strings.Contains(r.stderr, "holds no records") {
		t.Fatalf("empty import: exit %d, stderr %q", r.code, r.stderr)
	}
	// The good lines alone, with the meta line of an old export, import:
	// the meta line is skipped.
	r = importFile(t, strings.Join([]string{good0, vec, line("meta", "meta", map[string]int{"v": 1}), good1}, "\n"), append(flags, "models", "import", "empty")...)
	if r.code != 0 || !strings.Contains(r.stdout, "imported 2 patterns, 1 vectors into empty") {
		t.Fatalf("good import: exit %d, out %q, err %q", r.code, r.stdout, r.stderr)
	}
	want := oldPatternLine(t, p0) + "\n" + oldVectorLine(t, v0) + "\n" + oldPatternLine(t, p1) + "\n"
	if got := exportOf(t, cli, "empty"); got != want {
		t.Fatalf("imported\n%s\nwant\n%s", got, want)
	}
	if s := summary(t, cli, "empty"); s.Meta.Writer != "katoctl-import" || s.Meta.Model != "empty" {
		t.Fatalf("meta record %+v, want katoctl-import's own", s.Meta)
	}
}

func TestModelsImportRefusedWhileLocked(t *testing.T) {
	cli, flags := modelEtcd(t)
	seedModel(t, cli, "src", 3, 1)
	export := katoctl(t, nil, append(flags, "models", "export", "src")...).stdout
	l := holdLock(t, cli, "busy", "node-a", "host-1")

	r := importFile(t, export, append(flags, "models", "import", "busy")...)
	if r.code != 1 {
		t.Fatalf("import into a locked model: exit %d, stderr %q", r.code, r.stderr)
	}
	for _, want := range []string{"node-a@host-1", "would not see the import", "katoctl stop node-a", "--force", "nothing written"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr %q lacks %q", r.stderr, want)
		}
	}
	if n := len(modelKeys(t, cli, "busy")); n != 0 {
		t.Fatalf("refused import wrote %d keys", n)
	}
	if _, ok := l.Fence(); !ok {
		t.Fatal("the refused import took the holder's lock")
	}

	r = importFile(t, export, append(flags, "models", "import", "--force", "busy")...)
	if r.code != 0 || !strings.Contains(r.stderr, "broke the lock of node-a@host-1 on model busy") {
		t.Fatalf("import --force: exit %d, stderr %q", r.code, r.stderr)
	}
	waitLost(t, l)
	if got := exportOf(t, cli, "busy"); got != export || got == "" {
		t.Fatalf("import --force did not copy the model:\n%s\nwant\n%s", got, export)
	}
}

func TestModelsRemove(t *testing.T) {
	cli, flags := modelEtcd(t)
	seedModel(t, cli, "gone", 20, 5)
	seedModel(t, cli, "plain", 2, 0)
	l := holdLock(t, cli, "gone", "node-b", "host-2")

	r := katoctl(t, nil, append(flags, "models", "rm", "gone")...)
	if r.code != 1 || !strings.Contains(r.stderr, "held by node-b@host-2") || !strings.Contains(r.stderr, "--force") || !strings.Contains(r.stderr, "nothing removed") {
		t.Fatalf("rm of a locked model: exit %d, stderr %q", r.code, r.stderr)
	}
	if n := len(modelKeys(t, cli, "gone")); n != 25 {
		t.Fatalf("refused rm left %d of 25 keys", n)
	}

	r = katoctl(t, nil, append(flags, "models", "rm", "--force", "gone")...)
	if r.code != 0 || !strings.Contains(r.stdout, "removed 25 keys of model gone") {
		t.Fatalf("rm --force: exit %d, out %q, err %q", r.code, r.stdout, r.stderr)
	}
	waitLost(t, l)
	if n := len(modelKeys(t, cli, "gone")); n != 0 {
		t.Fatalf("rm --force left %d keys", n)
	}

	r = katoctl(t, nil, append(flags, "models", "rm", "plain")...)
	if r.code != 0 || !strings.Contains(r.stdout, "removed 2 keys of model plain") {
		t.Fatalf("rm: exit %d, out %q, err %q", r.code, r.stdout, r.stderr)
	}
	if _, _, err := coord.GetLock(testCtx(t), cli, "plain"); !errors.Is(err, coord.ErrNotLocked) {
		t.Fatalf("plain still locked after rm: %v", err)
	}
	r = katoctl(t, nil, append(flags, "models", "rm", "plain")...)
	if r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Fatalf("rm of an empty model: exit %d, stderr %q", r.code, r.stderr)
	}

	// A model in the new layout: head, meta, snapshot chunks and log.
	if r := importFile(t, exportOf(t, cli, "plain")+oldPatternLine(t, testPattern(0)), append(flags, "models", "import", "fresh")...); r.code != 0 {
		t.Fatalf("import: exit %d, stderr %q", r.code, r.stderr)
	}
	learnLog(t, cli, "fresh", putPattern(testPattern(1)))
	keys := len(modelKeys(t, cli, "fresh"))
	r = katoctl(t, nil, append(flags, "models", "rm", "fresh")...)
	if r.code != 0 || !strings.Contains(r.stdout, fmt.Sprintf("removed %d keys of model fresh", keys)) {
		t.Fatalf("rm: exit %d, out %q, err %q", r.code, r.stdout, r.stderr)
	}
	if s := summary(t, cli, "fresh"); s.Keys != 0 || exportOf(t, cli, "fresh") != "" {
		t.Fatalf("rm left %+v", s)
	}
}

func TestModelsForceRefusedWithWaitersAndStaleLock(t *testing.T) {
	cli, flags := modelEtcd(t)
	seedModel(t, cli, "queued", 2, 0)
	seedModel(t, cli, "stuck", 2, 0)
	holder := holdLock(t, cli, "queued", "node-a", "host-1")

	// A standby node waits for the lock.
	ctx, cancel := context.WithCancel(context.Background())
	s, err := coord.NewSession(testCtx(t), cli, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	waiting := make(chan struct{})
	go func() {
		defer close(waiting)
		coord.NewModelLock(s, "queued", coord.WithHolder("node-b", "host-2")).Lock(ctx)
	}()
	t.Cleanup(func() { cancel(); <-waiting; s.Close(context.Background()) })
	etcdtest.Eventually(t, 15*time.Second, func() bool {
		st, _, err := coord.GetLock(testCtx(t), cli, "queued")
		return err == nil && len(st.Waiters) == 1
	}, "node-b to queue for the lock")
	r := katoctl(t, nil, append(flags, "models", "rm", "--force", "queued")...)
	if r.code != 1 || !strings.Contains(r.stderr, "1 more wait for it (first: node-b@host-2)") || !strings.Contains(r.stderr, "nothing removed") {
		t.Fatalf("rm --force with a waiter: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, ok := holder.Fence(); !ok || len(modelKeys(t, cli, "queued")) != 2 {
		t.Fatal("rm --force with a waiter broke the lock or removed keys")
	}
	export := exportOf(t, cli, "queued")
	r = importFile(t, export, append(flags, "models", "import", "--force", "--replace", "queued")...)
	if r.code != 1 || !strings.Contains(r.stderr, "1 more wait for it (first: node-b@host-2)") || !strings.Contains(r.stderr, "nothing written") {
		t.Fatalf("import --force with a waiter: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, ok := holder.Fence(); !ok || exportOf(t, cli, "queued") != export || summary(t, cli, "queued").Head != nil {
		t.Fatal("import --force with a waiter broke the lock or wrote the model")
	}

	// A lock key left without a lease: named as stale, and --force breaks it.
	if _, err := cli.Put(testCtx(t), coord.LockPrefix("stuck")+"1234", ""); err != nil {
		t.Fatal(err)
	}
	r = katoctl(t, nil, append(flags, "models", "rm", "stuck")...)
	if r.code != 1 || !strings.Contains(r.stderr, "has no live lease") || !strings.Contains(r.stderr, "katoctl cleanup") {
		t.Fatalf("rm of a model with a stale lock key: exit %d, stderr %q", r.code, r.stderr)
	}
	r = katoctl(t, nil, append(flags, "models", "rm", "--force", "stuck")...)
	if r.code != 0 || !strings.Contains(r.stdout, "removed 2 keys of model stuck") {
		t.Fatalf("rm --force of a model with a stale lock key: exit %d, out %q, err %q", r.code, r.stdout, r.stderr)
	}
}

func TestModelsList(t *testing.T) {
	cli, flags := modelEtcd(t)
	// alpha: imported (a snapshot), then learned on (two log entries).
	lines := oldExportLines(t, 12, 3)
	if r := importFile(t, strings.Join(lines, "\n"), append(flags, "models", "import", "alpha")...); r.code != 0 {
		t.Fatalf("import: exit %d, stderr %q", r.code, r.stderr)
	}
	learnLog(t, cli, "alpha", putPattern(testPattern(12)), putPattern(testPattern(13)))
	alpha := summary(t, cli, "alpha")
	if alpha.Head == nil || alpha.SnapshotBytes <= 0 {
		t.Fatalf("alpha %+v has no snapshot", alpha)
	}
	// beta: the old layout, locked.
	seedModel(t, cli, "beta", 4, 0)
	l := holdLock(t, cli, "beta", "node-c", "host-3")
	holdLock(t, cli, "lockonly", "node-d", "host-4")
	fence, _ := l.Fence()

	r := katoctl(t, nil, append(flags, "-o", "json", "models", "ls")...)
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var got []modelSummary
	if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, r.stdout)
	}
	if len(got) != 3 || got[0].Model != "alpha" || got[1].Model != "beta" || got[2].Model != "lockonly" {
		t.Fatalf("models %+v", got)
	}
	if a := got[0]; a.Patterns != 14 || a.Vectors != 3 || a.LogEntries != 2 || a.SnapshotBytes != alpha.SnapshotBytes ||
		a.Keys != int64(len(modelKeys(t, cli, "alpha"))) || a.Holder != nil {
		t.Fatalf("alpha %+v, want 14 patterns (12 in the snapshot, 2 learned since), 3 vectors, 2 log entries, a %d-byte snapshot, no holder", a, alpha.SnapshotBytes)
	}
	if b := got[1]; b.Patterns != 4 || b.Vectors != 0 || b.LogEntries != 0 || b.SnapshotBytes != 0 || b.Holder == nil || b.Holder.ID != "node-c" || b.Holder.Rev != fence.Rev {
		t.Fatalf("beta %+v", b)
	}
	if o := got[2]; o.Patterns != 0 || o.Keys != 0 || o.Holder == nil || o.Holder.Host != "host-4" {
		t.Fatalf("lockonly %+v", o)
	}

	r = katoctl(t, nil, append(flags, "models", "ls")...)
	rows := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(rows) != 4 {
		t.Fatalf("table: exit %d:\n%s", r.code, r.stdout)
	}
	wantRows := [][]string{
		{"MODEL", "PATTERNS", "VECTORS", "LOG", "SNAPSHOT", "HOLDER", "FENCE"},
		{"alpha", "14", "3", "2", fmt.Sprint(alpha.SnapshotBytes), "-", "-"},
		{"beta", "4", "0", "0", "0", "node-c@host-3", fmt.Sprint(fence.Rev)},
		{"lockonly", "0", "0", "0", "0", "node-d@host-4", ""},
	}
	for i, want := range wantRows {
		f := strings.Fields(rows[i])
		if len(f) != len(want) {
			t.Fatalf("row %q, want %q", rows[i], want)
		}
		for j := range want {
			if want[j] != "" && f[j] != want[j] {
				t.Fatalf("row %q, want %q", rows[i], want)
			}
		}
	}
}
