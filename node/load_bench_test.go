package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
	"github.com/kato-coord/kato/node/processor/processortest"
)

// BenchmarkModelLoad builds models of each size twice on one etcd: in the
// layout before format version 1 (one key per pattern, as the nodes of
// that version wrote them) and as a snapshot (what a checkpoint or an import
// writes). It prints, per size and measured in one run:
//
//   - the cold load of the snapshot (what a node does before it serves:
//     kb.Load streaming the model at one revision, decoding, building the
//     processor as records arrive) against its parts done separately:
//     streaming the same keys raw with GetStream, then processor.Load from
//     records already in memory (RAW/LOAD: ≥ 0.5 is the goal at 1M);
//   - the growth of the load time from the smallest size to each larger one
//     (≤ 12× from 100k to 1M is the goal);
//   - the cold load of the old layout, for comparison;
//   - etcd's db bytes per pattern of each layout, after compaction and
//     defragmentation (the snapshot's ≤ 40% of the old one's is the goal).
//
// KATO_LOAD_BENCH_ROUNDS sets how often each load runs (the fastest counts).
//
//	go test ./node/ -run '^$' -bench ModelLoad -benchtime 1x -timeout 60m
//	KATO_LOAD_BENCH_SIZES=10000,100000 go test ./node/ -run '^$' -bench ModelLoad -benchtime 1x
//
// The default sizes are 100k and 1M patterns (the 1M models take some
// minutes to write).
func BenchmarkModelLoad(b *testing.B) {
	sizes := []int{100_000, 1_000_000}
	if s := os.Getenv("KATO_LOAD_BENCH_SIZES"); s != "" {
		sizes = nil
		for _, f := range strings.Split(s, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || n < 1 {
				b.Fatalf("KATO_LOAD_BENCH_SIZES: %q is not a size", f)
			}
			sizes = append(sizes, n)
		}
	}
	rounds := 3
	if s := os.Getenv("KATO_LOAD_BENCH_ROUNDS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil || rounds < 1 {
			b.Fatalf("KATO_LOAD_BENCH_ROUNDS: %q", s)
		}
	}
	etc := etcdtest.New(b)
	cli := etc.Client(b)
	coord.Namespace(cli, coord.DefaultPrefix)
	ctx := context.Background()
	type row struct {
		n                              int
		load, stream, build, oldLoad   time.Duration
		oldBytes, newBytes, chunkBytes int64
		heap, rss                      int64 // held by a loaded processor: Go heap in use, resident memory
	}
	var rows []row
	for _, n := range sizes {
		r := row{n: n}
		oldModel, newModel := fmt.Sprintf("old-%d", n), fmt.Sprintf("snap-%d", n)
		// Each layout is measured alone in etcd, and every size starts
		// from an empty one: this process holds the in-process etcd's
		// index too, and a million old-layout keys in it (or the models
		// of the sizes before) would be marked by every collection of the
		// loads measured after them.
		before := dbSize(b, ctx, cli)
		writeOldLayout(b, ctx, cli, oldModel, n)
		r.oldBytes = dbSize(b, ctx, cli) - before

		fastest := func(d *time.Duration, t time.Duration) {
			if *d == 0 || t < *d {
				*d = t
			}
		}
		load := func(model string, d *time.Duration) {
			nd, err := New(Config{ID: "bench", Model: model, Port: 0, ListenHost: "127.0.0.1", AdvertiseHost: "127.0.0.1"}, cli, zap.NewNop())
			if err != nil {
				b.Fatal(err)
			}
			nd.ln.Close()
			heap0, rss0 := memNow()
			start := time.Now()
			p, _, err := nd.engine.load(ctx)
			if err != nil {
				b.Fatal(err)
			}
			fastest(d, time.Since(start))
			if got := p.Stats().Models; got != n {
				b.Fatalf("loaded %d patterns of %s, want %d", got, model, n)
			}
			if model == newModel {
				heap1, rss1 := memNow()
				r.heap, r.rss = heap1-heap0, rss1-rss0
			}
			runtime.KeepAlive(p)
		}
		rawParts := func() {
			// The same keys streamed and kept as bytes; the build from
			// records already decoded.
			runtime.GC()
			start := time.Now()
			var raw [][]byte
			pfx := coord.ModelPrefix(newModel)
			ch, err := cli.KV.GetStream(ctx, pfx, clientv3.WithRange(clientv3.GetPrefixRangeEnd(pfx)))
			if err != nil {
				b.Fatal(err)
			}
			for resp := range ch {
				if err := resp.Err(); err != nil {
					b.Fatal(err)
				}
				for _, kv := range resp.Kvs {
					raw = append(raw, kv.Value)
				}
			}
			fastest(&r.stream, time.Since(start))
			raw = nil
			pats := benchRecords(n)
			runtime.GC()
			start = time.Now()
			if _, err := processor.Load(processor.DefaultConfig(), "bench", "bench", pats, nil); err != nil {
				b.Fatal(err)
			}
			fastest(&r.build, time.Since(start))
		}
		load(oldModel, &r.oldLoad)
		deleteModel(b, ctx, cli, oldModel)
		before = dbSize(b, ctx, cli)
		h := writeSnapshot(b, ctx, cli, newModel, n)
		r.newBytes, r.chunkBytes = dbSize(b, ctx, cli)-before, h.Bytes
		for i := 0; i < b.N*rounds; i++ {
			if i%2 == 0 {
				load(newModel, &r.load)
				rawParts()
			} else {
				rawParts()
				load(newModel, &r.load)
			}
		}
		deleteModel(b, ctx, cli, newModel)
		dbSize(b, ctx, cli)
		rows = append(rows, r)
		b.Logf("%d patterns: load %v, raw stream %v + raw build %v, old layout %v; db bytes old %d, snapshot %d",
			n, r.load, r.stream, r.build, r.oldLoad, r.oldBytes, r.newBytes)
		b.ReportMetric(r.load.Seconds(), fmt.Sprintf("load-s/%d", n))
		b.ReportMetric((r.stream+r.build).Seconds()/r.load.Seconds(), fmt.Sprintf("raw/load/%d", n))
	}
	fmt.Printf("# model load, %d CPUs, %s/%s, %s; etcd 3.7 in-process (no fsync), one member\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("%-10s %10s %12s %12s %14s %8s %12s %12s %12s %10s %12s %12s\n", "PATTERNS", "LOAD", "RAW STREAM", "RAW BUILD", "RAW/LOAD RATE", "GROWTH",
		"OLD LOAD", "OLD B/PAT", "SNAP B/PAT", "SNAP/OLD", "HEAP B/PAT", "RSS B/PAT")
	for _, r := range rows {
		fmt.Printf("%-10d %10s %12s %12s %14.2f %7.1fx %12s %12.0f %12.0f %10.2f %12.0f %12.0f\n", r.n, r.load.Round(time.Millisecond), r.stream.Round(time.Millisecond),
			r.build.Round(time.Millisecond), (r.stream+r.build).Seconds()/r.load.Seconds(), r.load.Seconds()/rows[0].load.Seconds(),
			r.oldLoad.Round(time.Millisecond), float64(r.oldBytes)/float64(r.n), float64(r.newBytes)/float64(r.n), float64(r.newBytes)/float64(r.oldBytes),
			float64(r.heap)/float64(r.n), float64(r.rss)/float64(r.n))
	}
}

