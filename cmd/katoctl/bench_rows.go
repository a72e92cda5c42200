package main

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/cmd/internal/benchutil"
	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// The measurements of katoctl bench, one method per group of rows. Each sets
// up what it measures, runs the coordinator's and the raw systems in turns
// with compare, and removes what it set up. Raw keys go under raw/.

// workers runs op from n goroutines for one run of a system.
func workers(n int, op func(ctx context.Context, worker, i int) error) func(context.Context, benchutil.Quota) (benchutil.Sample, error) {
	return func(ctx context.Context, q benchutil.Quota) (benchutil.Sample, error) {
		return benchutil.Run(ctx, n, q, op)
	}
}

func benchInstance(id string) coord.Instance {
	host := coord.Hostname()
	return coord.Instance{ID: id, Name: "katoctl bench", Model: id, Host: host, PID: os.Getpid(),
		APIURL: "http://" + host + ":8000", MetricsURL: "http://" + host + ":8000/metrics",
		Status: coord.StatusRunning, Version: "bench", StartedAt: time.Now().UTC()}
}

// registration: Register + Deregister on an open session, against a put of
// the same record with the session's lease and a delete.
func (b *bencher) registration(ctx context.Context) ([]benchRow, error) {
	s, err := b.session(ctx, b.cli)
	if err != nil {
		return nil, err
	}
	defer closeSession(ctx, s)
	reg := coord.NewRegistry(s)
	in := benchInstance("bench-reg")
	raw := in
	raw.V, raw.LeaseID = coord.SchemaVersion, coord.LeaseHex(s.Lease())
	rawVal, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	rawKey := "raw/" + coord.InstanceKey(in.ID)
	series, err := b.compare(ctx, "registration cycle", 1,
		benchutil.System{Name: "Register+Deregister", Run: workers(1, func(ctx context.Context, _, _ int) error {
			if err := reg.Register(ctx, &in); err != nil {
				return err
			}
			return reg.Deregister(ctx, in.ID)
		})},
		benchutil.System{Name: "leased put+delete", Run: workers(1, func(ctx context.Context, _, _ int) error {
			if _, err := b.cli.Put(ctx, rawKey, string(rawVal), clientv3.WithLease(s.Lease())); err != nil {
				return err
			}
			_, err := b.cli.Delete(ctx, rawKey)
			return err
		})})
	if err != nil {
		return nil, err
	}
	return []benchRow{rateRow("registration", "registration cycle: Register + Deregister", "put with lease + delete", series[0], series[1])}, nil
}

// modelLocker adapts a ModelLock to benchutil.Locker.
type modelLocker struct{ l *coord.ModelLock }

func (m modelLocker) Lock(ctx context.Context) error {
	_, err := m.l.Lock(ctx)
	return err
}

func (m modelLocker) Unlock(ctx context.Context) error { return m.l.Unlock(ctx) }

// contenders makes n ModelLocks on one model and n concurrency.Mutexes on
// another, each with a client and a session of its own, as n processes have.
func (b *bencher) contenders(ctx context.Context, n int) (kato, raw []benchutil.Locker, closeAll func(), err error) {
	var closers []func()
	closeAll = func() {
		for _, c := range closers {
			c()
		}
	}
	model, mutexModel := fmt.Sprintf("bench-lock-%d", n), fmt.Sprintf("bench-mutex-%d", n)
	for i := range n {
		cli, err := b.dial(ctx)
		if err != nil {
			closeAll()
			return nil, nil, nil, err
		}
		s, err := b.session(ctx, cli)
		if err != nil {
			closeAll()
			return nil, nil, nil, err
		}
		closers = append(closers, func() { closeSession(ctx, s) })
		kato = append(kato, modelLocker{coord.NewModelLock(s, model, coord.WithHolder(fmt.Sprintf("bench-%d", i), coord.Hostname()))})
		cs, err := concurrency.NewSession(cli, concurrency.WithTTL(int(coord.DefaultTTL/time.Second)), concurrency.WithContext(ctx))
		if err != nil {
			closeAll()
			return nil, nil, nil, fmt.Errorf("bench: etcd session: %w", err)
		}
		closers = append(closers, func() { cs.Close() })
		raw = append(raw, concurrency.NewMutex(cs, strings.TrimSuffix(coord.LockPrefix(mutexModel), "/")))
	}
	return kato, raw, closeAll, nil
}

