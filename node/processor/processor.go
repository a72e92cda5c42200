package processor

// This file is the Processor: building one (New, Load, Open) and its calls
// on the instance's own state (observe, learn, clear, genes, reads).

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Processor is one KATO processor: short-term memory, knowledge base and
// predictions (PROCESSOR.md). It is safe for concurrent use; see doc.go for
// what blocks what.
type Processor struct {
	id string

	// mu serialises every call that changes state: Observe, Learn, the
	// clears and ChangeGenes. Predictions are computed under it.
	mu   sync.Mutex
	kbMu sync.RWMutex // held for writing while the KB changes; readers: Model, Patterns, Vectors, Stats
	kb   *kb
	pr   *predictor

	// Working state of the instance (its default session), guarded by mu.
	work
	name string
	// maxRecord bounds the records a learn may produce (SetMaxRecordBytes).
	maxRecord int

	// view is the immutable read side, replaced after every change, so
	// readers never wait for a prediction in progress.
	view atomic.Pointer[view]
}

type deferredVector struct {
	name string
	v    Vector
}

// view is a snapshot of what the read-only methods show.
type view struct {
	cfg     Config
	name    string
	time    int64
	stm     [][]string
	preds   []Prediction
	percept Percept
	current Emotives
	last    []string
}

// New returns an empty processor with the given genes, instance id and name.
func New(cfg Config, id, name string) (*Processor, error) {
	return Load(cfg, id, name, nil, nil)
}

// Load returns a processor whose knowledge base is rebuilt from stored
// patterns and vectors (as a Store returns them, in any order): candidates
// are enumerated by learn sequence number, symbol statistics are derived
// from the patterns (D14), and the same STM gives the same predictions as
// before the records were stored. Records that do not check out (a name
// that is not the hash of the events, a vector name that is not the hash of
// its values, ...) give an error wrapping ErrCorrupt. A pattern record may
// leave its Name empty (see Builder.AddPattern).
func Load(cfg Config, id, name string, patterns []PatternRecord, vectors []VectorRecord) (*Processor, error) {
	b := NewBuilder()
	ps := slices.Clone(patterns)
	for i := range ps {
		if ps[i].Name == "" {
			ps[i].Name = ModelName(ps[i].Events)
		}
	}
	sortRecords(ps, patternKey)
	for _, r := range ps {
		if b.AddPattern(r) != nil {
			break
		}
	}
	vs := slices.Clone(vectors)
	sortRecords(vs, vectorKey)
	for _, r := range vs {
		if b.AddVector(r) != nil {
			break
		}
	}
	return b.Build(cfg, id, name)
}

// Open loads a processor from a store.
func Open(ctx context.Context, cfg Config, id, name string, s Store) (*Processor, error) {
	pats, err := s.Patterns(ctx)
	if err != nil {
		return nil, err
	}
	vecs, err := s.Vectors(ctx)
	if err != nil {
		return nil, err
	}
	return Load(cfg, id, name, pats, vecs)
}

// publish replaces the read-side snapshot; call with mu held.
func (p *Processor) publish() { p.view.Store(p.snapshot(p.name)) }

// ID returns the instance id (the id and kb_id genes).
func (p *Processor) ID() string { return p.id }

// Name returns the instance name (the name gene).
func (p *Processor) Name() string { return p.view.Load().name }

// ObserveJSON decodes an observe body (see DecodeObservation) and observes
// it. Like KATO, a body that is JSON but not a valid observation still
// counts in time (3.1); invalid JSON does not reach the processor.
func (p *Processor) ObserveJSON(body []byte) (ObserveResult, Changes, error) {
	obs, err := DecodeObservation(body)
	if err != nil {
		return ObserveResult{}, nil, p.Rejected(err)
	}
	return p.Observe(obs)
}