// deleteModel deletes every key of model.
func deleteModel(b *testing.B, ctx context.Context, cli *clientv3.Client, model string) {
	b.Helper()
	if _, err := cli.Delete(ctx, coord.ModelPrefix(model), clientv3.WithPrefix()); err != nil {
		b.Fatal(err)
	}
}

// memNow returns the Go heap in use and the process's resident memory after
// a collection that gives freed memory back to the OS.
func memNow() (heap, rss int64) {
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b, _ := os.ReadFile("/proc/self/statm")
	var size, res int64
	fmt.Sscan(string(b), &size, &res)
	return int64(ms.HeapInuse), res * int64(os.Getpagesize())
}

// dbSize compacts etcd's history, defragments it and returns its db size.
func dbSize(b *testing.B, ctx context.Context, cli *clientv3.Client) int64 {
	b.Helper()
	resp, err := cli.Put(ctx, "compact-marker", "") // a revision after any delete: its tombstones go too
	if err != nil {
		b.Fatal(err)
	}
	if _, err := cli.Compact(ctx, resp.Header.Revision, clientv3.WithCompactPhysical()); err != nil && !errors.Is(err, rpctypes.ErrCompacted) {
		b.Fatal(err)
	}
	ep := cli.Endpoints()[0]
	if _, err := cli.Defragment(ctx, ep); err != nil {
		b.Fatal(err)
	}
	st, err := cli.Status(ctx, ep)
	if err != nil {
		b.Fatal(err)
	}
	return st.DbSize
}

// benchRecords returns n patterns of the benchmark shape
// (processortest.BenchPattern), in learn order, the same for every call with n.
func benchRecords(n int) []processor.PatternRecord {
	out := make([]processor.PatternRecord, 0, n)
	rng := rand.New(rand.NewPCG(uint64(n), 7))
	for i := range n {
		out = append(out, processortest.BenchPattern(rng, i))
	}
	return out
}

// writeOldLayout writes the bench records as nodes before format version 1
// stored them: one key per pattern, 120 to a transaction.
func writeOldLayout(b *testing.B, ctx context.Context, cli *clientv3.Client, model string, n int) {
	b.Helper()
	start := time.Now()
	prefix := coord.ModelPrefix(model)
	recs := benchRecords(n)
	const perTxn, workers = 120, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var ops []clientv3.Op
			flush := func() error {
				if len(ops) == 0 {
					return nil
				}
				_, err := cli.Txn(ctx).Then(ops...).Commit()
				ops = ops[:0]
				return err
			}
			for i := w; i < n; i += workers {
				val, err := recs[i].MarshalJSON()
				if err != nil {
					errs <- err
					return
				}
				ops = append(ops, clientv3.OpPut(prefix+"patterns/"+recs[i].Name, string(val)))
				if len(ops) == perTxn {
					if err := flush(); err != nil {
						errs <- err
						return
					}
				}
			}
			if err := flush(); err != nil {
				errs <- err
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		b.Fatal(err)
	}
	b.Logf("wrote %d patterns in the old layout in %v", n, time.Since(start).Round(time.Millisecond))
}

// writeSnapshot writes the bench records as one snapshot, under the model's
// lock.
func writeSnapshot(b *testing.B, ctx context.Context, cli *clientv3.Client, model string, n int) kb.Head {
	b.Helper()
	start := time.Now()
	s, err := coord.NewSession(ctx, cli, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close(ctx)
	lock := coord.NewModelLock(s, model)
	if _, err := lock.Lock(ctx); err != nil {
		b.Fatal(err)
	}
	defer lock.Unlock(ctx)
	im := kb.NewImport(model, lock.Txn, nil)
	for _, r := range benchRecords(n) {
		if err := im.Add(ctx, processor.Change{Kind: processor.PutPattern, Pattern: r}); err != nil {
			b.Fatal(err)
		}
	}
	h, err := im.Publish(ctx, "bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("wrote %d patterns as a snapshot of %d chunks, %d bytes, in %v", n, h.Chunks, h.Bytes, time.Since(start).Round(time.Millisecond))
	return h
}
