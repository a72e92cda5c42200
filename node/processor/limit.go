package processor

// This file bounds the size of the records a learn may produce
// (SetMaxRecordBytes, TryLearn): a learn that would exceed it changes nothing.

import (
	"fmt"
	"math"
	"strings"
)

// SetMaxRecordBytes bounds the encoded size of every record (PatternRecord or
// VectorRecord JSON) a call may ask its caller to store: a learn, manual or
// automatic, that would produce a larger record is refused with an error
// wrapping ErrTooLarge, and then changes nothing at all (STM, time, emotives
// and knowledge base stay as they were). 0, the default, means no bound.
// Learn ignores the bound; TryLearn and Observe keep it.
func (p *Processor) SetMaxRecordBytes(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.maxRecord = max(n, 0)
}

// TryLearn is Learn under the record bound of SetMaxRecordBytes: when a
// record of the learn would be larger, it returns an error wrapping
// ErrTooLarge and changes nothing.
func (p *Processor) TryLearn() (string, Changes, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.publish()
	return p.tryLearn(p)
}

// checkLearn returns an ErrTooLarge error when a learn of seq, with the
// vectors deferred, the emotives emoBuf and the emotive window persistence,
// would produce a record larger than the bound. It changes nothing; call it
// with mu held.
func (p *Processor) checkLearn(seq [][]string, deferred []deferredVector, emoBuf [][]EmotiveValue, persistence int) error {
	limit := p.maxRecord
	if limit <= 0 {
		return nil
	}
	for _, d := range deferred {
		if 96+32*d.v.Len() <= limit || p.kb.vectors.has(d.name) {
			continue
		}
		b, err := VectorRecord{Name: d.name, Vector: d.v, Seq: math.MaxUint64}.MarshalJSON()
		if err == nil && len(b) > limit {
			return fmt.Errorf("%w: the learn would store vector %s (%d elements) as a record of %d bytes; one record holds at most %d bytes",
				ErrTooLarge, d.name, d.v.Len(), len(b), limit)
		}
	}
	length, bound := 0, 256 // name, counts and punctuation
	for _, ev := range seq {
		length += len(ev)
		bound += 3
		for _, s := range ev {
			bound += 6*len(s) + 3 // every byte escaped, quotes and comma
		}
	}
	if length <= 1 {
		return nil
	}
	// The emotive window the learn would leave (kb.learn).
	var window []Emotives
	if pi, ok := p.kb.lookupName(modelHash(seq)); ok {
		window = p.kb.window(pi)
	}
	if avg := averageEmotives(emoBuf); len(avg) > 0 {
		window = append(window[:len(window):len(window)], dropZeros(avg))
		if len(window) > persistence {
			window = window[len(window)-persistence:]
		}
	}
	for _, e := range window {
		b, err := e.appendJSON(nil)
		if err != nil {
			return nil // not storable at all; the store reports it
		}
		bound += len(b) + 1
	}
	if bound <= limit {
		return nil
	}
	rec := PatternRecord{Name: strings.Repeat("0", 40), Events: seq, Length: length, Frequency: math.MaxInt64, Emotives: window, Seq: math.MaxUint64}
	b, err := rec.MarshalJSON()
	if err != nil || len(b) <= limit {
		return nil
	}
	return fmt.Errorf("%w: the learn would store a pattern of %d symbols in %d events as a record of %d bytes; one record holds at most %d bytes (clear the working memory, or learn shorter sequences)",
		ErrTooLarge, length, len(seq), len(b), limit)
}
