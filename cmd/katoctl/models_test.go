package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/processor"
)

// modelEtcd starts etcd and returns a client under the default prefix and the
// global flags that reach it.
func modelEtcd(t *testing.T) (*clientv3.Client, []string) {
	t.Helper()
	c, flags := registered(t)
	cli := c.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	return cli, flags
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
	s, err := coord.NewSession(ctx, cli, zap.NewNop(), coord.WithTTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	l := coord.NewModelLock(s, model, coord.WithHolder(id, host))
	if _, err := l.TryLock(ctx); err != nil {
		t.Fatal(err)
	}
	return l
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

// seedModel writes patterns and vectors into model the way a node does:
// under the model lock, in fenced transactions.
func seedModel(t *testing.T, cli *clientv3.Client, model string, patterns, vectors int) {
	t.Helper()
	ctx := testCtx(t)
	s, err := coord.NewSession(ctx, cli, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	l := coord.NewModelLock(s, model, coord.WithHolder("seeder", "test"))
	if _, err := l.TryLock(ctx); err != nil {
		t.Fatal(err)
	}
	defer l.Unlock(context.Background())
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
		put("patterns/"+p.Name, p)
	}
	for i := range vectors {
		v := testVector(i)
		put("vectors/"+strings.TrimPrefix(v.Name, processor.VectorPrefix), v)
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

func TestModelsExportImportRoundTrip(t *testing.T) {
	cli, flags := modelEtcd(t)
	seedModel(t, cli, "src", 250, 5)
	src := modelKeys(t, cli, "src")
	if len(src) != 255 {
		t.Fatalf("seeded %d keys", len(src))
	}

	r := katoctl(t, nil, append(flags, "models", "export", "--progress", "100", "src")...)
	if r.code != 0 {
		t.Fatalf("export: exit %d: %s", r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
	if len(lines) != 255 {
		t.Fatalf("export wrote %d lines", len(lines))
	}
	for _, l := range lines {
		var el exportLine
		if err := json.Unmarshal([]byte(l), &el); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		if want := map[string]string{"pattern": "patterns/", "vector": "vectors/"}[el.Kind]; want == "" || !strings.HasPrefix(el.Key, want) || src[el.Key] != string(el.Value) {
			t.Fatalf("line %q does not match the stored record %q", l, src[el.Key])
		}
	}
	for _, want := range []string{"exported 100 records", "exported 200 records", "exported 250 patterns, 5 vectors of src at revision "} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("export stderr lacks %q:\n%s", want, r.stderr)
		}
	}

	// From standard input.
	cmd := katoctlCmd(t, nil, append(flags, "models", "import", "--progress", "100", "copy")...)
	cmd.Stdin = strings.NewReader(r.stdout)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("import: %v: %s", err, stderr.String())
	}
	if !strings.Contains(string(out), "imported 250 patterns, 5 vectors into copy at revision ") || !strings.Contains(stderr.String(), "imported 200 of 255 records") {
		t.Fatalf("import output: %q / %q", out, stderr.String())
	}
	if got := modelKeys(t, cli, "copy"); !maps.Equal(got, src) {
		t.Fatalf("copy differs from src: %d keys vs %d", len(got), len(src))
	}
	// The lock katoctl took for the import is released.
	if _, _, err := coord.GetLock(testCtx(t), cli, "copy"); !errors.Is(err, coord.ErrNotLocked) {
		t.Fatalf("copy still locked after the import: %v", err)
	}

	// Into a model that has keys: refused without --replace.
	export := katoctl(t, nil, append(flags, "models", "export", "src")...).stdout
	r = importFile(t, export, append(flags, "models", "import", "copy")...)
	if r.code != 1 || !strings.Contains(r.stderr, "already has 255 keys") || !strings.Contains(r.stderr, "--replace") {
		t.Fatalf("import over a model: exit %d, stderr %q", r.code, r.stderr)
	}
	// --replace with a part: only that part is left.
	part := strings.Join(strings.SplitAfter(export, "\n")[:10], "")
	r = importFile(t, part, append(flags, "models", "import", "--replace", "copy")...)
	if r.code != 0 || len(modelKeys(t, cli, "copy")) != 10 || !strings.Contains(r.stderr, "deleted the 255 keys") {
		t.Fatalf("import --replace: exit %d, %d keys, stderr %q", r.code, len(modelKeys(t, cli, "copy")), r.stderr)
	}
	// --replace back to the whole model.
	r = importFile(t, export, append(flags, "models", "import", "--replace", "copy")...)
	if r.code != 0 || !maps.Equal(modelKeys(t, cli, "copy"), src) {
		t.Fatalf("import --replace: exit %d, stderr %q", r.code, r.stderr)
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
	v0 := testVector(0)
	good0 := line("pattern", "patterns/"+p0.Name, raw(p0))
	good1 := line("pattern", "patterns/"+p1.Name, raw(p1))
	vec := line("vector", "vectors/"+strings.TrimPrefix(v0.Name, "VECTOR|"), raw(v0))

	badLength := p1
	badLength.Length = 7
	otherName := p1
	otherName.Name = p0.Name
	wrongVec := v0
	wrongVec.Vector = processor.IntVector(9, 9)

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
		{"no value", []string{line("pattern", "patterns/"+p0.Name, nil)}, 1, "has no value"},
		{"key is not the name", []string{good0, vec, line("pattern", "patterns/"+p1.Name, raw(otherName))}, 3, "holds pattern"},
		{"name is not the hash", []string{line("pattern", "patterns/"+p0.Name, raw(otherName))}, 1, "hash to"},
		{"pattern under vectors/", []string{line("vector", "patterns/"+p0.Name, raw(p0))}, 1, "does not start with vectors/"},
		{"vector values", []string{line("vector", "vectors/"+strings.TrimPrefix(v0.Name, "VECTOR|"), raw(wrongVec))}, 1, "hash to"},
		{"duplicate key", []string{good0, vec, "", good0}, 4, "already given on line 1"},
		{"bad length (whole-model check)", []string{good0, vec, line("pattern", "patterns/"+p1.Name, raw(badLength))}, 3, "length 7"},
		{"bad meta", []string{good0, line("meta", "meta", []int{1})}, 2, "not a JSON object"},
		{"record too large for etcd", []string{good0, vec, line("meta", "meta", map[string]string{"pad": strings.Repeat("x", 2<<20)})}, 3, "too large"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := importFile(t, strings.Join(tc.input, "\n")+"\n", append(flags, "models", "import", "target")...)
			if r.code != 1 {
				t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
			}
			if want := fmt.Sprintf("line %d: ", tc.line); !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, tc.want) || !strings.Contains(r.stderr, "nothing written") {
				t.Fatalf("stderr %q lacks %q, %q or \"nothing written\"", r.stderr, want, tc.want)
			}
			if keys := modelKeys(t, cli, "target"); len(keys) != 0 {
				t.Fatalf("a rejected import wrote %d keys", len(keys))
			}
		})
	}

	r := importFile(t, "\n\n", append(flags, "models", "import", "target")...)
	if r.code != 1 || !strings.Contains(r.stderr, "holds no records") {
		t.Fatalf("empty import: exit %d, stderr %q", r.code, r.stderr)
	}
	// The good lines alone, with a meta record, import.
	r = importFile(t, strings.Join([]string{good0, vec, good1, line("meta", "meta", map[string]int{"v": 1})}, "\n"), append(flags, "models", "import", "target")...)
	if r.code != 0 || !strings.Contains(r.stdout, "imported 2 patterns, 1 vectors and the meta record into target") {
		t.Fatalf("good import: exit %d, out %q, err %q", r.code, r.stdout, r.stderr)
	}
	if keys := modelKeys(t, cli, "target"); len(keys) != 4 || keys["meta"] != `{"v":1}` {
		t.Fatalf("imported keys %v", keys)
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
	if !maps.Equal(modelKeys(t, cli, "busy"), modelKeys(t, cli, "src")) {
		t.Fatal("import --force did not copy the model")
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
	seedModel(t, cli, "alpha", 12, 3)
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
	size := int64(0)
	for k, v := range modelKeys(t, cli, "alpha") {
		size += int64(len(coord.DefaultPrefix + coord.ModelPrefix("alpha") + k + v))
	}
	if a := got[0]; a.Patterns != 12 || a.Vectors != 3 || a.Other != 0 || a.SizeBytes != size || a.Holder != nil {
		t.Fatalf("alpha %+v, want 12 patterns, 3 vectors, %d bytes, no holder", a, size)
	}
	if b := got[1]; b.Patterns != 4 || b.Vectors != 0 || b.Holder == nil || b.Holder.ID != "node-c" || b.Holder.Rev != fence.Rev {
		t.Fatalf("beta %+v", b)
	}
	if o := got[2]; o.Patterns != 0 || o.SizeBytes != 0 || o.Holder == nil || o.Holder.Host != "host-4" {
		t.Fatalf("lockonly %+v", o)
	}

	r = katoctl(t, nil, append(flags, "models", "ls")...)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != 0 || len(lines) != 4 {
		t.Fatalf("table: exit %d:\n%s", r.code, r.stdout)
	}
	wantRows := [][]string{
		{"MODEL", "PATTERNS", "VECTORS", "SIZE", "HOLDER", "FENCE"},
		{"alpha", "12", "3", fmt.Sprint(size), "-", "-"},
		{"beta", "4", "0", "", "node-c@host-3", fmt.Sprint(fence.Rev)},
		{"lockonly", "0", "0", "0", "node-d@host-4", ""},
	}
	for i, want := range wantRows {
		f := strings.Fields(lines[i])
		if len(f) != len(want) {
			t.Fatalf("row %q, want %q", lines[i], want)
		}
		for j := range want {
			if want[j] != "" && f[j] != want[j] {
				t.Fatalf("row %q, want %q", lines[i], want)
			}
		}
	}
}
