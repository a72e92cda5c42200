// Package processor is the KATO processor core: short-term memory,
// learning, the knowledge base and predictions, exactly as the project's
// processor specification (PROCESSOR.md) describes them: KATO 11 with the
// decisions D1-D16 of its §0. Section numbers in comments refer to it. It is pure: no etcd, no HTTP, no clock, no
// randomness. The same calls in the same order give the same answers, byte
// for byte, on every node.
//
// # Use
//
//	p, err := processor.New(processor.DefaultConfig(), id, name)      // empty
//	p, err := processor.Load(cfg, id, name, patterns, vectors)       // from stored records
//	p, err := processor.Open(ctx, cfg, id, name, store)              // from a Store
//
//	b := processor.NewBuilder()              // from records streamed one at a time:
//	err := b.AddPattern(rec)                 // in Seq order they go straight into the index
//	err := b.AddVector(vec)
//	p, err := b.Build(cfg, id, name)
//
//	f := p.Freeze()                          // the KB as it is now, for a checkpoint
//	for rec := range f.Patterns { ... }      // ascending Seq; also f.Vectors, f.Counts()
//
//	res, changes, err := p.ObserveJSON(body)   // or DecodeObservation + Observe
//	name, changes := p.Learn()                 // "MODEL|<sha1>" or ""
//	changes := p.ClearAll()
//	p.ClearWorkingMemory()
//	err := p.ChangeGenes(changes)              // DecodeGeneChanges(body) gives them
//
//	p.Predictions() p.WorkingMemory() p.PerceptData() p.CognitionData()
//	p.Model(name) p.Gene(name) p.Genes() p.Config() p.Time() p.Stats()
//
// KATO 3 sessions: each Session has its own STM, time, emotive buffer,
// predictions and genes, computed against the processor's one knowledge
// base; the instance's own state above is its default session.
//
//	cfg, err := processor.ApplySessionConfig(p.Config(), configJSON) // KATO 3 keys
//	s, err := p.NewSession(cfg)
//	res, changes, err := s.ObserveJSON(body)  // s.Learn() s.ClearSTM() s.ClearAll() s.SetConfig(cfg)
//	st := s.State()                           // to store; p2.RestoreSession(st) continues it
//
// Everything that answers the REST API marshals with encoding/json in KATO's
// shape: Predictions (21 fields in the order of 7.8), Model, Cognition,
// Percept, gene values. Floats are written as Python writes them (PyFloat,
// D13), so clients see 1.0, 0.5714285714285714, 1e-05.
//
// # Durability (D14)
//
// Every call that changes the model returns Changes: absolute records in the
// order they happened (a PutPattern holds the whole PatternRecord: name,
// events, length, frequency, emotive window and learn sequence number; a
// PutVector holds the name and values; a ClearAll drops everything). The
// caller makes them durable (Store.Apply) and answers its client only
// afterwards. Batches may be merged with Coalesce (last write per key wins,
// a ClearAll drops what came before it) but must be applied in order. If
// the store refuses a change, the processor is ahead of the store: do not
// answer success, and reload the processor from the store (Open) before
// serving writes again. Genes are not in Changes: after ChangeGenes the
// caller writes Genes() to the instance's registry record (D2).
//
// Load rebuilds a processor from stored records: it checks every name
// against its content (ErrCorrupt otherwise), enumerates candidates by learn
// sequence number (D3) and derives the symbol statistics from the patterns.
// A rebuilt processor gives the same predictions for the same STM. A warm
// standby can instead Replay the records it follows.
//
// # Concurrency
//
// A Processor is safe for concurrent use. Calls that change state (Observe,
// ObserveJSON, Learn, ClearWorkingMemory, ClearAll, ChangeGenes, Replay) run
// one at a time; an observe computes its predictions while it holds that
// turn, so the next change waits for it, as KATO's order of events requires.
// Sessions' calls share that turn. Reads never wait for a prediction in progress: Predictions, WorkingMemory,
// PerceptData, CognitionData, Gene, Genes, Config, Time and Name read an
// immutable snapshot published after each change; Model, Patterns, Vectors,
// Stats, SymbolStats and Freeze read the knowledge base under a lock that
// only learns (Learn and Observe's auto-learn), ClearAll and Replay hold,
// briefly. Returned slices are shared: do not modify them. A Frozen view
// is read without any lock: Freeze copies what the processor changes in
// place (frequencies, emotive window references) and shares the rest, to
// which the processor only appends.
//
// # Matching (D15)
//
// Predictions are exact, but most patterns are never compared. An inverted
// index maps each symbol to the patterns holding it, in learn order, with
// counts; the posting lists of the state's symbols are merged to get each
// touched pattern's multiset overlap O with the state, and since difflib's
// matched count never exceeds O, a pattern with 2·O/(len a + len b) below
// the threshold cannot pass and is skipped (the bound is the ratio's own
// float expression, so the test is exact). Patterns sharing nothing have no
// matching block and are never candidates (D7). Candidates of overlap 1
// have a known block; their potential is known up to itfdf_similarity, so
// only those that can still reach the top max_predictions are evaluated.
// The test suite compares all of this with a full scan on every pattern.
//
// # Errors
//
// Errors wrap ErrInvalid (HTTP 400: ErrBadJSON, ErrBadObservation,
// ErrBadGene) or ErrNotFound (404: ErrUnknownModel, ErrUnknownGene);
// ErrorCode gives the error_code of D6's JSON error body.
//
// # Genes
//
// Genes are typed and range-checked; a change applies all its genes or none.
// max_predictions, max_sequence_length, persistence, search_depth,
// smoothness and quiescence are integers ≥ 0 (an integer literal: 2.0 is
// refused); recall_threshold is a number in [0, 1]; auto_act_threshold a
// finite number; sort, always_update_frequencies and process_predictions
// booleans; auto_act_method a string; classifier must be "CVC" and
// indexer_type "VI" (D12). Every one of them can change at run time and
// takes effect at once (D2): sort from the next observe, persistence from
// the next learn. id and kb_id (both the instance id) cannot change (a
// change to the same value is accepted); name can, to 1-128 characters.
// Gene values are reported as int64, PyFloat, bool or string.
//
// # Departures from PROCESSOR.md
//
// Beyond §0, where the spec leaves room or KATO crashed:
//   - an observe that fails validation changes only time (KATO had already
//     replaced percept_data and last_symbols);
//   - numbers that do not fit float64 (1e999) or, in vectors and emotives,
//     int64 are refused, as are NaN/Infinity tokens, text that is not UTF-8,
//     a non-string unique_id, a path that is not a list and metadata that is
//     not an object (null counts as absent);
//   - a vector whose length does not match a stored vector (other than
//     numpy's length-1 broadcasting) is a 400, not a 500;
//   - vector symbols of an event are sorted (KATO's order was arbitrary);
//   - sums over sets (itfdf_similarity, grand_hamiltonian) run in
//     first-occurrence order; the result may differ from KATO in the last
//     digit before rounding, which 7.7 allows;
//   - "printable" in model names follows Go's Unicode 15 tables; a Python
//     with older tables escapes the few code points assigned since.
package processor
