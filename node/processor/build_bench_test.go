// This file measures the memory a loaded knowledge base costs per pattern:
// built through a Builder from records streamed in Seq order, against Load
// from a full []PatternRecord (the old path), in the same run.
package processor_test

import (
	"math/rand/v2"
	"os"
	"runtime"
	"runtime/metrics"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kato-coord/kato/node/processor"
	"github.com/kato-coord/kato/node/processor/processortest"
)

// benchRecord returns pattern i of the node's load benchmark shape
// (processortest.BenchPattern; writeBenchModel in node/load_bench_test.go)
// after a trip through its JSON form, as a record read back from a store
// is, so its strings are what a decoder hands the builder.
func benchRecord(tb testing.TB, rng *rand.Rand, i int) processor.PatternRecord {
	rec := processortest.BenchPattern(rng, i)
	b, err := rec.MarshalJSON()
	if err != nil {
		tb.Fatal(err)
	}
	var out processor.PatternRecord
	if err := out.UnmarshalJSON(b); err != nil {
		tb.Fatal(err)
	}
	return out
}

// buildSizes are the model sizes of BenchmarkBuildMemory: KATO_BUILD_SIZES
// (comma-separated) or 100k and 1M.
func buildSizes(tb testing.TB) []int {
	env := os.Getenv("KATO_BUILD_SIZES")
	if env == "" {
		return []int{100_000, 1_000_000}
	}
	var out []int
	for _, f := range strings.Split(env, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			tb.Fatalf("KATO_BUILD_SIZES: bad size %q", f)
		}
		out = append(out, n)
	}
	return out
}

// heapSampler records the largest heap in use (live and garbage objects)
// seen every millisecond until stopped.
type heapSampler struct {
	stop chan struct{}
	done sync.WaitGroup
	peak uint64
}

const heapObjects = "/memory/classes/heap/objects:bytes"

func startHeapSampler() *heapSampler {
	s := &heapSampler{stop: make(chan struct{})}
	s.done.Add(1)
	go func() {
		defer s.done.Done()
		sample := []metrics.Sample{{Name: heapObjects}}
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			metrics.Read(sample)
			s.peak = max(s.peak, sample[0].Value.Uint64())
			select {
			case <-s.stop:
				return
			case <-tick.C:
			}
		}
	}()
	return s
}

// Stop stops the sampler and returns the peak.
func (s *heapSampler) Stop() uint64 {
	close(s.stop)
	s.done.Wait()
	return s.peak
}

// memUse is what one way of loading cost.
type memUse struct {
	inuse, peak, sys uint64 // after GC; sampled peak; runtime's Sys at the end
	took             time.Duration
}

// measure runs load, which returns the processor it built, and reports the
// heap it holds on to after a GC and the peak while it ran, relative to
// before.
func measure(load func() *processor.Processor) (memUse, *processor.Processor) {
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	s := startHeapSampler()
	start := time.Now()
	p := load()
	took := time.Since(start)
	peak := s.Stop()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(p)
	return memUse{inuse: after.HeapInuse - before.HeapInuse, peak: peak - before.HeapAlloc, sys: after.Sys, took: took}, p
}

