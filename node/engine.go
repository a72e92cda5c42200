package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/metrics"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// ErrNotServing is returned for processor calls while the node does not hold
// its model lock (standby, lease lost, stopping): the API answers 503.
var ErrNotServing = errors.New("node: not serving this model now (no model lock)")

// ErrWriteFailed is returned when a model change could not be made durable
// because the node lost its lock; the API answers 503.
var ErrWriteFailed = errors.New("node: model change not stored (model lock lost)")

// ErrNotStored is returned when a model change was not made durable for a
// reason of that request (etcd refused it, or a change before it failed):
// the node keeps its lock and reloads the model from etcd before it takes
// writes again; the API answers 503.
var ErrNotStored = errors.New("node: model change not stored; the model reloads from etcd")

// ErrOutcomeUnknown is returned when a model change was sent to etcd but its
// result is not known (the node stopped serving while it was in flight, a
// timeout, a lost connection): etcd may hold it or not. The API answers 503.
var ErrOutcomeUnknown = errors.New("node: model change sent; whether it was stored is unknown")

// Stored record keys, relative to models/<model>/.
const (
	patternsDir = "patterns/"
	vectorsDir  = "vectors/"
)

// engine owns the processor while the node holds the lock, and the warm copy
// of the model while it waits.
type engine struct {
	n  *Node
	lg *zap.Logger

	// wmu orders processor changes with their submission to the committer, so
	// etcd sees them in the order they were made.
	wmu sync.Mutex

	mu         sync.RWMutex
	proc       *processor.Processor
	committer  *kb.Committer
	stopCommit context.CancelFunc
	commitDone chan struct{}
	failCh     chan struct{}
	failOnce   *sync.Once
	genes      processor.Config
	name       string
	inflight   sync.WaitGroup
	progress   loadProgress
	sessions   *sessionTable // KATO 3 sessions while serving (sessions.go)
	sm         *metrics.Sessions
}

func newEngine(n *Node) *engine {
	return &engine{n: n, lg: n.lg.Named("engine"), genes: n.cfg.Genes, name: n.cfg.Name, failCh: make(chan struct{}), failOnce: &sync.Once{},
		sm: metrics.NewSessions(n.reg)}
}

// genes returns the current genes as name → value, for the registry record.
func (e *engine) geneMap() map[string]any {
	e.mu.RLock()
	p := e.proc
	e.mu.RUnlock()
	if p == nil {
		tmp, err := processor.New(e.genes, e.n.cfg.ID, e.name)
		if err != nil {
			return nil
		}
		p = tmp
	}
	out := map[string]any{}
	for _, g := range p.Genes() {
		out[g.Name] = g.Value
	}
	return out
}

// failed is closed when a model write of the current activation failed, or
// the processor holds a change etcd will not: the model must be reloaded (or,
// when the lock was lost, given up) before it takes writes again.
func (e *engine) failed() <-chan struct{} {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.failCh
}

// read returns the processor for a call that changes nothing durable; done
// must be called when the call is over.
func (e *engine) read() (*processor.Processor, func(), error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.proc == nil {
		return nil, nil, ErrNotServing
	}
	e.inflight.Add(1)
	return e.proc, e.inflight.Done, nil
}

// write runs fn, which may change the model, and returns only after its
// changes are durable in etcd. After a failed write it refuses every write,
// without running fn, until the node has reloaded the model (D14): only a
// lost lock costs the lock, any other failure is an error of the requests
// it hit.
func (e *engine) write(ctx context.Context, fn func(*processor.Processor) (processor.Changes, error)) error {
	e.mu.RLock()
	p, com, failOnce, failCh := e.proc, e.committer, e.failOnce, e.failCh
	if p == nil {
		e.mu.RUnlock()
		return ErrNotServing
	}
	select {
	case <-failCh:
		e.mu.RUnlock()
		return fmt.Errorf("%w: an earlier change failed", ErrNotStored)
	default:
	}
	e.inflight.Add(1)
	defer e.inflight.Done()
	e.wmu.Lock()
	changes, err := fn(p)
	var waits []<-chan error
	var enqErr error
	if err == nil && len(changes) > 0 {
		if waits, enqErr = enqueue(com, kbChanges(changes.Coalesce())); enqErr != nil {
			// The processor holds changes etcd will not get.
			failOnce.Do(func() { close(failCh) })
		}
	}
	e.wmu.Unlock()
	e.mu.RUnlock()
	switch {
	case err != nil:
		return err // the processor refused the call; nothing changed
	case enqErr != nil:
		return writeErr(enqErr)
	}
	for _, done := range waits {
		select {
		case err = <-done:
		case <-ctx.Done():
			// The change is queued and will be written or fail; the client gave up.
			return ctx.Err()
		}
		if err != nil {
			return writeErr(err)
		}
	}
	return nil
}

