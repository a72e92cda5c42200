package processor

// This file maps KATO 3 session config to genes and saves and restores a
// session's state (SessionState) as JSON.

import (
	"fmt"
	"strconv"
	"strings"
)

// sessionKey maps a KATO 3 session config key to a gene, or fixes the only
// value our core implements (fixed, as JSON).
type sessionKey struct {
	name  string // KATO 3 name
	gene  string // gene it sets; "" for a fixed value
	fixed string // the only accepted JSON value when gene is ""
	why   string // what our core does instead, for the error
}

// sessionKeys are the config keys KATO 3's client sends, in the order the
// session_config answer shows them.
var sessionKeys = []sessionKey{
	{name: "max_predictions", gene: "max_predictions"},
	{name: "recall_threshold", gene: "recall_threshold"},
	{name: "max_pattern_length", gene: "max_sequence_length"},
	{name: "persistence", gene: "persistence"},
	{name: "sort_symbols", gene: "sort"},
	{name: "process_predictions", fixed: "true", why: "predictions are always computed"},
	{name: "use_token_matching", fixed: "true", why: "matching is by whole symbols"},
	{name: "rank_sort_algo", fixed: `"potential"`, why: "predictions are ranked by potential"},
	{name: "indexer_type", gene: "indexer_type"},
	{name: "search_depth", gene: "search_depth"},
	{name: "smoothness", gene: "smoothness"},
	{name: "quiescence", gene: "quiescence"},
	{name: "auto_act_method", gene: "auto_act_method"},
	{name: "auto_act_threshold", gene: "auto_act_threshold"},
	{name: "always_update_frequencies", gene: "always_update_frequencies"},
}

// notImplemented names KATO 3 keys our core does not implement, with what it
// does instead.
var notImplemented = map[string]string{
	"stm_mode":            "auto-learn keeps the last event (KATO 11), neither CLEAR nor ROLLING",
	"filter_pipeline":     "candidates are found by an exact inverted index, not a filter pipeline",
	"max_sequence_length": "use max_pattern_length, KATO 3's name",
}

// ApplySessionConfig applies a KATO 3 session config object (config of POST
// /sessions or /sessions/{id}/config) to cfg, all or nothing. A key our core
// does not implement, or a value it does not implement for a key it knows,
// gives an error wrapping ErrBadGene that names the key.
func ApplySessionConfig(cfg Config, body []byte) (Config, error) {
	v, err := parseJSON(body)
	if err != nil {
		return cfg, err
	}
	if v.kind == jNull {
		return cfg, nil
	}
	if v.kind != jObj {
		return cfg, fmt.Errorf("%w: config must be an object, not %s", ErrBadGene, v.kind)
	}
	out := cfg
	for _, m := range v.obj {
		k, ok := findSessionKey(m.key)
		if !ok {
			if why, known := notImplemented[m.key]; known {
				return cfg, fmt.Errorf("%w: config key %s is not implemented: %s", ErrBadGene, strconv.Quote(m.key), why)
			}
			return cfg, fmt.Errorf("%w: unknown config key %s", ErrBadGene, strconv.Quote(m.key))
		}
		raw, err := m.val.appendPy(nil)
		if err != nil {
			return cfg, fmt.Errorf("%w: config key %s: %v", ErrBadGene, strconv.Quote(m.key), err)
		}
		if k.gene == "" {
			if string(raw) != k.fixed {
				return cfg, fmt.Errorf("%w: config key %s: only %s is implemented (%s), not %s", ErrBadGene,
					strconv.Quote(m.key), k.fixed, k.why, raw)
			}
			continue
		}
		next, _, err := applyGenes(out, "", "", []GeneChange{{Name: k.gene, Value: raw}})
		if err != nil {
			why := strings.TrimPrefix(err.Error(), ErrBadGene.Error()+": "+k.gene+": ")
			return cfg, fmt.Errorf("%w: config key %s: %s", ErrBadGene, strconv.Quote(m.key), why)
		}
		out = next
	}
	return out, nil
}

func findSessionKey(name string) (sessionKey, bool) {
	for _, k := range sessionKeys {
		if k.name == name {
			return k, true
		}
	}
	return sessionKey{}, false
}

// SessionConfigJSON writes cfg with KATO 3's config keys, in a fixed order.
func SessionConfigJSON(cfg Config) []byte {
	dst := []byte{'{'}
	for i, k := range sessionKeys {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, k.name)
		dst = append(dst, ':')
		if k.gene == "" {
			dst = append(dst, k.fixed...)
			continue
		}
		g, _ := findGene(k.gene)
		dst, _ = jvalueOf(g.get(&cfg, "", "")).appendPy(dst)
	}
	return append(dst, '}')
}

// SessionState is everything of a session that must survive a fail-over:
// genes, time, STM, the emotive buffer and current emotives, the last event,
// the STM its predictions were computed from, and the vectors waiting for
// the next learn. Percept data is not kept (it is {} after a restore until
// the next observe).
type SessionState struct {
	Config        Config
	Time          int64
	STM           [][]string
	EmotiveBuffer [][]EmotiveValue
	Current       Emotives
	Last          []string
	PredictionSTM [][]string // nil: no predictions
	Deferred      []VectorRecord
}

// State returns the session's state.
func (s *Session) State() SessionState {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	w := &s.w
	st := SessionState{Config: w.cfg, Time: w.time, STM: w.stm, EmotiveBuffer: w.emoBuf, Current: w.current,
		Last: w.last, PredictionSTM: w.predSTM}
	if w.preds != nil && st.PredictionSTM == nil {
		st.PredictionSTM = [][]string{}
	}
	for _, d := range w.deferred {
		st.Deferred = append(st.Deferred, VectorRecord{Name: d.name, Vector: d.v})
	}
	return st
}