// BenchmarkBuildMemory builds the benchmark-shaped model of each size
// (KATO_BUILD_SIZES) through a Builder fed record by record in Seq order,
// and in the same run through Load from the full record list (the old
// path), and prints heap bytes per pattern for both and their ratio. Run it
// with -benchtime=1x: one build per size is the measurement.
func BenchmarkBuildMemory(b *testing.B) {
	for _, n := range buildSizes(b) {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			for range b.N {
				const seed = 7
				stream, ps := measure(func() *processor.Processor {
					rng := rand.New(rand.NewPCG(seed, uint64(n)))
					bl := processor.NewBuilder()
					for i := range n {
						if err := bl.AddPattern(benchRecord(b, rng, i)); err != nil {
							b.Fatal(err)
						}
					}
					p, err := bl.Build(processor.DefaultConfig(), "bench", "bench")
					if err != nil {
						b.Fatal(err)
					}
					return p
				})
				statsStream := ps.Stats()
				ps = nil
				runtime.GC()
				old, pl := measure(func() *processor.Processor {
					rng := rand.New(rand.NewPCG(seed, uint64(n)))
					recs := make([]processor.PatternRecord, n)
					for i := range recs {
						recs[i] = benchRecord(b, rng, i)
					}
					p, err := processor.Load(processor.DefaultConfig(), "bench", "bench", recs, nil)
					if err != nil {
						b.Fatal(err)
					}
					return p
				})
				if st := pl.Stats(); st != statsStream {
					b.Fatalf("stats differ: builder %+v, load %+v", statsStream, st)
				}
				pl = nil
				per := func(x uint64) float64 { return float64(x) / float64(n) }
				b.Logf("n=%d builder: %4.0f B/pattern in use after GC, peak %4.0f B/pattern, Sys %4d MB, %v",
					n, per(stream.inuse), per(stream.peak), stream.sys>>20, stream.took.Round(time.Millisecond))
				b.Logf("n=%d load:    %4.0f B/pattern in use after GC, peak %4.0f B/pattern, Sys %4d MB, %v",
					n, per(old.inuse), per(old.peak), old.sys>>20, old.took.Round(time.Millisecond))
				b.Logf("n=%d builder/load: in use %.2f, peak %.2f", n,
					float64(stream.inuse)/float64(old.inuse), float64(stream.peak)/float64(old.peak))
				b.ReportMetric(per(stream.inuse), "B/pattern")
				b.ReportMetric(per(stream.peak), "peakB/pattern")
				b.ReportMetric(float64(stream.inuse)/float64(old.inuse), "inuse-ratio")
				b.ReportMetric(float64(stream.peak)/float64(old.peak), "peak-ratio")
			}
		})
	}
}

// BenchmarkFreeze times Freeze on the benchmark-shaped model of each size
// (KATO_BUILD_SIZES), every tenth pattern with an emotive window, and in
// the same run Processor.Patterns (every record materialised under the
// lock, what a checkpoint would cost without a frozen view), and prints
// their ratio. ns/op is one Freeze, with a collection between Freezes.
func BenchmarkFreeze(b *testing.B) {
	for _, n := range buildSizes(b) {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			rng := rand.New(rand.NewPCG(7, uint64(n)))
			bl := processor.NewBuilder()
			for i := range n {
				r := processortest.BenchPattern(rng, i)
				if i%10 == 0 {
					r.Emotives = []processor.Emotives{{{"joy", 0.5}}}
				}
				if err := bl.AddPattern(r); err != nil {
					b.Fatal(err)
				}
			}
			p, err := bl.Build(processor.DefaultConfig(), "bench", "bench")
			if err != nil {
				b.Fatal(err)
			}
			runtime.GC()
			start := time.Now()
			if got := len(p.Patterns()); got != n {
				b.Fatalf("%d records, want %d", got, n)
			}
			all := time.Since(start)
			runtime.GC()
			b.ResetTimer()
			var f *processor.Frozen
			for range b.N {
				b.StopTimer()
				f = nil
				runtime.GC() // the time the lock is held, not the collection of earlier copies
				b.StartTimer()
				f = p.Freeze()
			}
			b.StopTimer()
			if np, _ := f.Counts(); np != n {
				b.Fatalf("frozen %d patterns, want %d", np, n)
			}
			per := time.Duration(b.Elapsed().Nanoseconds() / int64(b.N))
			b.Logf("n=%d Freeze %v, Patterns() %v: Freeze/Patterns %.4f", n, per, all.Round(time.Millisecond), float64(per)/float64(all))
			b.ReportMetric(float64(per)/float64(all), "freeze/patterns")
		})
	}
}