// writeErr says what a failed write means for its client.
func writeErr(err error) error {
	switch {
	case errors.Is(err, coord.ErrLockLost), errors.Is(err, coord.ErrNotLocked):
		return fmt.Errorf("%w: %v", ErrWriteFailed, err)
	case errors.Is(err, kb.ErrOutcomeUnknown):
		return fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	case errors.Is(err, kb.ErrStopped):
		return fmt.Errorf("%w: %v", ErrNotServing, err)
	}
	return fmt.Errorf("%w: %v", ErrNotStored, err)
}

// enqueue submits changes in order; a clear goes in a submission of its own.
func enqueue(com *kb.Committer, changes []kb.Change) ([]<-chan error, error) {
	var waits []<-chan error
	for len(changes) > 0 {
		n := 1
		if !changes[0].Clear {
			for n < len(changes) && !changes[n].Clear {
				n++
			}
		}
		done, err := com.Enqueue(changes[:n]...)
		if err != nil {
			return waits, err
		}
		waits = append(waits, done)
		changes = changes[n:]
	}
	return waits, nil
}

// kbChanges turns processor changes into stored records. A ClearAll is split
// from the puts that follow it (a clear goes alone in a transaction).
func kbChanges(changes processor.Changes) []kb.Change {
	out := make([]kb.Change, 0, len(changes))
	for _, ch := range changes {
		switch ch.Kind {
		case processor.PutPattern:
			b, err := ch.Pattern.MarshalJSON()
			if err == nil {
				out = append(out, kb.Change{Put: kb.Record{Key: patternsDir + ch.Pattern.Name, Value: b}})
			}
		case processor.PutVector:
			b, err := ch.Vector.MarshalJSON()
			if err == nil {
				out = append(out, kb.Change{Put: kb.Record{Key: vectorsDir + strings.TrimPrefix(ch.Vector.Name, "VECTOR|"), Value: b}})
			}
		case processor.ClearAll:
			out = append(out, kb.Change{Clear: true})
		}
	}
	return out
}

// modelMeta is models/<model>/meta, rewritten in every model transaction: who
// wrote the model last, under which fence. With it the model's etcd history
// says which writer made each change in which lock epoch (the fault suite's
// checker reads it).
type modelMeta struct {
	V         int       `json:"v"`
	Model     string    `json:"model"`
	Writer    string    `json:"writer"`
	Host      string    `json:"host"`
	Fence     int64     `json:"fence"`
	WrittenAt time.Time `json:"written_at"`
}

func (m modelMeta) encode() []byte {
	m.WrittenAt = time.Now().UTC()
	b, _ := json.Marshal(m)
	return b
}

// warmCopy is the standby's processor: loaded from etcd when the node starts
// waiting for the lock, then kept current by replaying the model's changes
// from a watch, so a take-over only has to catch up, not load everything.
type warmCopy struct {
	e      *engine
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex
	proc   *processor.Processor // nil until loaded
	rev    int64                // every change up to rev is in proc
	moved  chan struct{}        // closed and replaced when rev moves
	broken bool                 // proc is not current; load again
}

// follow starts keeping a warm copy of the model until stop.
func (e *engine) follow(ctx context.Context) *warmCopy {
	ctx, cancel := context.WithCancel(ctx)
	w := &warmCopy{e: e, cancel: cancel, done: make(chan struct{}), moved: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			err := w.loadAndFollow(ctx)
			w.mu.Lock()
			w.broken = true
			w.mu.Unlock()
			if ctx.Err() == nil {
				e.lg.Debug("warm copy reloads", zap.Error(err))
				if !errors.Is(err, kb.ErrCompacted) && !sleep(ctx, time.Second) {
					return
				}
			}
		}
	}()
	return w
}

// loadAndFollow loads the model, then replays its changes until an error.
// A revision counts only once all of its events applied: until then the
// copy stays at the revision before, and a revision that cannot be replayed
// marks the copy broken before anything can take it.
func (w *warmCopy) loadAndFollow(ctx context.Context) error {
	e := w.e
	p, rev, err := e.load(ctx)
	if err != nil {
		return err
	}
	w.advance(p, rev, false)
	return kb.Follow(ctx, e.n.cli, e.n.cfg.Model, rev+1, func(rev int64, evs []kb.Event) error {
		if err := replayRevision(p, evs); err != nil {
			w.mu.Lock()
			w.broken = true
			w.mu.Unlock()
			return err // e.g. out of learn order: load again
		}
		w.advance(p, rev, true)
		return nil
	})
}