// RestoreSession rebuilds a session from its state. Its predictions are
// computed again from the STM they came from, against the knowledge base
// as it is now: the same as before unless the model learned meanwhile.
func (p *Processor) RestoreSession(st SessionState) (*Session, error) {
	if err := st.Config.Validate(); err != nil {
		return nil, err
	}
	s := &Session{p: p}
	p.mu.Lock()
	defer p.mu.Unlock()
	s.w = work{cfg: st.Config, time: st.Time, stm: st.STM, emoBuf: st.EmotiveBuffer, current: st.Current, last: st.Last,
		predSTM: st.PredictionSTM}
	if st.PredictionSTM != nil {
		s.w.preds = p.pr.predict(p.kb, st.PredictionSTM, st.Config.RecallThreshold, st.Config.MaxPredictions)
	}
	for _, d := range st.Deferred {
		s.w.deferred = append(s.w.deferred, deferredVector{name: d.Name, v: d.Vector})
	}
	s.publish()
	return s, nil
}

// MarshalJSON writes the state as an object with Python-style numbers (the
// int/float distinction of emotives is kept).
func (st SessionState) MarshalJSON() ([]byte, error) {
	dst := []byte(`{"config":`)
	dst = append(dst, SessionConfigJSON(st.Config)...)
	dst = append(dst, `,"time":`...)
	dst = strconv.AppendInt(dst, st.Time, 10)
	dst = append(dst, `,"stm":`...)
	dst = appendEvents(dst, st.STM)
	dst = append(dst, `,"emotive_buffer":`...)
	dst, _ = appendList(dst, st.EmotiveBuffer, func(dst []byte, d []EmotiveValue) ([]byte, error) {
		dst = append(dst, '{')
		for i, e := range d {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = appendJSONString(dst, e.Name)
			dst = append(dst, ':')
			dst = e.Value.appendJSON(dst)
		}
		return append(dst, '}'), nil
	})
	dst = append(dst, `,"current_emotives":`...)
	dst, err := st.Current.appendJSON(dst)
	if err != nil {
		return nil, err
	}
	dst = append(dst, `,"last_symbols":`...)
	dst = appendStrings(dst, st.Last)
	dst = append(dst, `,"prediction_stm":`...)
	if st.PredictionSTM == nil {
		dst = append(dst, "null"...)
	} else {
		dst = appendEvents(dst, st.PredictionSTM)
	}
	dst = append(dst, `,"deferred_vectors":`...)
	dst, err = appendList(dst, st.Deferred, func(dst []byte, r VectorRecord) ([]byte, error) {
		b, err := r.MarshalJSON()
		return append(dst, b...), err
	})
	if err != nil {
		return nil, err
	}
	return append(dst, '}'), nil
}

// UnmarshalJSON reads what MarshalJSON writes; errors wrap ErrCorrupt.
func (st *SessionState) UnmarshalJSON(b []byte) error {
	v, err := parseJSON(b)
	if err != nil || v.kind != jObj {
		return fmt.Errorf("%w: session state is not a JSON object", ErrCorrupt)
	}
	bad := func(what string, err error) error {
		return fmt.Errorf("%w: session state: %s: %v", ErrCorrupt, what, err)
	}
	var out SessionState
	cfgv, _ := v.member("config")
	raw, err := cfgv.appendPy(nil)
	if err != nil {
		return bad("config", err)
	}
	if out.Config, err = ApplySessionConfig(DefaultConfig(), raw); err != nil {
		return bad("config", err)
	}
	if out.Time, err = intMember(v, "time"); err != nil {
		return bad("time", err)
	}
	events := func(key string) ([][]string, error) {
		m, _ := v.member(key)
		if m.kind == jNull {
			return nil, nil
		}
		if m.kind != jArr {
			return nil, fmt.Errorf("not a list")
		}
		evs := make([][]string, 0, len(m.arr))
		for _, ev := range m.arr {
			ss, err := stringsOf(ev, key)
			if err != nil {
				return nil, err
			}
			evs = append(evs, ss)
		}
		return evs, nil
	}
	if out.STM, err = events("stm"); err != nil {
		return bad("stm", err)
	}
	if len(out.STM) == 0 {
		out.STM = nil
	}
	if out.PredictionSTM, err = events("prediction_stm"); err != nil {
		return bad("prediction_stm", err)
	}
	eb, _ := v.member("emotive_buffer")
	for _, d := range eb.arr {
		ev, err := emotivesOf(d, "emotive_buffer")
		if err != nil {
			return bad("emotive_buffer", err)
		}
		out.EmotiveBuffer = append(out.EmotiveBuffer, ev)
	}
	if cur, ok := v.member("current_emotives"); ok && cur.kind == jObj && len(cur.obj) > 0 {
		if err := out.Current.fromJSON(cur); err != nil {
			return bad("current_emotives", err)
		}
	}
	if last, ok := v.member("last_symbols"); ok && last.kind != jNull {
		if out.Last, err = stringsOf(last, "last_symbols"); err != nil {
			return bad("last_symbols", err)
		}
	}
	dv, _ := v.member("deferred_vectors")
	for _, d := range dv.arr {
		raw, err := d.appendPy(nil)
		if err != nil {
			return bad("deferred_vectors", err)
		}
		var r VectorRecord
		if err := r.UnmarshalJSON(raw); err != nil {
			return bad("deferred_vectors", err)
		}
		out.Deferred = append(out.Deferred, r)
	}
	*st = out
	return nil
}
