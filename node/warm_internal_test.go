package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

func patternChange(events [][]string, seq uint64) (processor.Change, string) {
	n := 0
	for _, ev := range events {
		n += len(ev)
	}
	name := processor.ModelName(events)
	return processor.Change{Kind: processor.PutPattern, Pattern: processor.PatternRecord{Name: name, Events: events, Length: n,
		Frequency: 1, Emotives: []processor.Emotives{}, Seq: seq}}, name
}

// A warm copy is current only once every change of a revision applied. One
// log entry holds pattern X (seq 10) and a large pattern Y (seq 5: it
// cannot be replayed after X). A copy that advanced after X alone would
// hand over a model without Y: take must refuse it.
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
	x, nameX := patternChange([][]string{{"x1", "x2"}}, 10)
	y, nameY := patternChange([][]string{big}, 5)
	com := kb.NewCommitter("m", lock.Txn, zaptest.NewLogger(t), 0, nil)
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go com.Run(cctx)
	if err := com.Submit(ctx, x, y); err != nil {
		t.Fatal(err)
	}
	resp, err := cli.Get(ctx, coord.ModelPrefix("m")+kb.MetaKey)
	if err != nil {
		t.Fatal(err)
	}
	rev := resp.Header.Revision

	// The copy cannot apply the revision (Y arrives after X in learn
	// order): it must never be taken, though it holds X.
	if p, _ := w.take(ctx, rev, rev, 2*time.Second); p != nil {
		_, errX := p.Model(nameX)
		_, errY := p.Model(nameY)
		t.Fatalf("take returned a copy at a revision it could not apply (has X: %v, has Y: %v)", errX == nil, errY == nil)
	}
}
