package node

import (
	"context"
	"net/url"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap/zaptest"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
)

// seen collects what a watcher delivered.
type seen struct {
	mu  sync.Mutex
	got map[string]bool
}

func (s *seen) add(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.got == nil {
		s.got = map[string]bool{}
	}
	s.got[k] = true
}

func (s *seen) has(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[k]
}

// proxiedEtcd starts an etcd and returns a client that reaches it through a
// proxy the test can cut (px), and one that reaches it directly.
func proxiedEtcd(t *testing.T) (px *etcdtest.Proxy, pcli, direct *clientv3.Client) {
	t.Helper()
	etc := etcdtest.New(t)
	u, err := url.Parse(etc.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	px = etcdtest.NewProxy(t, u.Host)
	pcli, err = clientv3.New(clientv3.Config{Endpoints: []string{px.Endpoint()}, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pcli.Close() })
	coord.Namespace(pcli, coord.DefaultPrefix)
	direct = etc.Client(t)
	coord.Namespace(direct, coord.DefaultPrefix)
	return px, pcli, direct
}

// Every watcher of the product resumes after etcd compacted the history it
// was about to read: the registry watch, the node's directory (instances for
// /v1/sd, lock holders), the mailbox, and the warm standby. Their connection
// is cut while changes are made and etcd compacts past them; once it is
// back, each one has the changes it missed and the ones made after.
func TestWatchersSurviveCompaction(t *testing.T) {
	px, pcli, direct := proxiedEtcd(t)
	lg := zaptest.NewLogger(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	const waitLimit = 30 * time.Second // each wait; ctx bounds the whole test
	defer cancel()

	// The watchers, all through the proxy.
	ps, err := coord.NewSession(ctx, pcli, lg, coord.WithTTL(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	wctx, stopWatchers := context.WithCancel(ctx)
	defer stopWatchers()
	var instances, messages seen
	wg.Add(3)
	go func() {
		defer wg.Done()
		coord.NewRegistry(ps).Watch(wctx, 0, func(ev coord.InstanceEvent) { instances.add(ev.Instance.ID) })
	}()
	go func() {
		defer wg.Done()
		coord.NewMailbox(ps, "rcv").Receive(wctx, func(_ context.Context, m coord.Message) error { messages.add(m.Body); return nil })
	}()
	n, err := New(Config{ID: "w", Model: "m", Port: 0, ListenHost: "127.0.0.1", AdvertiseHost: "127.0.0.1"}, pcli, lg)
	if err != nil {
		t.Fatal(err)
	}
	defer n.ln.Close()
	go func() { defer wg.Done(); n.dir.Run(wctx) }()
	warm := n.engine.follow(wctx)
	defer warm.stop()
	etcdtest.Eventually(t, waitLimit, func() bool { warm.mu.Lock(); defer warm.mu.Unlock(); return warm.proc != nil }, "the warm copy loads")
	<-n.dir.Ready()

	// The writers, straight to etcd.
	ds, err := coord.NewSession(ctx, direct, lg)
	if err != nil {
		t.Fatal(err)
	}
	defer ds.Close(context.Background())
	reg := coord.NewRegistry(ds)
	mb := coord.NewMailbox(ds, "sender")
	model := coord.NewModelLock(ds, "m")
	if _, err := model.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	com := kb.NewCommitter("m", model.Txn, lg, 0, nil)
	cctx, stopCom := context.WithCancel(ctx)
	defer stopCom()
	go com.Run(cctx)
	change := func(id, msg string, pattern []string, seq uint64, lockModel string) string {
		t.Helper()
		if err := reg.Register(ctx, &coord.Instance{ID: id, Name: id, Model: lockModel, Host: "h", APIURL: "http://h:1", MetricsURL: "http://h:1/metrics", Status: coord.StatusRunning}); err != nil {
			t.Fatal(err)
		}
		if _, err := mb.Send(ctx, "rcv", coord.Message{Body: msg}, time.Minute); err != nil {
			t.Fatal(err)
		}
		other := coord.NewModelLock(ds, lockModel, coord.WithHolder(id, "h"))
		if _, err := other.Lock(ctx); err != nil {
			t.Fatal(err)
		}
		ch, name := patternChange([][]string{pattern}, seq)
		if err := com.Submit(ctx, ch); err != nil {
			t.Fatal(err)
		}
		return name
	}
	check := func(id, msg, lockModel, pattern string) {
		t.Helper()
		etcdtest.Eventually(t, waitLimit, func() bool { return instances.has(id) }, "the registry watch sees %s", id)
		etcdtest.Eventually(t, waitLimit, func() bool { return messages.has(msg) }, "the mailbox receives %s", msg)
		etcdtest.Eventually(t, waitLimit, func() bool { _, ok := n.dir.Instance(id); return ok }, "/v1/sd's directory lists %s", id)
		etcdtest.Eventually(t, waitLimit, func() bool {
			_, h, ok, _ := n.dir.Resolve(lockModel)
			return ok && h.ID == id
		}, "the directory knows the holder of %s", lockModel)
		etcdtest.Eventually(t, waitLimit, func() bool {
			warm.mu.Lock()
			defer warm.mu.Unlock()
			if warm.proc == nil || warm.broken {
				return false
			}
			_, err := warm.proc.Model(pattern)
			return err == nil
		}, "the warm copy has pattern %s", pattern[:8])
	}

	px.Blackhole()
	missed := change("late", "missed", []string{"a", "b"}, 1, "m2")
	resp, err := direct.Get(ctx, "compact-me")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := direct.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	px.Reset()
	px.Heal()
	check("late", "missed", "m2", missed)
	after := change("later", "after", []string{"c", "d"}, 2, "m3")
	check("later", "after", "m3", after)
}