// replayRevision applies the events of one revision to p: decoded first,
// then replayed together. Records are deleted only by a clear-all, so the
// deletes of a revision are one ClearAll.
func replayRevision(p *processor.Processor, evs []kb.Event) error {
	var ch processor.Changes
	cleared := false
	for _, ev := range evs {
		if ev.Deleted {
			if !cleared {
				cleared = true
				ch = append(ch, processor.Change{Kind: processor.ClearAll})
			}
			continue
		}
		c, ok, err := decodeRecord(ev.Record)
		if err != nil {
			return err
		}
		if ok {
			ch = append(ch, c)
		}
	}
	if len(ch) == 0 {
		return nil
	}
	return p.Replay(ch)
}

// advance records that p holds every change up to rev.
func (w *warmCopy) advance(p *processor.Processor, rev int64, sameProc bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !sameProc {
		w.proc, w.broken = p, false
	}
	if rev > w.rev || !sameProc {
		w.rev = rev
		close(w.moved)
		w.moved = make(chan struct{})
	}
}

// take stops following and returns the processor once it holds every change
// up to rev (asking etcd for progress), or nil when it cannot get there
// within wait: the caller loads the model instead. metaRev is the mod
// revision of the model's meta key (0 if there is none): every model
// transaction rewrites it, so a copy that has seen metaRev has seen them all.
func (w *warmCopy) take(ctx context.Context, rev, metaRev int64, wait time.Duration) *processor.Processor {
	defer w.stop()
	timeout := time.NewTimer(wait)
	defer timeout.Stop()
	// A progress request reaches only watches already open, and the copy's
	// watch may not be yet: ask again until the copy has caught up.
	ask := time.NewTicker(100 * time.Millisecond)
	defer ask.Stop()
	for {
		w.mu.Lock()
		p, have, broken, moved := w.proc, w.rev, w.broken, w.moved
		w.mu.Unlock()
		if p != nil && !broken && (have >= rev || metaRev > 0 && have >= metaRev) {
			return p
		}
		if p != nil && !broken {
			kb.RequestProgress(ctx, w.e.n.cli)
		}
		select {
		case <-moved:
		case <-ask.C:
		case <-timeout.C:
			return nil
		case <-ctx.Done():
			return nil
		}
	}
}

func (w *warmCopy) stop() {
	w.cancel()
	<-w.done
}

// decodeRecord turns a stored record into the change that made it; ok is
// false for keys that are not patterns or vectors (the meta record).
func decodeRecord(r kb.Record) (processor.Change, bool, error) {
	switch {
	case strings.HasPrefix(r.Key, patternsDir):
		var p processor.PatternRecord
		if err := p.UnmarshalJSON(r.Value); err != nil {
			return processor.Change{}, false, fmt.Errorf("%s: %w", r.Key, err)
		}
		return processor.Change{Kind: processor.PutPattern, Pattern: p}, true, nil
	case strings.HasPrefix(r.Key, vectorsDir):
		var v processor.VectorRecord
		if err := v.UnmarshalJSON(r.Value); err != nil {
			return processor.Change{}, false, fmt.Errorf("%s: %w", r.Key, err)
		}
		return processor.Change{Kind: processor.PutVector, Vector: v}, true, nil
	}
	return processor.Change{}, false, nil
}

// loadProgress says how far the model loads in progress are, for /readyz.
type loadProgress struct {
	mu      sync.Mutex
	running map[*loadState]bool
}

type loadState struct {
	start   time.Time
	records int64
	phase   string
}

func (lp *loadProgress) begin() *loadState {
	st := &loadState{start: time.Now(), phase: "reading"}
	lp.mu.Lock()
	defer lp.mu.Unlock()
	if lp.running == nil {
		lp.running = map[*loadState]bool{}
	}
	lp.running[st] = true
	return st
}

func (lp *loadProgress) set(st *loadState, phase string, records int64) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	st.phase, st.records = phase, records
}

func (lp *loadProgress) end(st *loadState) {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	delete(lp.running, st)
}

// String describes the loads in progress ("" when none runs).
func (lp *loadProgress) String() string {
	lp.mu.Lock()
	defer lp.mu.Unlock()
	var parts []string
	for st := range lp.running {
		parts = append(parts, fmt.Sprintf("%s %d records for %.1fs", st.phase, st.records, time.Since(st.start).Seconds()))
	}
	sort.Strings(parts)
	return strings.Join(parts, "; ")
}

