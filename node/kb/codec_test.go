package kb

// This file tests the record codec and the framing: random records round
// trip, and no body, however bad, makes the decoder panic or allocate much
// more than its own size.

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"testing"

	"github.com/kato-coord/kato/node/processor"
)

var symbols = []string{"a", "b", "hello", "", "ü", "日本", "\x00", "VECTOR|abc", "a longer symbol with spaces"}

func randomChange(r *rand.Rand) processor.Change {
	switch r.IntN(10) {
	case 0:
		return processor.Change{Kind: processor.ClearAll}
	case 1, 2, 3:
		var v processor.Vector
		n := 1 + r.IntN(20)
		if r.IntN(2) == 0 {
			fs := make([]float64, n)
			for i := range fs {
				fs[i] = []float64{0, math.Copysign(0, -1), 1e308, -5e-324, r.NormFloat64() * 1e6}[r.IntN(5)]
			}
			v = processor.FloatVector(fs...)
		} else {
			is := make([]int64, n)
			for i := range is {
				is[i] = []int64{0, -1, math.MaxInt64, math.MinInt64, r.Int64()}[r.IntN(5)]
			}
			v = processor.IntVector(is...)
		}
		return processor.Change{Kind: processor.PutVector, Vector: processor.VectorRecord{Name: processor.VectorName(v), Vector: v, Seq: r.Uint64()}}
	}
	events := make([][]string, 1+r.IntN(4))
	n := 0
	for i := range events {
		ev := make([]string, 1+r.IntN(4))
		for j := range ev {
			ev[j] = symbols[r.IntN(len(symbols))]
		}
		events[i] = ev
		n += len(ev)
	}
	emo := make([]processor.Emotives, r.IntN(3))
	for i := range emo {
		e := make(processor.Emotives, r.IntN(3))
		for j := range e {
			e[j] = processor.Emotive{Name: symbols[r.IntN(len(symbols))], Value: r.NormFloat64()}
		}
		emo[i] = e
	}
	return processor.Change{Kind: processor.PutPattern, Pattern: processor.PatternRecord{Name: processor.ModelName(events),
		Events: events, Length: n, Frequency: 1 + r.Int64N(math.MaxInt64), Emotives: emo, Seq: r.Uint64()}}
}