// Rejected counts, for an observe body DecodeObservation rejected with err,
// the time step KATO counts (3.1): a body that is JSON but not a valid
// observation counts; invalid JSON does not. It returns err.
func (p *Processor) Rejected(err error) error {
	if errors.Is(err, ErrBadJSON) {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.time++
	p.publish()
	return err
}

// Observe processes one observation (3.2): it updates the STM, recomputes
// the predictions when the observation carries strings or vectors, and
// auto-learns (4.2). The returned Changes (from an auto-learn) must be made
// durable before the client is answered. An invalid observation changes
// nothing but time and returns an error wrapping ErrBadObservation. An
// observation whose auto-learn would store a record above the bound of
// SetMaxRecordBytes is refused with an error wrapping ErrTooLarge and
// changes nothing, time included.
func (p *Processor) Observe(obs Observation) (ObserveResult, Changes, error) {
	obs, err := obs.check() // before the lock: linear in the observation
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.publish()
	if err != nil {
		p.time++
		return ObserveResult{}, nil, err
	}
	return p.observe(p, obs)
}

// Learn learns the STM as a model (5.1) and returns "MODEL|<hash>", or ""
// when the STM held at most one symbol. It also stores the vectors seen
// since the last learn. The Changes must be made durable before the client
// is answered.
func (p *Processor) Learn() (string, Changes) {
	p.mu.Lock()
	defer p.mu.Unlock()
	defer p.publish()
	return p.learn(p)
}

// ClearWorkingMemory empties the STM, the emotive buffer, the predictions,
// the last event, the current emotives, the percept data and the vectors
// waiting for the next learn (4.1, D9).
func (p *Processor) ClearWorkingMemory() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearWM()
	p.publish()
}

// ClearAll clears the working memory, resets time and drops the knowledge
// base (4.1). The returned Changes (one ClearAll) must be made durable
// before the client is answered.
func (p *Processor) ClearAll() Changes {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clearWM()
	p.time = 0
	p.kbMu.Lock()
	next := p.kb.nextSeq
	p.kb = newKB()
	p.kb.nextSeq = next // keep sequence numbers increasing within a process
	p.kbMu.Unlock()
	p.publish()
	return Changes{{Kind: ClearAll}}
}

// ChangeGenes applies gene changes in order (8.3), all or nothing: an
// unknown name, a value of the wrong type or range, or a change of id or
// kb_id rejects the whole change with an error wrapping ErrBadGene. Genes
// take effect at once (D2). The caller records the new genes (Genes) in
// the instance's registry record.
func (p *Processor) ChangeGenes(changes []GeneChange) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	cfg, name, err := applyGenes(p.cfg, p.id, p.name, changes)
	if err != nil {
		return err
	}
	p.cfg, p.name = cfg, name
	p.publish()
	return nil
}

// Gene returns the value of one gene: int64, PyFloat, bool or string. An
// unknown name gives an error wrapping ErrUnknownGene.
func (p *Processor) Gene(name string) (any, error) {
	g, ok := findGene(name)
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrUnknownGene, PyRepr(name))
	}
	v := p.view.Load()
	return g.get(&v.cfg, p.id, v.name), nil
}

// Genes returns every gene in a fixed order.
func (p *Processor) Genes() []Gene {
	v := p.view.Load()
	out := make([]Gene, len(geneTable))
	for i, g := range geneTable {
		out[i] = Gene{g.name, g.get(&v.cfg, p.id, v.name)}
	}
	return out
}

// Config returns the current genes.
func (p *Processor) Config() Config { return p.view.Load().cfg }

// Time returns the number of observe calls since start or clear-all (1, D11).
func (p *Processor) Time() int64 { return p.view.Load().time }

// Predictions returns the prediction list of the last observe call that
// carried strings or vectors (3.4). It is shared: do not modify it.
func (p *Processor) Predictions() Predictions { return p.view.Load().predictions() }

// WorkingMemory returns the STM (events are shared: do not modify them).
func (p *Processor) WorkingMemory() [][]string { return p.view.Load().workingMemory() }

