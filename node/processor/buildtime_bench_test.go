// This file times building a knowledge base through a Builder fed in Seq
// order, as a node's load does, at growing sizes, to show how the build
// time grows with the model.
package processor_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/kato-coord/kato/node/processor"
	"github.com/kato-coord/kato/node/processor/processortest"
)

// BenchmarkBuildTime builds the benchmark-shaped model of each size
// (KATO_BUILD_SIZES) through a Builder told the size up front (as a node's
// load is, from the snapshot's head) and fed record by record in Seq order
// without names (a snapshot's records), KATO_BUILD_ROUNDS times (3 unless
// set), sizes taking turns, and prints the fastest wall and process CPU
// time (collector included) per pattern and their growth from the first
// size. The records are made as they are fed, so only the few in flight
// are live, as in a node's load; making them is part of the time. Run it
// with -benchtime=1x.
func BenchmarkBuildTime(b *testing.B) {
	sizes := buildSizes(b)
	rounds := 3
	if s := os.Getenv("KATO_BUILD_ROUNDS"); s != "" {
		var err error
		if rounds, err = strconv.Atoi(s); err != nil || rounds < 1 {
			b.Fatalf("KATO_BUILD_ROUNDS: %q", s)
		}
	}
	wall := make([]time.Duration, len(sizes))
	cpu := make([]time.Duration, len(sizes))
	fastest := func(d *time.Duration, t time.Duration) {
		if *d == 0 || t < *d {
			*d = t
		}
	}
	for range b.N * rounds {
		for i, n := range sizes {
			runtime.GC()
			rng := rand.New(rand.NewPCG(7, uint64(n)))
			start, cpu0 := time.Now(), processor.ProcessCPU()
			bl := processor.NewBuilder()
			bl.Grow(n, 0)
			for i := range n {
				r := processortest.BenchPattern(rng, i)
				r.Name = ""
				if err := bl.AddPattern(r); err != nil {
					b.Fatal(err)
				}
			}
			p, err := bl.Build(processor.DefaultConfig(), "bench", "bench")
			if err != nil {
				b.Fatal(err)
			}
			fastest(&wall[i], time.Since(start))
			fastest(&cpu[i], time.Duration(processor.ProcessCPU()-cpu0))
			runtime.KeepAlive(p)
		}
	}
	for i, n := range sizes {
		b.Logf("n=%d build %v (%.0f ns/pattern, growth %.1fx), CPU %v (%.0f ns/pattern, growth %.1fx)", n,
			wall[i].Round(time.Millisecond), float64(wall[i])/float64(n), float64(wall[i])/float64(wall[0]),
			cpu[i].Round(time.Millisecond), float64(cpu[i])/float64(n), float64(cpu[i])/float64(cpu[0]))
		b.ReportMetric(float64(wall[i])/float64(n), fmt.Sprintf("ns/pattern/%d", n))
	}
}
