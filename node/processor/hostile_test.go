package processor

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
)

// hostileBody builds a body of about n bytes: head, then item repeated
// (separated by commas, item may hold %d for the index), then tail.
func hostileBody(n int, head, item, tail string) []byte {
	var b strings.Builder
	b.WriteString(head)
	for i := 0; b.Len() < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		if strings.Contains(item, "%d") {
			fmt.Fprintf(&b, item, i)
		} else {
			b.WriteString(item)
		}
	}
	b.WriteString(tail)
	return []byte(b.String())
}

const obsTail = `],"vectors":[],"emotives":{}}`

// hostileBodies are the shapes of issue 18 and the older ones, each about
// size bytes, with the error each must give (nil: accepted).
func hostileBodies(size int) []struct {
	name string
	body []byte
	want error
} {
	return []struct {
		name string
		body []byte
		want error
	}{
		{"metadata keys", hostileBody(size, `{"strings":["a"],"vectors":[],"emotives":{},"metadata":{`, `"k%d":0`, `}}`), nil},
		{"emotive keys", hostileBody(size, `{"strings":["a"],"vectors":[],"emotives":{`, `"e%d":1`, `}}`), nil},
		{"repeated metadata key", hostileBody(size, `{"strings":["a"],"vectors":[],"emotives":{},"metadata":{`, `"k":[0]`, `}}`), nil},
		{"empty strings", hostileBody(size, `{"strings":[`, `""`, obsTail), nil},
		{"long vector", hostileBody(size, `{"strings":[],"vectors":[[`, `0`, `]],"emotives":{}}`), nil},
		{"path elements", hostileBody(size, `{"strings":["a"],"vectors":[],"emotives":{},"path":[`, `0`, `]}`), nil},
		{"ignored member", hostileBody(size, `{"strings":["a"],"vectors":[],"emotives":{},"x":[`, `{"a":[0]}`, `]}`), nil},
		{"numbers for strings", hostileBody(size, `{"strings":[`, `0`, obsTail), ErrBadObservation},
		{"list for emotive", hostileBody(size, `{"strings":[],"vectors":[],"emotives":{"e":[`, `0`, `]}}`), ErrBadObservation},
		{"nesting", []byte(strings.Repeat("[", size/2) + strings.Repeat("]", size/2)), ErrBadJSON},
		{"cut short", hostileBody(size, `{"strings":[`, `"a"`, ``), ErrBadJSON},
	}
}

// maxAllocRatio bounds what decoding a body allocates, as a multiple of the
// body (the worst is a long vector: 24 bytes per Number for "0,").
const maxAllocRatio = 16

// Decoding is linear and its memory a small multiple of the body, whatever
// the body holds (issue 18); a wrong shape builds nothing.
func TestDecodeHostileBounded(t *testing.T) {
	const size = 4 << 20
	for _, tt := range hostileBodies(size) {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			start := time.Now()
			_, err := DecodeObservation(tt.body)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			if tt.want == nil && err != nil || tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			ratio := float64(after.TotalAlloc-before.TotalAlloc) / float64(len(tt.body))
			t.Logf("%d bytes: %v, allocated %.1f× the body", len(tt.body), took, ratio)
			if ratio > maxAllocRatio || tt.want != nil && ratio > 2 {
				t.Errorf("allocated %.1f× the body", ratio)
			}
		})
	}
	for _, tt := range []struct{ name, head, item, tail string }{
		{"list for a gene", `{"data":{"max_predictions":[`, `0`, `]}}`},
		{"unknown genes", `{"data":{`, `"g%d":0`, `}}`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			body := hostileBody(size, tt.head, tt.item, tt.tail)
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			_, err := DecodeGeneChanges(body)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrBadGene) {
				t.Fatalf("err %v", err)
			}
			if ratio := float64(after.TotalAlloc-before.TotalAlloc) / float64(len(body)); ratio > 2 {
				t.Errorf("allocated %.1f× the body for a body no gene accepts", ratio)
			}
		})
	}
}

// FuzzEcho: the streaming echo writes what the tree parser writes (a
// repeated key keeps its first position and takes its last value).
func FuzzEcho(f *testing.F) {
	for _, s := range []string{
		`{"b":1,"a":2,"b":3}`,
		`{"a":{"x":1,"x":{"y":1,"y":2}},"b":[{"c":1,"c":1.50}],"a":{"x":[1e2],"z":0}}`,
		`[{"k":1,"k":2,"k":3,"j":0,"j":-0},"\ud800",1E400]`,
		`{"1":1,"2":2,"3":3,"4":4,"5":5,"6":6,"7":7,"8":8,"9":9,"10":10,"1":0}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, treeErr := parseJSON(data)
		p := newDecoder(data)
		syntaxErr := p.checkSyntax(nil)
		if (treeErr == nil) != (syntaxErr == nil) {
			t.Fatalf("tree parser: %v, syntax check: %v", treeErr, syntaxErr)
		}
		if treeErr != nil {
			return
		}
		want, wantErr := v.appendPy(nil)
		got, gotErr := p.echo(nil)
		if (wantErr == nil) != (gotErr == nil) || wantErr == nil && string(got) != string(want) {
			t.Fatalf("echo %q (%v), want %q (%v)", got, gotErr, want, wantErr)
		}
	})
}