// load streams the whole model at one revision, decoding records as they
// arrive, and builds a processor from them. Records arrive in key (hash)
// order and the processor is built in learn order, so the build follows the
// read.
func (e *engine) load(ctx context.Context) (*processor.Processor, int64, error) {
	var pats []processor.PatternRecord
	var vecs []processor.VectorRecord
	st := e.progress.begin()
	defer e.progress.end(st)
	rev, err := kb.Load(ctx, e.n.cli.KV, e.lg, e.n.cfg.Model, func(r kb.Record) error {
		c, ok, err := decodeRecord(r)
		switch {
		case err != nil:
			return err
		case !ok:
		case c.Kind == processor.PutPattern:
			pats = append(pats, c.Pattern)
		default:
			vecs = append(vecs, c.Vector)
		}
		return nil
	}, func(n int64) { e.progress.set(st, "reading model "+e.n.cfg.Model+":", n) })
	if err != nil {
		return nil, 0, err
	}
	e.progress.set(st, "building the processor from", int64(len(pats)+len(vecs)))
	e.mu.RLock()
	genes, name := e.genes, e.name
	e.mu.RUnlock()
	p, err := processor.Load(genes, e.n.cfg.ID, name, pats, vecs)
	if err != nil {
		return nil, 0, fmt.Errorf("node: model %s: %w", e.n.cfg.Model, err)
	}
	return p, rev, nil
}

// activate takes the warm copy once it has caught up with etcd (or loads the
// model when it cannot, or warm is nil) and starts the committer fenced by
// lock.
func (e *engine) activate(ctx context.Context, lock *coord.ModelLock, warm *warmCopy, fence coord.Fence) error {
	start := time.Now()
	// Every write of the previous holder precedes our lock: the revision of
	// any read now covers them all.
	resp, err := e.n.cli.Get(ctx, coord.ModelPrefix(e.n.cfg.Model)+kb.MetaKey)
	if err != nil {
		if warm != nil {
			warm.stop()
		}
		return fmt.Errorf("node: sync model %s: %w", e.n.cfg.Model, err)
	}
	how := "warm copy"
	var metaRev int64
	if len(resp.Kvs) > 0 {
		metaRev = resp.Kvs[0].ModRevision
	}
	wait := e.n.cfg.TTL
	if metaRev == 0 {
		// No node ever wrote the model: it is empty or was imported, and a
		// full load is as quick as waiting for the copy's progress.
		wait = 0
	}
	var p *processor.Processor
	if warm != nil {
		p = warm.take(ctx, resp.Header.Revision, metaRev, wait)
	}
	if p == nil {
		how = "full load"
		if p, _, err = e.load(ctx); err != nil {
			return err
		}
	}
	p.SetMaxRecordBytes(kb.MaxRecordBytes)
	m := e.n.m
	meta := modelMeta{V: coord.SchemaVersion, Model: e.n.cfg.Model, Writer: e.n.cfg.ID, Host: e.n.cfg.AdvertiseHost, Fence: fence.Rev}
	com := kb.NewCommitter(e.n.cfg.Model, lock.Txn, e.lg, func(n int, took time.Duration) {
		m.LearnBatch.Observe(float64(n))
		m.EtcdRequest.WithLabelValues("model_txn").Observe(took.Seconds())
	}, kb.WithMeta(meta.encode))
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	failCh, failOnce := make(chan struct{}), &sync.Once{}
	go func() {
		defer close(done)
		if err := com.Run(cctx); err != nil && cctx.Err() == nil {
			failOnce.Do(func() { close(failCh) })
		}
	}()
	sessions, err := e.openSessions(ctx, lock, p)
	if err != nil {
		cancel()
		<-done
		return err
	}

	e.mu.Lock()
	e.proc, e.committer, e.stopCommit, e.commitDone = p, com, cancel, done
	e.sessions = sessions
	e.failCh, e.failOnce = failCh, failOnce
	e.mu.Unlock()
	st := p.Stats()
	m.Patterns.Set(float64(st.Models))
	e.lg.Info("model ready", zap.String("model", e.n.cfg.Model), zap.String("from", how), zap.Int("patterns", st.Models),
		zap.Int("vectors", st.Vectors), zap.Int64("fence", fence.Rev), zap.Duration("took", time.Since(start)))
	return nil
}

// deactivate stops serving: new calls get ErrNotServing, the committer stops
// (queued changes fail), and the processor is dropped; it is rebuilt from
// etcd at the next activation.
func (e *engine) deactivate() {
	e.mu.Lock()
	p := e.proc
	if p != nil {
		e.genes, e.name = p.Config(), p.Name()
	}
	e.proc = nil
	stop, done := e.stopCommit, e.commitDone
	e.committer, e.stopCommit, e.commitDone = nil, nil, nil
	sessions := e.sessions
	e.sessions = nil
	e.mu.Unlock()
	if sessions != nil {
		sessions.close()
	}
	if stop != nil {
		stop()
		<-done
	}
}

// drain waits up to d for calls in flight to finish.
func (e *engine) drain(d time.Duration) {
	done := make(chan struct{})
	go func() { e.inflight.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d):
		e.lg.Warn("drain timeout: calls still in flight", zap.Duration("waited", d))
	}
}
