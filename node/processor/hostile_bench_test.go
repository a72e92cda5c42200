package processor

import (
	"fmt"
	"testing"
)

// BenchmarkDecodeObjectKeys: the cost per key of an observe whose metadata
// or emotives object has n keys stays the same from 1k to 100k keys (it was
// quadratic: 50k keys took 24 s). ns/key is the figure to compare.
func BenchmarkDecodeObjectKeys(b *testing.B) {
	for _, field := range []string{"metadata", "emotives"} {
		for _, n := range []int{1000, 10000, 100000} {
			head := `{"strings":["a"],"vectors":[],"emotives":{},"metadata":{`
			if field == "emotives" {
				head = `{"strings":["a"],"vectors":[],"emotives":{`
			}
			body := []byte(head)
			for i := 0; i < n; i++ {
				if i > 0 {
					body = append(body, ',')
				}
				body = fmt.Appendf(body, `"k%d":%d`, i, i)
			}
			body = append(body, "}}"...)
			b.Run(fmt.Sprintf("%s/keys=%d", field, n), func(b *testing.B) {
				b.SetBytes(int64(len(body)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := DecodeObservation(body); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/key")
			})
		}
	}
}
