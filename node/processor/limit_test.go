package processor

import (
	"errors"
	"strings"
	"testing"
)

// A learn whose pattern record would pass the bound is refused and changes
// nothing; the same STM learns once the bound allows it.
func TestTryLearnRefusesOversizedRecordAndChangesNothing(t *testing.T) {
	p := newTestProcessor(t, DefaultConfig())
	p.SetMaxRecordBytes(4096)
	big := strings.Repeat("x", 5000)
	observeStrings(t, p, big)
	mustObserve(t, p, Observation{Strings: []string{"y"}, Vectors: [][]Number{{Int(1), Int(2)}}, Emotives: []EmotiveValue{{"joy", Int(1)}}})
	wm, tm := p.WorkingMemory(), p.Time()
	_, _, err := p.TryLearn()
	if !errors.Is(err, ErrTooLarge) || ErrorCode(err) != "CHANGE_TOO_LARGE" {
		t.Fatalf("learn of a %d-byte symbol under a 4096-byte bound: %v", len(big), err)
	}
	if !equalEvents(p.WorkingMemory(), wm) || p.Time() != tm || p.Stats().Models != 0 || p.Stats().Vectors != 0 {
		t.Fatalf("a refused learn changed the processor: wm %d events, time %d, %+v", len(p.WorkingMemory()), p.Time(), p.Stats())
	}
	p.SetMaxRecordBytes(1 << 20)
	name, ch, err := p.TryLearn()
	if err != nil || name == "" || len(ch) != 2 {
		t.Fatalf("learn under a larger bound: %q %v %v", name, ch, err)
	}
	for _, c := range ch {
		var b []byte
		if c.Kind == PutPattern {
			b, _ = c.Pattern.MarshalJSON()
		} else {
			b, _ = c.Vector.MarshalJSON()
		}
		if len(b) > 4096 && c.Kind == PutVector {
			t.Fatalf("vector record of %d bytes", len(b))
		}
	}
}

// An observe that would auto-learn an oversized record is refused before it
// changes anything, time included; a bound that holds the record lets it pass.
func TestObserveRefusesOversizedAutoLearn(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxSequenceLength = 2
	p := newTestProcessor(t, cfg)
	p.SetMaxRecordBytes(2048)
	observeStrings(t, p, "a")
	wm, tm := p.WorkingMemory(), p.Time()
	_, _, err := p.Observe(Observation{Strings: []string{strings.Repeat("z", 2048)}})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("observe that auto-learns a large record: %v", err)
	}
	if !equalEvents(p.WorkingMemory(), wm) || p.Time() != tm || p.Stats().Models != 0 {
		t.Fatalf("a refused observe changed the processor: wm %v, time %d (was %d), %+v", p.WorkingMemory(), p.Time(), tm, p.Stats())
	}
	// A record exactly as large as its encoding passes at that bound.
	res, ch := observeStrings(t, p, "b")
	if res.AutoLearnedModel == "" || len(ch) != 1 {
		t.Fatalf("small auto-learn: %+v %v", res, ch)
	}
	b, _ := ch[0].Pattern.MarshalJSON()
	q := newTestProcessor(t, cfg)
	q.SetMaxRecordBytes(len(b) + 40) // the bound counts 19- and 20-digit counts; the record has 1-digit ones
	observeStrings(t, q, "a")
	if _, _, err := q.Observe(Observation{Strings: []string{"b"}}); err != nil {
		t.Fatalf("a record within the bound was refused: %v", err)
	}
}