func decodeAll(t testing.TB, body []byte, named bool) processor.Changes {
	t.Helper()
	var out processor.Changes
	if err := decodeChanges(body, named, func(ch processor.Change) error { out = append(out, ch); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// Random records decode as they were encoded, through a snapshot chunk and
// through a log group split over several entries, compressed or not.
func TestCodecRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	var in processor.Changes
	var body []byte
	for range 3000 {
		ch := randomChange(r)
		var err error
		if body, err = appendChange(body, ch); err != nil {
			t.Fatal(err)
		}
		in = append(in, ch)
	}
	if got := decodeAll(t, body, true); !reflect.DeepEqual(got, in) {
		for i := range in {
			if !reflect.DeepEqual(got[i], in[i]) {
				t.Fatalf("record %d decoded as %+v, want %+v", i, got[i], in[i])
			}
		}
		t.Fatalf("decoded %d records, want %d", len(got), len(in))
	}
	// Unnamed (a snapshot's records): the same but for the pattern names.
	for i, ch := range decodeAll(t, body, false) {
		if ch.Kind == processor.PutPattern && ch.Pattern.Name != "" {
			t.Fatalf("record %d named %q", i, ch.Pattern.Name)
		}
	}

	// A chunk, compressed when that helps.
	for _, b := range [][]byte{body[:100], body} {
		v := frameChunk(b)
		if v[0] != FormatVersion || (len(b) > 1000) != (v[1] == codecZstd) {
			t.Fatalf("chunk of %d bytes framed as version %d codec %d", len(b), v[0], v[1])
		}
		got, err := openChunk("m", "snap/x/00000000", v)
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("chunk of %d bytes read back as %d bytes, %v", len(b), len(got), err)
		}
	}

	// A group of several entries (with a dropped group before it).
	z, codec := compress(body)
	g := &groups{model: "m", next: 5}
	if out, err := g.add(mustEntry(t, 5, frameLogEntry(codec, 5, false, z[:10]))); out != nil || err != nil {
		t.Fatalf("a first part gave %d bytes, %v", len(out), err)
	}
	parts := 0
	for off := 0; off < len(z); off += 1000 {
		seq := uint64(6 + parts)
		end := min(off+1000, len(z))
		out, err := g.add(mustEntry(t, seq, frameLogEntry(codec, 6, end == len(z), z[off:end])))
		switch {
		case err != nil:
			t.Fatal(err)
		case end < len(z) && out != nil:
			t.Fatal("a group was complete before its last entry")
		case end == len(z) && !bytes.Equal(out, body):
			t.Fatalf("the group read back as %d bytes, want %d", len(out), len(body))
		}
		parts++
	}
	if g.dropped != 1 || g.open || parts < 3 {
		t.Fatalf("%d parts, %d groups dropped (open %v)", parts, g.dropped, g.open)
	}
	if _, err := g.add(mustEntry(t, g.next+1, frameLogEntry(codecRaw, g.next+1, true, body[:5]))); !errors.Is(err, errLogGap) {
		t.Fatalf("an entry after a gap: %v", err)
	}
}

func mustEntry(t *testing.T, seq uint64, v []byte) logEntry {
	t.Helper()
	e, err := openLogEntry("m", logKey(seq), v)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// rleFrame returns a zstd frame of n 128 KiB RLE blocks (n*128 KiB of
// zeros in n*4 bytes), with or without its content size in the header.
func rleFrame(n int, withSize bool) []byte {
	const block = 128 << 10
	b := []byte{0x28, 0xb5, 0x2f, 0xfd}
	if withSize {
		b = append(b, 0x80, 0x38) // a 4-byte content size; a 128 KiB window
		b = binary.LittleEndian.AppendUint32(b, uint32(n*block))
	} else {
		b = append(b, 0x00, 0x38)
	}
	for i := range n {
		h := uint32(block<<3 | 1<<1) // an RLE block
		if i == n-1 {
			h |= 1
		}
		b = append(b, byte(h), byte(h>>8), byte(h>>16), 0)
	}
	return b
}

// A compressed body that would decompress to more than maxBodyBytes is
// refused, not allocated, whether its frame says its size or not.
func TestDecompressionBounded(t *testing.T) {
	if out, err := decompress("m", codecZstd, rleFrame(4, true)); err != nil || len(out) != 4*128<<10 {
		t.Fatalf("a 512 KiB frame: %d bytes, %v", len(out), err) // the frame is well formed
	}
	// A frame that says less than it holds, and two frames, are refused too.
	short := rleFrame(4, true)
	binary.LittleEndian.PutUint32(short[6:], 1000)
	for _, z := range [][]byte{short, append(rleFrame(4, true), rleFrame(600, false)...)} {
		if _, err := decompress("m", codecZstd, z); !errors.Is(err, ErrCorrupt) {
			t.Errorf("a frame holding more than its size: %v, want ErrCorrupt", err)
		}
	}
	for _, withSize := range []bool{true, false} {
		z := rleFrame(maxBodyBytes/(128<<10)+1, withSize)
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		_, err := openChunk("m", "snap/x/00000000", append([]byte{FormatVersion, codecZstd}, z...))
		runtime.ReadMemStats(&ms1)
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("a %d-byte chunk that decompresses to more than %d bytes (size in header: %v): %v, want ErrCorrupt", len(z), maxBodyBytes, withSize, err)
		}
		if a := ms1.TotalAlloc - ms0.TotalAlloc; a > 1<<20 {
			t.Fatalf("refusing it (size in header: %v) allocated %d bytes", withSize, a)
		}
	}
}

// allocFactor bounds what decoding a body may allocate, per byte of the body
// (string headers and slices of the smallest records, names computed).
const allocFactor = 64

// FuzzDecodeChanges: decodeChanges never panics, allocates at most a small
// multiple of its input, fails only with ErrCorrupt, and what it decodes
// encodes to records that decode the same again.
func FuzzDecodeChanges(f *testing.F) {
	r := rand.New(rand.NewPCG(3, 4))
	var body []byte
	for range 20 {
		body, _ = appendChange(body, randomChange(r))
	}
	f.Add(body, true)
	f.Add(body[:len(body)/2], false)
	f.Add([]byte{}, true)
	f.Add([]byte{recClear, recClear}, true)
	f.Add([]byte{9}, true)
	huge := func(kind byte, fields ...uint64) []byte {
		b := []byte{kind}
		for _, x := range fields {
			b = binary.AppendUvarint(b, x)
		}
		return append(b, bytes.Repeat([]byte{1}, 64)...)
	}
	f.Add(huge(recPattern, 1, 1, 1<<40), true)                // events
	f.Add(huge(recPattern, 1, 1, 1, 1<<40), true)             // symbols
	f.Add(huge(recPattern, 1, 1, 0, 1<<40), true)             // emotive windows
	f.Add(huge(recPattern, 1, 1, 0, 1, 1<<40), true)          // emotives
	f.Add(huge(recVector, 0, 1, 1, 1<<40), true)              // float elements (flag 1, then a count)
	f.Add(append(huge(recVector, 0, 1), 0, 0xff, 0xff), true) // int elements
	f.Add(bytes.Repeat([]byte{recPattern, 0, 1, 0, 0}, 50), true)
	f.Fuzz(func(t *testing.T, body []byte, named bool) {
		var ms0, ms1 runtime.MemStats
		var got processor.Changes
		runtime.ReadMemStats(&ms0)
		err := decodeChanges(body, named, func(ch processor.Change) error { got = append(got, ch); return nil })
		runtime.ReadMemStats(&ms1)
		// got's own growth is the test's, not the decoder's: at most
		// twice its final size.
		held := uint64(cap(got)) * uint64(reflect.TypeFor[processor.Change]().Size()) * 2
		if a := ms1.TotalAlloc - ms0.TotalAlloc; a > uint64(allocFactor*len(body))+held+64<<10 {
			t.Fatalf("decoding %d bytes allocated %d", len(body), a)
		}
		if err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		var again []byte
		for _, ch := range got {
			if again, err = appendChange(again, ch); err != nil {
				return // a record the writer refuses (frequency 0, a NaN): nothing to compare
			}
		}
		if back := decodeAll(t, again, named); len(got) > 0 && !reflect.DeepEqual(back, got) {
			t.Fatalf("re-encoded records decode differently:\n%+v\n%+v", back, got)
		}
	})
}

func ExampleAppendExportLine() {
	ch := processor.Change{Kind: processor.PutPattern, Pattern: processor.PatternRecord{
		Name: processor.ModelName([][]string{{"a", "b"}}), Events: [][]string{{"a", "b"}}, Length: 2, Frequency: 1,
		Emotives: []processor.Emotives{}, Seq: 1}}
	line, _ := AppendExportLine(nil, ch)
	fmt.Print(string(line))
	// Output:
	// {"kind":"pattern","key":"patterns/395314cc2f2880a00c3e6e11f1e02d8b8c45a0e4","value":{"name":"395314cc2f2880a00c3e6e11f1e02d8b8c45a0e4","sequence":[["a","b"]],"length":2,"frequency":1,"emotives":[],"seq":1}}
}
