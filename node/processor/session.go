package processor

// This file is the working state one user of a processor computes on (work),
// shared by the instance and KATO 3 sessions, and the Session type.

import (
	"errors"
	"slices"
	"sync/atomic"
)

// work is the working state of one user of a processor: the instance's own
// (its default session, embedded in Processor) or a KATO 3 session's. Every
// session computes against the one knowledge base of its Processor; no
// session sees another's state. It is guarded by the Processor's mu.
type work struct {
	cfg      Config
	time     int64
	stm      [][]string
	emoBuf   [][]EmotiveValue
	current  Emotives
	last     []string
	percept  Percept
	preds    []Prediction
	predSTM  [][]string // the STM preds were computed from (for a session's stored state)
	deferred []deferredVector
}

// snapshot returns the read side of w; call with the Processor's mu held.
func (w *work) snapshot(name string) *view {
	return &view{
		cfg:     w.cfg,
		name:    name,
		time:    w.time,
		stm:     w.stm[:len(w.stm):len(w.stm)],
		preds:   w.preds,
		percept: w.percept,
		current: w.current,
		last:    w.last,
	}
}

// observe is Observe for w (3.2); call with p.mu held. An auto-learn that
// would store a record above p's bound (SetMaxRecordBytes) refuses the
// observation with ErrTooLarge before anything changes, time included.
func (w *work) observe(p *Processor, obs Observation) (ObserveResult, Changes, error) {
	obs, err := obs.check() // done before the lock by the callers: then free
	if err != nil {
		w.time++
		return ObserveResult{}, nil, err
	}
	var vsyms []string
	var percept deferredVector
	if len(obs.Vectors) > 0 {
		v, err := combineVectors(obs.Vectors)
		if err == nil {
			err = p.kb.vectors.checkDims(v)
		}
		if err != nil {
			w.time++
			return ObserveResult{}, nil, err
		}
		percept = deferredVector{VectorName(v), v}
		vsyms = p.kb.vectors.vectorSymbols(v, percept.name)
	}
	strs := slices.Clone(obs.Strings)
	if w.cfg.Sort {
		slices.Sort(strs)
	}
	event := append(vsyms, strs...)
	if event == nil {
		event = []string{}
	}
	// An auto-learn this call would make must fit the record bound: check
	// it before changing anything.
	if l := w.cfg.MaxSequenceLength; l > 0 && p.maxRecord > 0 {
		stm := w.stm[:len(w.stm):len(w.stm)]
		if len(event) > 0 {
			stm = append(stm, event)
		}
		if len(stm) >= l {
			deferred, emo := w.deferred[:len(w.deferred):len(w.deferred)], w.emoBuf[:len(w.emoBuf):len(w.emoBuf)]
			if len(obs.Vectors) > 0 {
				deferred = append(deferred, percept)
			}
			if len(obs.Emotives) > 0 {
				emo = append(emo, obs.Emotives)
			}
			if err := p.checkLearn(stm, deferred, emo, w.cfg.Persistence); err != nil {
				return ObserveResult{}, nil, err
			}
		}
	}
	w.time++
	if len(obs.Vectors) > 0 {
		w.deferred = append(w.deferred, percept)
	}
	w.percept = newPercept(obs, p.name, p.id)
	if len(obs.Emotives) > 0 {
		w.emoBuf = append(w.emoBuf, slices.Clone(obs.Emotives))
		w.current = averageEmotives(w.emoBuf)
	}
	w.last = event
	if len(event) > 0 {
		w.stm = append(w.stm, event)
	}
	if len(obs.Strings) > 0 || len(obs.Vectors) > 0 {
		w.preds = p.pr.predict(p.kb, w.stm, w.cfg.RecallThreshold, w.cfg.MaxPredictions)
		w.predSTM = w.stm[:len(w.stm):len(w.stm)]
	}
	res := ObserveResult{UniqueID: obs.UniqueID}
	var changes Changes
	if l := w.cfg.MaxSequenceLength; l > 0 && len(w.stm) >= l {
		keep := w.stm[len(w.stm)-1]
		n := len(w.stm)
		res.AutoLearnedModel, changes = w.learn(p)
		if n > 1 {
			w.stm = [][]string{keep}
		}
	}
	return res, changes, nil
}

// tryLearn is learn under p's record bound.
func (w *work) tryLearn(p *Processor) (string, Changes, error) {
	if err := p.checkLearn(w.stm, w.deferred, w.emoBuf, w.cfg.Persistence); err != nil {
		return "", nil, err
	}
	name, ch := w.learn(p)
	return name, ch, nil
}

