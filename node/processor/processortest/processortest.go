// Package processortest makes test data for the processor shared by tests
// and benchmarks of several packages: the benchmark-shaped pattern and
// symbols that do not compress. Only tests import it.
package processortest

import (
	"math/rand/v2"
	"strconv"

	"github.com/kato-coord/kato/node/processor"
)

// BenchPattern returns pattern i of the benchmark shape, drawing from rng:
// 2 to 4 events of 1 to 3 symbols out of 10,000 ("sym<n>"), plus a symbol
// "p<i>" in the first event that makes it distinct, frequency 1 to 3, no
// emotives, Seq i. The same rng state gives the same pattern.
func BenchPattern(rng *rand.Rand, i int) processor.PatternRecord {
	evs := make([][]string, 2+rng.IntN(3))
	length := 0
	for e := range evs {
		evs[e] = make([]string, 1+rng.IntN(3))
		for s := range evs[e] {
			evs[e][s] = "sym" + strconv.Itoa(rng.IntN(10_000))
		}
		length += len(evs[e])
	}
	evs[0] = append(evs[0], "p"+strconv.Itoa(i))
	length++
	return processor.PatternRecord{Name: processor.ModelName(evs), Events: evs, Length: length,
		Frequency: 1 + int64(rng.IntN(3)), Emotives: []processor.Emotives{}, Seq: uint64(i)}
}

// RandomSymbol returns a symbol of n characters that zstd cannot shrink
// much.
func RandomSymbol(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+/"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}