// PerceptData returns the echo of the last observe request; the zero
// Percept (JSON {}) after a clear or before any observe.
func (p *Processor) PerceptData() Percept { return p.view.Load().percept }

// CognitionData returns the cognition data (3.5).
func (p *Processor) CognitionData() Cognition { return p.view.Load().cognition() }

// Model returns a model by name, with or without "MODEL|". An unknown name
// gives an error wrapping ErrUnknownModel.
func (p *Processor) Model(name string) (Model, error) {
	p.kbMu.RLock()
	defer p.kbMu.RUnlock()
	pi, ok := p.kb.find(name)
	if !ok {
		return Model{}, fmt.Errorf("%w: %s", ErrUnknownModel, PyRepr(name))
	}
	r := p.kb.record(pi)
	return Model{Name: r.Name, Sequence: r.Events, Frequency: r.Frequency, Emotives: r.Emotives}, nil
}

// Patterns returns the stored form of every model in first-learned order
// (what a Store holds after applying every Changes).
func (p *Processor) Patterns() []PatternRecord {
	p.kbMu.RLock()
	defer p.kbMu.RUnlock()
	out := make([]PatternRecord, len(p.kb.pats))
	for i := range p.kb.pats {
		out[i] = p.kb.record(int32(i))
	}
	return out
}

// Vectors returns every stored vector in store order.
func (p *Processor) Vectors() []VectorRecord {
	p.kbMu.RLock()
	defer p.kbMu.RUnlock()
	out := make([]VectorRecord, len(p.kb.vectors.entries))
	for i, e := range p.kb.vectors.entries {
		out[i] = VectorRecord{Name: e.name, Vector: e.v, Seq: e.seq}
	}
	return out
}

// Replay applies changes made by another processor, as a store returns
// them, to this processor's knowledge base: a warm standby follows the
// writer this way and ends up with the knowledge base a Load of the store
// would give. Working memory, time and genes are left alone. A record that
// does not check out, or that arrives out of learn sequence order (the
// caller then Loads instead), gives an error wrapping ErrCorrupt; the
// changes before it stay applied.
func (p *Processor) Replay(changes Changes) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.kbMu.Lock()
	defer p.kbMu.Unlock()
	for _, ch := range changes {
		var err error
		switch ch.Kind {
		case PutPattern:
			err = p.kb.replayPattern(ch.Pattern)
		case PutVector:
			err = p.kb.replayVector(ch.Vector)
		case ClearAll:
			next := p.kb.nextSeq
			p.kb = newKB()
			p.kb.nextSeq = next
		default:
			err = fmt.Errorf("%w: unknown change kind %v", ErrCorrupt, ch.Kind)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Stats are the knowledge base's counts and totals (1, 5.4).
type Stats struct {
	Models                          int
	Symbols                         int
	Vectors                         int
	TotalModelFrequencies           int64
	TotalSymbolFrequencies          int64
	TotalSymbolsInModelsFrequencies int64
}

// Stats returns the knowledge base's counts and totals.
func (p *Processor) Stats() Stats {
	p.kbMu.RLock()
	defer p.kbMu.RUnlock()
	return Stats{
		Models:                          len(p.kb.pats),
		Symbols:                         len(p.kb.syms.names),
		Vectors:                         len(p.kb.vectors.entries),
		TotalModelFrequencies:           p.kb.totalModelFreq,
		TotalSymbolFrequencies:          p.kb.totalSymbolFreq,
		TotalSymbolsInModelsFrequencies: p.kb.totalSymbolsInModels,
	}
}

// SymbolStats returns the frequency and model_member_frequency of a symbol
// (0, 0 when it is in no model).
func (p *Processor) SymbolStats(symbol string) (frequency, modelMemberFrequency int64) {
	p.kbMu.RLock()
	defer p.kbMu.RUnlock()
	id, ok := p.kb.syms.lookup(symbol)
	if !ok {
		return 0, 0
	}
	return p.kb.syms.freq[id], p.kb.syms.mmf[id]
}
