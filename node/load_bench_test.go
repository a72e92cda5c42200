package node

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/coord/etcdtest"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// BenchmarkModelLoad measures the cold load of a model (what a node does
// before it serves: kb.Load streaming the model at one revision, decoding
// and building the processor) against its parts done separately in the same
// run on the same etcd: streaming the same keys raw with GetStream, then
// processor.Load from records already in memory. It prints, per size, the
// load time, the raw time, their ratio, and the growth of the load time
// from the smallest size to each larger one; for sizes up to 200k it also
// times the paged Get(WithLimit(1000)) scan that Load replaced.
// KATO_LOAD_BENCH_ROUNDS sets how often each part runs (the fastest counts).
//
//	go test ./node/ -run '^$' -bench ModelLoad -benchtime 1x -timeout 60m
//	KATO_LOAD_BENCH_SIZES=10000,100000 go test ./node/ -run '^$' -bench ModelLoad -benchtime 1x
//
// The default sizes are 100k and 1M patterns (the 1M model takes some
// minutes to write and about 4 GB of memory).
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
	etc := etcdtest.New(b)
	cli := etc.Client(b)
	coord.Namespace(cli, coord.DefaultPrefix)
	ctx := context.Background()
	type row struct {
		n                         int
		load, stream, build, page time.Duration
	}
	var rows []row
	for _, n := range sizes {
		model := fmt.Sprintf("bench-%d", n)
		writeBenchModel(b, ctx, cli, model, n)
		nd, err := New(Config{ID: "bench", Model: model, Port: 0, ListenHost: "127.0.0.1", AdvertiseHost: "127.0.0.1"}, cli, zap.NewNop())
		if err != nil {
			b.Fatal(err)
		}
		nd.ln.Close()
		r := row{n: n}
		// Each part runs KATO_LOAD_BENCH_ROUNDS times (default 3), the load
		// and the raw parts taking turns in either order; the table has the
		// fastest of each, so that a busy machine hits both alike.
		rounds := 3
		if s := os.Getenv("KATO_LOAD_BENCH_ROUNDS"); s != "" {
			if rounds, err = strconv.Atoi(s); err != nil || rounds < 1 {
				b.Fatalf("KATO_LOAD_BENCH_ROUNDS: %q", s)
			}
		}
		fastest := func(d *time.Duration, t time.Duration) {
			if *d == 0 || t < *d {
				*d = t
			}
		}
		load := func() {
			runtime.GC()
			start := time.Now()
			p, _, err := nd.engine.load(ctx)
			if err != nil {
				b.Fatal(err)
			}
			fastest(&r.load, time.Since(start))
			if got := p.Stats().Models; got != n {
				b.Fatalf("loaded %d patterns, want %d", got, n)
			}
		}
		rawParts := func() {
			// The same stream, kept as bytes; the build from records
			// already decoded.
			runtime.GC()
			start := time.Now()
			var raw []kb.Record
			if _, err := kb.Load(ctx, cli.KV, zap.NewNop(), model, func(rec kb.Record) error { raw = append(raw, rec); return nil }, nil); err != nil {
				b.Fatal(err)
			}
			fastest(&r.stream, time.Since(start))
			pats := make([]processor.PatternRecord, 0, n)
			for _, rec := range raw {
				c, ok, err := decodeRecord(rec)
				if err != nil {
					b.Fatal(err)
				}
				if ok {
					pats = append(pats, c.Pattern)
				}
			}
			raw = nil
			runtime.GC()
			start = time.Now()
			if _, err := processor.Load(processor.DefaultConfig(), "bench", "bench", pats, nil); err != nil {
				b.Fatal(err)
			}
			fastest(&r.build, time.Since(start))
		}
		for i := 0; i < b.N*rounds; i++ {
			if i%2 == 0 {
				load()
				rawParts()
			} else {
				rawParts()
				load()
			}
		}
		if n <= 200_000 {
			start := time.Now()
			if got := pagedScan(b, ctx, cli, model); got != n {
				b.Fatalf("paged scan read %d records, want %d", got, n)
			}
			r.page = time.Since(start)
		}
		rows = append(rows, r)
		b.Logf("%d patterns: load %v, raw stream %v + raw build %v, paged scan %v", n, r.load, r.stream, r.build, r.page)
		b.ReportMetric(r.load.Seconds(), fmt.Sprintf("load-s/%d", n))
		b.ReportMetric((r.stream+r.build).Seconds()/r.load.Seconds(), fmt.Sprintf("raw/load/%d", n))
	}
	fmt.Printf("# model load, %d CPUs, %s/%s, %s; etcd 3.7 in-process (no fsync), one member\n", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version())
	fmt.Printf("%-10s %10s %12s %12s %12s %14s %12s %14s\n", "PATTERNS", "LOAD", "RAW STREAM", "RAW BUILD", "RAW TOTAL", "RAW/LOAD RATE", "GROWTH", "PAGED SCAN")
	for _, r := range rows {
		paged := "-"
		if r.page > 0 {
			paged = r.page.Round(time.Millisecond).String()
		}
		fmt.Printf("%-10d %10s %12s %12s %12s %14.2f %11.1fx %14s\n", r.n, r.load.Round(time.Millisecond), r.stream.Round(time.Millisecond),
			r.build.Round(time.Millisecond), (r.stream + r.build).Round(time.Millisecond), (r.stream+r.build).Seconds()/r.load.Seconds(),
			r.load.Seconds()/rows[0].load.Seconds(), paged)
	}
}

// writeBenchModel writes n patterns of 2 to 4 events of 1 to 3 symbols
// (from 10,000 symbols) into model, 120 to a transaction.
func writeBenchModel(b *testing.B, ctx context.Context, cli *clientv3.Client, model string, n int) {
	b.Helper()
	start := time.Now()
	prefix := coord.ModelPrefix(model)
	const perTxn, workers = 120, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(n), uint64(w)))
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
				evs := make([][]string, 2+rng.IntN(3))
				length := 0
				for e := range evs {
					evs[e] = make([]string, 1+rng.IntN(3))
					for s := range evs[e] {
						evs[e][s] = "sym" + strconv.Itoa(rng.IntN(10_000))
					}
					length += len(evs[e])
				}
				evs[0] = append(evs[0], "p"+strconv.Itoa(i)) // every pattern distinct
				length++
				rec := processor.PatternRecord{Name: processor.ModelName(evs), Events: evs, Length: length, Frequency: 1 + int64(rng.IntN(3)),
					Emotives: []processor.Emotives{}, Seq: uint64(i)}
				val, err := rec.MarshalJSON()
				if err != nil {
					errs <- err
					return
				}
				ops = append(ops, clientv3.OpPut(prefix+patternsDir+rec.Name, string(val)))
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
	b.Logf("wrote %d patterns in %v", n, time.Since(start).Round(time.Millisecond))
}

// pagedScan reads model the way kb.Load did before it streamed, and still
// does against an etcd without RangeStream: pages of 1000 keys at one
// revision, each page making etcd count the rest.
func pagedScan(b *testing.B, ctx context.Context, cli *clientv3.Client, model string) int {
	n := 0
	if _, err := kb.Load(ctx, noRangeStream{cli.KV}, zap.NewNop(), model, func(kb.Record) error { n++; return nil }, nil); err != nil {
		b.Fatal(err)
	}
	return n
}

// noRangeStream is the KV of an etcd older than 3.7.
type noRangeStream struct{ clientv3.KV }

func (noRangeStream) GetStream(context.Context, string, ...clientv3.OpOption) (clientv3.GetStreamChan, error) {
	return nil, status.Error(codes.Unimplemented, "no RangeStream")
}
