package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
	"github.com/kato-coord/kato/node/processor/processortest"
)

// lockWatch checks that the holder of a model's lock never changes.
type lockWatch struct {
	t     *testing.T
	cli   *clientv3.Client
	model string
	want  coord.LockEntry
}

func watchLock(t *testing.T, etc *etcdtest.Cluster, model string) *lockWatch {
	t.Helper()
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	l := &lockWatch{t: t, cli: cli, model: model}
	l.want = l.holder()
	return l
}

func (l *lockWatch) holder() coord.LockEntry {
	l.t.Helper()
	st, _, err := coord.GetLock(context.Background(), l.cli.KV, l.model)
	if err != nil {
		l.t.Fatalf("lock of %s: %v", l.model, err)
	}
	return st.Holder
}

func (l *lockWatch) check(after string) {
	l.t.Helper()
	if got := l.holder(); got.ID != l.want.ID || got.Rev != l.want.Rev {
		l.t.Fatalf("after %s the lock of %s is held by %s (fence %d), was %s (fence %d)", after, l.model, got.ID, got.Rev, l.want.ID, l.want.Rev)
	}
}

// stored counts the patterns and vectors etcd holds for the model (read as
// an export reads it: snapshot and log at one revision).
func (l *lockWatch) stored() (patterns, vectors int64) {
	l.t.Helper()
	_, n, err := kb.Export(context.Background(), l.cli.KV, zap.NewNop(), l.model, func(processor.Change) error { return nil })
	if err != nil && !errors.Is(err, kb.ErrNotFound) {
		l.t.Fatal(err)
	}
	return n.Patterns, n.Vectors
}

func observeBody(strs []string, vec []float64) string {
	vecs := []any{}
	if vec != nil {
		vecs = append(vecs, vec)
	}
	b, _ := json.Marshal(map[string]any{"strings": strs, "vectors": vecs, "emotives": map[string]any{}})
	return string(b)
}

// startStandby runs a second node for model, waiting until it is standby.
func startStandby(t *testing.T, etc *etcdtest.Cluster, id, model string) *node.Node {
	t.Helper()
	n := runNode(t, etc, node.Config{ID: id, Model: model, Port: 0})
	waitStatus(t, etc, id, coord.StatusStandby)
	return n
}

// The oversized learns of issue 14: a 2 MB string, two events of 100k
// symbols, and 130 observes with one new vector each. The first two cannot
// be one record: they get 413 before anything changes (the STM is still
// there, no pattern was made). The third is 132 writes, more than a
// transaction holds: it learns. The lock holder never changes and the
// standby stays standby.
func TestOversizedLearnsKeepTheLock(t *testing.T) {
	etc := etcdtest.New(t)
	a := startNode(t, etc, node.Config{ID: "a", Model: "m", Port: 0})
	startStandby(t, etc, "b", "m")
	c := client{t, a.APIURL()}
	lw := watchLock(t, etc, "m")

	refused := func(what string, events int) {
		t.Helper()
		code, m := c.call("POST", "/m/learn", "")
		if code != 413 || m["error_code"] != "CHANGE_TOO_LARGE" || !strings.Contains(m["message"].(string), "at most") {
			t.Fatalf("learn of %s: %d %v, want 413 CHANGE_TOO_LARGE naming the limit", what, code, m)
		}
		lw.check("the learn of " + what)
		if wm := c.ok("GET", "/m/working-memory", "")["message"].([]any); len(wm) != events {
			t.Fatalf("after the refused learn of %s the STM holds %d events, want the %d observed", what, len(wm), events)
		}
		if n, _ := lw.stored(); n != 0 {
			t.Fatalf("after the refused learn of %s etcd holds %d patterns", what, n)
		}
		c.ok("POST", "/m/clear-working-memory", "")
	}

	c.ok("POST", "/m/observe", observeBody([]string{strings.Repeat("x", 2<<20), "y"}, nil))
	refused("a 2 MB string", 1)

	syms := make([]string, 100_000)
	for i := range syms {
		syms[i] = fmt.Sprintf("s%d", i)
	}
	c.ok("POST", "/m/observe", observeBody(syms, nil))
	c.ok("POST", "/m/observe", observeBody(syms, nil))
	refused("two 100k-symbol events", 2)

	for i := 0; i < 130; i++ {
		c.ok("POST", "/m/observe", observeBody([]string{"v"}, []float64{float64(i), 1}))
	}
	name := c.ok("POST", "/m/learn", "")["message"].(string)
	if !strings.HasPrefix(name, "MODEL|") {
		t.Fatalf("learn of 130 new vectors: %q", name)
	}
	lw.check("the learn of 130 new vectors")
	if p, v := lw.stored(); v != 130 || p != 1 {
		t.Fatalf("etcd holds %d vectors and %d patterns, want 130 and 1", v, p)
	}
	c.ok("GET", "/m/model/"+strings.TrimPrefix(name, "MODEL|"), "")
	waitStatus(t, etc, "b", coord.StatusStandby)
}

// A change etcd refuses for a reason of its own (here: a member that takes
// requests of 256 KiB at most, and a symbol of 600 KiB that does not
// compress below it) is an error of that request: the client gets
// 503, the node keeps its lock, reloads the model from etcd (which does not
// hold the change) and takes writes again.
func TestRefusedWriteReloadsUnderTheSameLock(t *testing.T) {
	etc := etcdtest.New(t, etcdtest.WithMaxRequestBytes(256<<10))
	a := startNode(t, etc, node.Config{ID: "a", Model: "m", Port: 0})
	c := client{t, a.APIURL()}
	lw := watchLock(t, etc, "m")
	observe(c, "m", "one", "two")
	c.ok("POST", "/m/learn", "")

	big := processortest.RandomSymbol(600 << 10)
	c.ok("POST", "/m/observe", observeBody([]string{big, "y"}, nil))
	code, m := c.call("POST", "/m/learn", "")
	if code != 503 || !strings.Contains(m["message"].(string), "not stored") {
		t.Fatalf("learn etcd refuses: %d %v, want 503 not stored", code, m)
	}
	lw.check("a refused write")
	// Reloaded: the refused pattern is gone from memory too, writes work again.
	etcdtest.Eventually(t, 30*time.Second, func() bool {
		code, _ := c.call("GET", "/m/model/"+processor.ModelName([][]string{{big, "y"}}), "")
		return code == 404
	}, "the refused pattern is gone after the reload")
	observe(c, "m", "three", "four")
	c.ok("POST", "/m/learn", "")
	lw.check("the reload")
	if n, _ := lw.stored(); n != 2 {
		t.Fatalf("%d patterns in etcd, want 2", n)
	}
}
