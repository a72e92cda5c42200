package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/processor"
)

func patternPut(t *testing.T, model string, events [][]string, seq uint64) (clientv3.Op, string) {
	t.Helper()
	n := 0
	for _, ev := range events {
		n += len(ev)
	}
	name := processor.ModelName(events)
	b, err := processor.PatternRecord{Name: name, Events: events, Length: n, Frequency: 1, Emotives: []processor.Emotives{}, Seq: seq}.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return clientv3.OpPut(coord.ModelPrefix(model)+patternsDir+name, string(b)), name
}

// A warm copy is current only once every event of a revision applied. One
// transaction writes pattern X (seq 10) and a large pattern Y (seq 5: it
// cannot be replayed after X, the copy must load again). Whatever take
// returns at that revision must hold both; a copy that advanced after X
// alone would hand over a model without Y.
func TestWarmCopyCurrentOnlyAfterWholeRevision(t *testing.T) {
	etc := etcdtest.New(t)
	cli := etc.Client(t)
	coord.Namespace(cli, coord.DefaultPrefix)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	n, err := New(Config{ID: "w", Model: "m", Port: 0, ListenHost: "127.0.0.1", AdvertiseHost: "127.0.0.1"}, cli, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer n.ln.Close()
	w := n.engine.follow(ctx)
	defer w.stop()
	etcdtest.Eventually(t, 60*time.Second, func() bool { w.mu.Lock(); defer w.mu.Unlock(); return w.proc != nil }, "the warm copy loads")

	s, err := coord.NewSession(ctx, cli, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	lock := coord.NewModelLock(s, "m")
	if _, err := lock.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	big := make([]string, 100_000)
	for i := range big {
		big[i] = fmt.Sprintf("y%06d", i)
	}
	x, nameX := patternPut(t, "m", [][]string{{"x1", "x2"}}, 10)
	y, nameY := patternPut(t, "m", [][]string{big}, 5)
	resp, err := lock.Txn(ctx).Then(x, y).Commit()
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision

	// As soon as the copy claims the revision, take it.
	for {
		w.mu.Lock()
		have := w.rev
		w.mu.Unlock()
		if have >= rev {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the copy never reached the revision")
		}
	}
	p := w.take(ctx, rev, rev, 0)
	if p == nil {
		t.Fatal("take returned nothing although the copy claims the revision")
	}
	for _, name := range []string{nameX, nameY} {
		if _, err := p.Model(name); err != nil {
			t.Errorf("the copy taken at revision %d lacks pattern %.8s: %v", rev, name, err)
		}
	}
}