// lockContenders is how many sessions contend for one lock.
const lockContenders = 4

// locks: ModelLock against concurrency.Mutex, one session alone, then
// lockContenders sessions on one key.
func (b *bencher) locks(ctx context.Context) ([]benchRow, error) {
	var rows []benchRow
	for _, n := range []int{1, lockContenders} {
		kato, raw, closeAll, err := b.contenders(ctx, n)
		if err != nil {
			return nil, err
		}
		what := "uncontended lock cycle"
		if n > 1 {
			what = fmt.Sprintf("contended lock cycle, %d sessions", n)
		}
		series, err := b.compare(ctx, what, 1,
			benchutil.System{Name: "ModelLock", Run: func(ctx context.Context, q benchutil.Quota) (benchutil.Sample, error) {
				return benchutil.LockCycles(ctx, q, kato)
			}},
			benchutil.System{Name: "concurrency.Mutex", Run: func(ctx context.Context, q benchutil.Quota) (benchutil.Sample, error) {
				return benchutil.LockCycles(ctx, q, raw)
			}})
		closeAll()
		if err != nil {
			return nil, err
		}
		if n == 1 {
			rows = append(rows, rateRow("lock_uncontended", "lock cycle, uncontended: ModelLock", "concurrency.Mutex", series[0], series[1]))
			continue
		}
		rows = append(rows,
			rateRow("lock_contended", fmt.Sprintf("lock cycles, %d sessions on one key: ModelLock", n), "concurrency.Mutex", series[0], series[1]),
			timeRow("lock_handoff_p99", fmt.Sprintf("lock hand-off p99, %d sessions: ModelLock", n), "concurrency.Mutex",
				series[0].Quantile(0.99), series[1].Quantile(0.99)))
	}
	return rows, nil
}

// messageTTL is the TTL of the bench's messages: long enough for any run,
// short enough that the leases they leave on a real cluster go soon.
const messageTTL = 30 * time.Second

// deliveryTimeout bounds the wait for the last messages of a slice.
const deliveryTimeout = 30 * time.Second

