package processor

import (
	"encoding/json"
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// sessionStep is what one observe of a session gives.
type sessionStep struct {
	STM     string
	Preds   string
	Learned string
	Time    int64
}

func sessionObservations(seed uint64, n int, alphabet []string) []Observation {
	rng := rand.New(rand.NewPCG(seed, 7))
	out := make([]Observation, n)
	for i := range out {
		k := 1 + rng.IntN(3)
		var ss []string
		for j := 0; j < k; j++ {
			ss = append(ss, alphabet[rng.IntN(len(alphabet))])
		}
		var emo []EmotiveValue
		if rng.IntN(3) == 0 {
			emo = []EmotiveValue{{"joy", Float(rng.Float64())}}
		}
		out[i] = Observation{Strings: ss, Emotives: emo}
	}
	return out
}

func runSession(t testing.TB, s *Session, obs []Observation) []sessionStep {
	var out []sessionStep
	for _, o := range obs {
		res, _, err := s.Observe(o)
		if err != nil {
			t.Error(err)
			return nil
		}
		stm, _ := json.Marshal(s.STM())
		preds, err := s.Predictions().MarshalJSON()
		if err != nil {
			t.Error(err)
			return nil
		}
		out = append(out, sessionStep{string(stm), string(preds), res.AutoLearnedModel, s.Time()})
	}
	return out
}

// trainedProcessor returns a processor whose knowledge base holds patterns
// over vocab, and those patterns.
func trainedProcessor(t testing.TB, vocab []string) (*Processor, []PatternRecord) {
	p := newTestProcessor(t, DefaultConfig())
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		for _, ev := range randomEvents(rng, vocab, 2, 5) {
			mustObserve(t, p, Observation{Strings: ev})
		}
		p.Learn()
	}
	return p, p.Patterns()
}

// runSessionsTogether runs n sessions of cfg on p at once, session i
// observing sessionObservations(i, steps, vocab), with also (when not nil)
// running beside them, and returns the steps of each session.
func runSessionsTogether(t *testing.T, p *Processor, cfg Config, n, steps int, vocab []string, also func()) [][]sessionStep {
	t.Helper()
	got := make([][]sessionStep, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		s, err := p.NewSession(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = runSession(t, s, sessionObservations(uint64(i), steps, vocab))
		}()
	}
	if also != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			also()
		}()
	}
	wg.Wait()
	return got
}

// Fifty sessions observing at once, interleaved with each other and with the
// instance's own observes, give exactly what each gives alone against the
// same knowledge base: STM, predictions (every field), time.
func TestSessionsAreIndependent(t *testing.T) {
	vocab := makeVocab("s", 40)
	p, pats := trainedProcessor(t, vocab)
	const sessions, steps = 50, 40
	cfg := DefaultConfig()
	cfg.MaxPredictions = 10

	// Alone: one session at a time, on a processor of its own.
	want := make([][]sessionStep, sessions)
	for i := range want {
		lone, err := Load(DefaultConfig(), "lone", "lone", pats, nil)
		if err != nil {
			t.Fatal(err)
		}
		s, err := lone.NewSession(cfg)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = runSession(t, s, sessionObservations(uint64(i), steps, vocab))
	}

	// Together: all at once, and the instance observing too.
	t0 := p.Time()
	got := runSessionsTogether(t, p, cfg, sessions, steps, vocab, func() {
		for _, o := range sessionObservations(999, steps, vocab) {
			if _, _, err := p.Observe(o); err != nil {
				t.Error(err)
			}
		}
	})
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("session %d together differs from alone", i)
		}
	}
	if p.Time() != t0+steps || len(p.WorkingMemory()) == 0 {
		t.Fatalf("the instance's own state: time %d, STM %v", p.Time(), p.WorkingMemory())
	}
}

// With auto-learn, fifty sessions learning into the shared knowledge base
// at once each learn what they would alone (same names, same STM after each
// learn), and the knowledge base holds every learn: each pattern's frequency
// is the number of times the sessions learned it.
func TestSessionsAutoLearnIntoSharedModel(t *testing.T) {
	vocab := makeVocab("a", 6)
	const sessions, steps = 50, 30
	cfg := DefaultConfig()
	cfg.MaxSequenceLength = 3
	learnedOf := func(steps []sessionStep) []string {
		var out []string
		for _, s := range steps {
			out = append(out, s.Learned+" "+s.STM)
		}
		return out
	}
	want := make([][]string, sessions)
	counts := map[string]int64{}
	for i := range want {
		lone := newTestProcessor(t, DefaultConfig())
		s, err := lone.NewSession(cfg)
		if err != nil {
			t.Fatal(err)
		}
		want[i] = learnedOf(runSession(t, s, sessionObservations(uint64(i), steps, vocab)))
		for _, l := range want[i] {
			if name, _, _ := strings.Cut(l, " "); name != "" {
				counts[strings.TrimPrefix(name, ModelPrefix)]++
			}
		}
	}
	p := newTestProcessor(t, DefaultConfig())
	got := make([][]string, sessions)
	for i, st := range runSessionsTogether(t, p, cfg, sessions, steps, vocab, nil) {
		got[i] = learnedOf(st)
	}
	for i := range want {
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("session %d: learns together %q, alone %q", i, got[i], want[i])
		}
	}
	have := map[string]int64{}
	for _, r := range p.Patterns() {
		have[r.Name] = r.Frequency
	}
	if !reflect.DeepEqual(have, counts) {
		t.Fatalf("shared model holds %v, the sessions learned %v", have, counts)
	}
	if p.Time() != 0 || len(p.WorkingMemory()) != 0 {
		t.Fatal("a session's observe touched the instance's own state")
	}
}