// learn is Learn for w (5.1); call with p.mu held.
func (w *work) learn(p *Processor) (string, Changes) {
	p.kbMu.Lock()
	defer p.kbMu.Unlock()
	var changes Changes
	for _, d := range w.deferred {
		if rec, ok := p.kb.storeVector(d.name, d.v); ok {
			changes = append(changes, Change{Kind: PutVector, Vector: rec})
		}
	}
	w.deferred = nil
	seq := w.stm
	w.stm = nil
	length := 0
	for _, ev := range seq {
		length += len(ev)
	}
	if length <= 1 {
		w.emoBuf = nil
		return "", changes
	}
	rec := p.kb.learn(seq, averageEmotives(w.emoBuf), w.cfg.Persistence)
	w.emoBuf = nil
	changes = append(changes, Change{Kind: PutPattern, Pattern: rec})
	return ModelPrefix + rec.Name, changes
}

// clearWM is clear-working-memory for w (4.1, D9).
func (w *work) clearWM() {
	w.stm, w.emoBuf, w.preds, w.predSTM, w.last = nil, nil, nil, nil, nil
	w.current, w.percept, w.deferred = nil, Percept{}, nil
}

// Session is one KATO 3 session of a processor: its own STM, time, emotive
// buffer, predictions and genes, computed against the processor's shared
// knowledge base. A learn from a session (manual or automatic) writes to
// that knowledge base as an instance learn does, and returns the Changes to
// make durable. Sessions and the instance's own calls run one at a time
// (they share the processor's turn, so a learn is seen whole by every
// later prediction); reads never wait. A Session is bound to the processor
// that made it: after a reload, Restore it into the new one.
type Session struct {
	p    *Processor
	w    work // guarded by p.mu
	view atomic.Pointer[view]
}

// NewSession returns an empty session with the given genes (see
// SessionConfig for KATO 3's names).
func (p *Processor) NewSession(cfg Config) (*Session, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Session{p: p, w: work{cfg: cfg}}
	s.view.Store(s.w.snapshot(p.Name()))
	return s, nil
}

// publish replaces the session's read side; call with p.mu held.
func (s *Session) publish() { s.view.Store(s.w.snapshot(s.p.name)) }

// Observe processes one observation for the session, as Processor.Observe
// does for the instance. The Changes of an auto-learn must be made durable
// before the client is answered.
func (s *Session) Observe(obs Observation) (ObserveResult, Changes, error) {
	obs, err := obs.check() // before the lock: linear in the observation
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	defer s.publish()
	if err != nil {
		s.w.time++
		return ObserveResult{}, nil, err
	}
	return s.w.observe(s.p, obs)
}

// ObserveJSON decodes an observe body (DecodeObservation) and observes it;
// a body that is JSON but not a valid observation still counts in time.
func (s *Session) ObserveJSON(body []byte) (ObserveResult, Changes, error) {
	obs, err := DecodeObservation(body)
	switch {
	case errors.Is(err, ErrBadJSON):
		return ObserveResult{}, nil, err
	case err != nil:
		s.p.mu.Lock()
		defer s.p.mu.Unlock()
		s.w.time++
		s.publish()
		return ObserveResult{}, nil, err
	}
	return s.Observe(obs)
}

// Learn learns the session's STM into the shared knowledge base, under the
// processor's record bound (as TryLearn): a learn that would store a larger
// record returns an error wrapping ErrTooLarge and changes nothing.
func (s *Session) Learn() (string, Changes, error) {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	defer s.publish()
	return s.w.tryLearn(s.p)
}

// ClearSTM is clear-working-memory for the session.
func (s *Session) ClearSTM() {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	s.w.clearWM()
	s.publish()
}

// ClearAll clears the session's whole state (its STM and what goes with it,
// and time). The shared knowledge base is left alone: other sessions and the
// instance use it.
func (s *Session) ClearAll() {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	s.w.clearWM()
	s.w.time = 0
	s.publish()
}

// SetConfig replaces the session's genes (validated).
func (s *Session) SetConfig(cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	s.w.cfg = cfg
	s.publish()
	return nil
}

// Config returns the session's genes.
func (s *Session) Config() Config { return s.view.Load().cfg }

// Time returns the session's observe count.
func (s *Session) Time() int64 { return s.view.Load().time }

// STM returns the session's short-term memory (events are shared).
func (s *Session) STM() [][]string { return s.view.Load().workingMemory() }

// Predictions returns the session's predictions of its last observe that
// carried strings or vectors.
func (s *Session) Predictions() Predictions { return s.view.Load().predictions() }

// PerceptData returns the echo of the session's last observe.
func (s *Session) PerceptData() Percept { return s.view.Load().percept }

// CognitionData returns the session's cognition data (3.5).
func (s *Session) CognitionData() Cognition { return s.view.Load().cognition() }

func (v *view) predictions() Predictions {
	if v.preds == nil {
		return Predictions{}
	}
	return v.preds
}

func (v *view) workingMemory() [][]string { return append([][]string{}, v.stm...) }

func (v *view) cognition() Cognition {
	last := v.last
	if last == nil {
		last = []string{}
	}
	return Cognition{
		Predictions:   v.preds,
		Emotives:      v.current,
		Symbols:       last,
		WorkingMemory: append([][]string{}, v.stm...),
	}
}