// messages: --concurrency Mailboxes send to one receiving Mailbox (Send,
// Receive with its acknowledging deletes), against plain puts of values of
// the same size watched by one watcher. Senders and receiver have clients of
// their own.
func (b *bencher) messages(ctx context.Context) ([]benchRow, error) {
	sendCli, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	recvCli, err := b.dial(ctx)
	if err != nil {
		return nil, err
	}
	sendS, err := b.session(ctx, sendCli)
	if err != nil {
		return nil, err
	}
	defer closeSession(ctx, sendS)
	recvS, err := b.session(ctx, recvCli)
	if err != nil {
		return nil, err
	}
	defer closeSession(ctx, recvS)
	senders := b.o.concurrency
	boxes := make([]*coord.Mailbox, senders)
	for i := range boxes {
		boxes[i] = coord.NewMailbox(sendS, fmt.Sprintf("bench-send-%d", i))
	}
	const to = "bench-recv"
	body := `{"event":"data_ready","batch":7}`
	pad, err := messageSize(ctx, sendCli, boxes[0], body)
	if err != nil {
		return nil, err
	}

	// The coordinator's receiver runs for the whole measurement and hands
	// every message to the sink of the slice under way.
	var katoSink, rawSink atomic.Pointer[benchutil.Sink]
	rctx, stopReceive := context.WithCancel(ctx)
	katoFailed, receiving := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(receiving)
		defer close(katoFailed)
		err := coord.NewMailbox(recvS, to).Receive(rctx, func(_ context.Context, m coord.Message) error {
			if s := katoSink.Load(); s != nil {
				s.Delivered(m.SentAt)
			}
			return nil
		})
		if rctx.Err() == nil {
			katoFailed <- fmt.Errorf("Receive: %w", err)
		}
	}()
	defer func() { stopReceive(); <-receiving }()

	// The raw receiver: one watch on raw/msgs/; the value starts with the send time.
	const rawDir = "raw/msgs/"
	wctx, stopWatch := context.WithCancel(clientv3.WithRequireLeader(ctx))
	wch := recvCli.Watch(wctx, rawDir, clientv3.WithPrefix(), clientv3.WithFilterDelete(), clientv3.WithCreatedNotify())
	if wr := <-wch; !wr.Created {
		stopWatch()
		return nil, fmt.Errorf("bench: raw watch not created: %v", wr.Err())
	}
	rawFailed, watching := make(chan error, 1), make(chan struct{})
	go func() {
		defer close(watching)
		defer close(rawFailed)
		for wr := range wch {
			if err := wr.Err(); err != nil {
				rawFailed <- fmt.Errorf("raw watch: %w", err)
				return
			}
			for _, ev := range wr.Events {
				ts, _, _ := strings.Cut(string(ev.Kv.Value), " ")
				ns, _ := strconv.ParseInt(ts, 10, 64)
				if s := rawSink.Load(); s != nil {
					s.Delivered(time.Unix(0, ns))
				}
			}
		}
	}()
	defer func() { stopWatch(); <-watching }()

	// slice runs the senders for q and waits until the receiver has every message.
	slice := func(ctx context.Context, q benchutil.Quota, sink *atomic.Pointer[benchutil.Sink], failed <-chan error,
		send func(ctx context.Context, sender, i int) error) (benchutil.Sample, error) {
		s := benchutil.NewSink()
		sink.Store(s)
		defer sink.Store(nil)
		start := time.Now()
		sent, err := benchutil.Run(ctx, senders, q, send)
		if err != nil {
			return benchutil.Sample{}, err
		}
		s.Expect(sent.Ops)
		return s.Wait(ctx, start, deliveryTimeout, failed)
	}
	series, err := b.compare(ctx, "messages", 1,
		benchutil.System{Name: "Mailbox", Run: func(ctx context.Context, q benchutil.Quota) (benchutil.Sample, error) {
			smp, err := slice(ctx, q, &katoSink, katoFailed, func(ctx context.Context, sender, _ int) error {
				_, err := boxes[sender].Send(ctx, to, coord.Message{Kind: "bench", Body: body}, messageTTL)
				return err
			})
			if err != nil {
				return smp, err
			}
			// Let the receiver's deletes finish before the next slice starts.
			return smp, waitEmpty(ctx, recvCli, coord.InboxPrefix(to))
		}},
		benchutil.System{Name: "put+watch", Run: func(ctx context.Context, q benchutil.Quota) (benchutil.Sample, error) {
			smp, err := slice(ctx, q, &rawSink, rawFailed, func(ctx context.Context, sender, i int) error {
				v := strconv.FormatInt(time.Now().UnixNano(), 10) + " "
				v += strings.Repeat("x", max(0, pad-len(v)))
				_, err := sendCli.Put(ctx, fmt.Sprintf("%s%d/%d", rawDir, sender, i), v)
				return err
			})
			if err != nil {
				return smp, err
			}
			_, err = sendCli.Delete(ctx, rawDir, clientv3.WithPrefix())
			return smp, err
		}})
	if err != nil {
		return nil, err
	}
	kato, raw := series[0], series[1]
	return []benchRow{
		rateRow("messages", fmt.Sprintf("messages, %s → 1 receiver: Mailbox Send/Receive", plural(senders, "sender")), "put + watch (no delete)", kato, raw),
		timeRow("message_latency_p50", "message latency p50: Send → handler", "put → watch event", kato.Quantile(0.5), raw.Quantile(0.5)),
		timeRow("message_latency_p99", "message latency p99: Send → handler", "put → watch event", kato.Quantile(0.99), raw.Quantile(0.99)),
	}, nil
}