// A session's state survives a restore into a reloaded processor: same STM,
// time, emotives and predictions, and it goes on as the original does.
func TestSessionStateRoundTrip(t *testing.T) {
	vocab := makeVocab("r", 20)
	p, pats := trainedProcessor(t, vocab)
	cfg := DefaultConfig()
	cfg.MaxPredictions = 7
	cfg.RecallThreshold = 0.2
	cfg.Sort = false
	s, err := p.NewSession(cfg)
	if err != nil {
		t.Fatal(err)
	}
	obs := sessionObservations(5, 12, vocab)
	obs[3].Emotives = []EmotiveValue{{"joy", Int(2)}, {"fear", Float(0.5)}}
	runSession(t, s, obs[:10])
	b, err := s.State().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	var st SessionState
	if err := st.UnmarshalJSON(b); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	if !reflect.DeepEqual(st, s.State()) {
		t.Fatalf("state after a round trip:\n%+v\nbefore:\n%+v", st, s.State())
	}
	p2, err := Load(DefaultConfig(), "other", "other", pats, nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := p2.RestoreSession(st)
	if err != nil {
		t.Fatal(err)
	}
	for _, pair := range [][2]any{{s.Predictions(), s2.Predictions()}, {s.CognitionData(), s2.CognitionData()}} {
		a, _ := json.Marshal(pair[0])
		b, _ := json.Marshal(pair[1])
		if string(a) != string(b) {
			t.Fatalf("after restore:\n%s\nbefore:\n%s", b, a)
		}
	}
	if !reflect.DeepEqual(runSession(t, s, obs[10:]), runSession(t, s2, obs[10:])) {
		t.Fatal("the restored session goes on differently")
	}
}

func TestApplySessionConfig(t *testing.T) {
	for _, tc := range []struct {
		body, err string
		check     func(Config) bool
	}{
		{body: `{"max_predictions": 3, "recall_threshold": 0.5, "max_pattern_length": 4, "persistence": 2, "sort_symbols": false}`,
			check: func(c Config) bool {
				return c.MaxPredictions == 3 && c.RecallThreshold == 0.5 && c.MaxSequenceLength == 4 && c.Persistence == 2 && !c.Sort
			}},
		{body: `{"process_predictions": true, "use_token_matching": true, "rank_sort_algo": "potential"}`,
			check: func(c Config) bool { return c == DefaultConfig() }},
		{body: `null`, check: func(c Config) bool { return c == DefaultConfig() }},
		{body: `{"stm_mode": "CLEAR"}`, err: `config key "stm_mode" is not implemented`},
		{body: `{"max_predictions": 3, "frobnicate": 1}`, err: `unknown config key "frobnicate"`},
		{body: `{"process_predictions": false}`, err: `config key "process_predictions": only true is implemented`},
		{body: `{"rank_sort_algo": "similarity"}`, err: `config key "rank_sort_algo": only "potential"`},
		{body: `{"recall_threshold": 2}`, err: `config key "recall_threshold": 2 is out of range`},
		{body: `{"max_pattern_length": "3"}`, err: `config key "max_pattern_length": must be an integer`},
		{body: `[1]`, err: `config must be an object`},
	} {
		c, err := ApplySessionConfig(DefaultConfig(), []byte(tc.body))
		switch {
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: error %v, want one containing %q", tc.body, err, tc.err)
		case tc.err != "" && ErrorCode(err) == "":
			t.Errorf("%s: error %v has no error code", tc.body, err)
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.body, err)
		case tc.err == "" && !tc.check(c):
			t.Errorf("%s: gave %+v", tc.body, c)
		}
	}
	// What SessionConfigJSON writes reads back as the same genes.
	cfg := DefaultConfig()
	cfg.MaxPredictions, cfg.RecallThreshold, cfg.Sort = 9, 0.25, false
	back, err := ApplySessionConfig(DefaultConfig(), SessionConfigJSON(cfg))
	if err != nil || back != cfg {
		t.Fatalf("%s read back as %+v, %v", SessionConfigJSON(cfg), back, err)
	}
}

// ApplySessionConfig takes outside input: it never panics, refuses with a
// 400 error, and what it accepts validates and reads back the same.
func FuzzApplySessionConfig(f *testing.F) {
	for _, s := range []string{`{"max_predictions":3}`, `{"recall_threshold":0.5,"sort_symbols":false}`, `{"stm_mode":"CLEAR"}`,
		`null`, `[]`, `{"max_pattern_length":1e999}`, `{"rank_sort_algo":"potential","use_token_matching":true}`, `{"a":`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		cfg, err := ApplySessionConfig(DefaultConfig(), body)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%q: error %v is not a 400", body, err)
			}
			return
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("%q: accepted an invalid config: %v", body, err)
		}
		back, err := ApplySessionConfig(DefaultConfig(), SessionConfigJSON(cfg))
		if err != nil || back != cfg {
			t.Fatalf("%q: reads back as %+v, %v", body, back, err)
		}
	})
}