// messageSize sends one message with box to a probe inbox and returns the
// size of the value etcd stored, so that raw messages are as large.
func messageSize(ctx context.Context, cli *clientv3.Client, box *coord.Mailbox, body string) (int, error) {
	sent, err := box.Send(ctx, "bench-probe", coord.Message{Kind: "bench", Body: body}, messageTTL)
	if err != nil {
		return 0, fmt.Errorf("bench: probe message: %w", err)
	}
	resp, err := cli.Get(ctx, sent.Key)
	if err != nil {
		return 0, fmt.Errorf("bench: probe message: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return 0, fmt.Errorf("bench: probe message %s vanished", sent.Key)
	}
	_, err = cli.Delete(ctx, sent.Key)
	return len(resp.Kvs[0].Value), err
}

// waitEmpty waits until nothing is left under prefix, checking every 10 ms
// for at most deliveryTimeout.
func waitEmpty(ctx context.Context, cli *clientv3.Client, prefix string) error {
	ctx, cancel := context.WithTimeout(ctx, deliveryTimeout)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			return fmt.Errorf("bench: wait for %s to empty: %w", prefix, err)
		}
		if resp.Count == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("bench: %d keys still under %s: %w", resp.Count, prefix, ctx.Err())
		case <-tick.C:
		}
	}
}

// learnRecord is one pattern as a node stores it when it learns.
type learnRecord struct {
	key string // relative to models/<model>/
	val string
	rec processor.PatternRecord
}

// learnRecords makes n distinct pattern records of the size a node writes
// for a short sequence (about 200 bytes of JSON).
func learnRecords(n int) ([]learnRecord, error) {
	out := make([]learnRecord, n)
	for i := range out {
		vec := sha1.Sum([]byte("vector-" + strconv.Itoa(i)))
		events := [][]string{{"hello", "user-" + strconv.Itoa(i%97)}, {"VCTR|" + hex.EncodeToString(vec[:])}, {"temperature-high"}, {"goodbye"}}
		sum := sha1.Sum(fmt.Append(nil, events))
		rec := processor.PatternRecord{Name: hex.EncodeToString(sum[:]), Events: events, Length: 5, Frequency: int64(1 + i%3),
			Emotives: []processor.Emotives{{{Name: "utility", Value: 0.5}}}, Seq: uint64(i + 1)}
		val, err := rec.MarshalJSON()
		if err != nil {
			return nil, err
		}
		out[i] = learnRecord{key: "patterns/" + rec.Name, val: string(val), rec: rec}
	}
	return out, nil
}

// learns: --concurrency submitters write pattern records to a locked model,
// through a kb.Committer (group commit) and one fenced transaction each, against
// plain puts of the same records.
func (b *bencher) learns(ctx context.Context) ([]benchRow, error) {
	const model = "bench-learn"
	recs, err := learnRecords(1024)
	if err != nil {
		return nil, err
	}
	s, err := b.session(ctx, b.cli)
	if err != nil {
		return nil, err
	}
	defer closeSession(ctx, s)
	lock := coord.NewModelLock(s, model, coord.WithHolder("bench", coord.Hostname()))
	if _, err := lock.Lock(ctx); err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = lock.Unlock(uctx)
	}()
	com := kb.NewCommitter(model, lock.Txn, b.lg, 0, nil)
	cctx, stopCommitter := context.WithCancel(ctx)
	committed := make(chan struct{})
	go func() { defer close(committed); _ = com.Run(cctx) }()
	defer func() { stopCommitter(); <-committed }()

	c := b.o.concurrency
	modelDir := coord.ModelPrefix(model)
	series, err := b.compare(ctx, "learns", 2,
		benchutil.System{Name: "group commit", Run: workers(c, func(ctx context.Context, _, i int) error {
			r := recs[i%len(recs)]
			return com.Submit(ctx, processor.Change{Kind: processor.PutPattern, Pattern: r.rec})
		})},
		benchutil.System{Name: "fenced txn per learn", Run: workers(c, func(ctx context.Context, _, i int) error {
			r := recs[i%len(recs)]
			_, err := lock.Txn(ctx).Then(clientv3.OpPut(modelDir+r.key, r.val)).Commit()
			return err
		})},
		benchutil.System{Name: "put", Run: workers(c, func(ctx context.Context, _, i int) error {
			r := recs[i%len(recs)]
			_, err := b.cli.Put(ctx, "raw/learn/"+r.key, r.val)
			return err
		})})
	if err != nil {
		return nil, err
	}
	return []benchRow{
		rateRow("learn_group_commit", fmt.Sprintf("learns, %s: group commit (kb.Committer)", plural(c, "submitter")), "put", series[0], series[2]),
		rateRow("learn_per_txn", fmt.Sprintf("learns, %s: one fenced txn per learn", plural(c, "submitter")), "put", series[1], series[2]),
	}, nil
}

// crashes: sessions with a registered instance whose client is closed without
// revoking the lease, as when the process dies, one every TTL/samples; the
// time from the close until a registry watch reports the instance removed,
// against the TTL.
func (b *bencher) crashes(ctx context.Context) ([]benchRow, error) {
	n := b.o.crashSamples
	fmt.Fprintf(b.progress, "bench: crash to removal: %s with a %v TTL\n", plural(n, "session"), b.o.crashTTL)
	// The crashed sessions warn that their lease expired: that is the point.
	lg := quieter(b.lg, zap.ErrorLevel)
	var (
		mu      sync.Mutex
		removed = map[string]time.Time{}
		allGone = make(chan struct{})
	)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = fmt.Sprintf("bench-crash-%d", i)
	}
	resp, err := b.cli.Get(ctx, "rev")
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	wctx, stopWatch := context.WithCancel(ctx)
	watching := make(chan struct{})
	var watchErr error // set before watching is closed
	go func() {
		defer close(watching)
		watchErr = coord.WatchInstances(wctx, b.cli, b.lg, resp.Header.Revision+1, func(ev coord.InstanceEvent) {
			if ev.Type != coord.EventRemoved || !slices.Contains(ids, ev.Instance.ID) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if _, seen := removed[ev.Instance.ID]; !seen {
				removed[ev.Instance.ID] = time.Now()
				if len(removed) == n {
					close(allGone)
				}
			}
		})
	}()
	defer func() { stopWatch(); <-watching }()

	clis := make([]*clientv3.Client, n)
	sessions := make([]*coord.Session, n)
	defer func() {
		for i := range n {
			if sessions[i] != nil {
				closeSession(ctx, sessions[i]) // lost by now, or its revoke fails on the closed client
			}
			if clis[i] != nil {
				clis[i].Close()
			}
		}
	}()
	var ttl time.Duration
	for i, id := range ids {
		// A client of its own, not b.dial's: closing it is the crash.
		if clis[i], err = coord.Connect(ctx, b.cfg, lg); err != nil {
			return nil, err
		}
		if sessions[i], err = coord.NewSession(ctx, clis[i], lg, coord.WithTTL(b.o.crashTTL)); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
		ttl = sessions[i].TTL()
		in := benchInstance(id)
		if err := coord.NewRegistry(sessions[i]).Register(ctx, &in); err != nil {
			return nil, fmt.Errorf("bench: %w", err)
		}
	}
	// Crash one every TTL/n, so that the crashes fall at every point of the
	// keep-alive period.
	crashed := make([]time.Time, n)
	start := time.Now()
	for i := range n {
		if err := waitUntil(ctx, start.Add(time.Duration(i)*ttl/time.Duration(n))); err != nil {
			return nil, err
		}
		crashed[i] = time.Now()
		clis[i].Close()
	}
	limit := time.NewTimer(3*ttl + 10*time.Second)
	defer limit.Stop()
	select {
	case <-allGone:
	case <-watching:
		return nil, fmt.Errorf("bench: crash to removal: the registry watch ended: %w", watchErr)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-limit.C:
		mu.Lock()
		defer mu.Unlock()
		return nil, fmt.Errorf("bench: crash to removal: %d of %d crashed instances still registered %v after the crash", n-len(removed), n, 3*ttl+10*time.Second)
	}
	took := make([]time.Duration, n)
	mu.Lock()
	for i, id := range ids {
		took[i] = removed[id].Sub(crashed[i])
	}
	mu.Unlock()
	what := fmt.Sprintf("crash → registry removal, %%s of %d (TTL %v)", n, ttl)
	return []benchRow{
		timeRow("crash_removal_p50", fmt.Sprintf(what, "p50"), "lease TTL", benchutil.Quantile(took, 0.5), ttl),
		timeRow("crash_removal_max", fmt.Sprintf(what, "max"), "lease TTL", benchutil.Quantile(took, 1), ttl),
	}, nil
}

// waitUntil waits until t or the end of ctx.
func waitUntil(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return nil
	}
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// plural is "1 thing" or "n things".
func plural(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return strconv.Itoa(n) + " " + thing + "s"
}
