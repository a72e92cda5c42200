package node

// This file is the engine: the processor while the node holds the model lock
// (load, activate, read, write, deactivate, drain).

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/metrics"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// engine owns the processor while the node holds the lock, and the warm copy
// of the model while it waits.
type engine struct {
	// What the engine needs, set by newEngine.
	cli         *clientv3.Client // confined to the key prefix
	model       string           // the model it serves
	id, host    string           // the node's id and advertised host, for the model's meta
	ttl         time.Duration    // the session TTL: how long a take-over waits for the warm copy
	sessionTTLs SessionTTLs
	ckPolicy    kb.Policy         // when to checkpoint
	ckStep      func(step string) // told each checkpoint step (crash tests); may be nil
	m           *metrics.Metrics
	sm          *metrics.Sessions
	lg          *zap.Logger

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
}

// newEngine builds the engine of the node configured by cfg (defaults
// applied); cli must be confined to the key prefix.
func newEngine(cli *clientv3.Client, cfg Config, m *metrics.Metrics, sm *metrics.Sessions, lg *zap.Logger) *engine {
	policy := kb.DefaultPolicy()
	if cfg.CheckpointPolicy != nil {
		policy = *cfg.CheckpointPolicy
	}
	return &engine{
		cli: cli, model: cfg.Model, id: cfg.ID, host: cfg.AdvertiseHost, ttl: cfg.TTL, sessionTTLs: cfg.SessionTTLs,
		ckPolicy: policy, ckStep: cfg.CheckpointStep, m: m, sm: sm, lg: lg.Named("engine"),
		genes: cfg.Genes, name: cfg.Name, failCh: make(chan struct{}), failOnce: &sync.Once{},
	}
}

// genes returns the current genes as name → value, for the registry record.
func (e *engine) geneMap() map[string]any {
	e.mu.RLock()
	p := e.proc
	e.mu.RUnlock()
	if p == nil {
		tmp, err := processor.New(e.genes, e.id, e.name)
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
		var done <-chan error
		if done, enqErr = com.Enqueue(changes.Coalesce()...); enqErr != nil {
			// The processor holds changes etcd will not get.
			failOnce.Do(func() { close(failCh) })
		} else {
			waits = append(waits, done)
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

// load streams the whole model at one revision and builds a processor from
// it as the records arrive: the snapshot, then the log replayed on top.
func (e *engine) load(ctx context.Context) (*processor.Processor, kb.State, error) {
	ps := e.progress.begin()
	defer e.progress.end(ps)
	e.mu.RLock()
	genes, name := e.genes, e.name
	e.mu.RUnlock()
	l := &modelLoader{genes: genes, id: e.id, name: name, onBuild: func(n int64) {
		e.progress.set(ps, "building the processor from", n)
	}}
	st, err := kb.Load(ctx, e.cli.KV, e.lg, e.model, l, func(n int64) {
		e.progress.set(ps, "reading model "+e.model+":", n)
	})
	if err != nil {
		return nil, kb.State{}, fmt.Errorf("node: model %s: %w", e.model, err)
	}
	return l.p, st, nil
}

// modelLoader builds a processor as kb.Load reads the model: the
// snapshot's records go straight into the index (processor.Builder), the log
// is replayed on the built processor.
type modelLoader struct {
	genes    processor.Config
	id, name string
	onBuild  func(records int64)
	b        *processor.Builder
	n        int64
	p        *processor.Processor
}

// Size makes room for the snapshot's records (kb.Sizer).
func (l *modelLoader) Size(patterns, vectors int) {
	if l.b == nil {
		l.b = processor.NewBuilder()
	}
	l.b.Grow(patterns, vectors)
}

func (l *modelLoader) Record(ch processor.Change) error {
	if l.b == nil {
		l.b = processor.NewBuilder()
	}
	l.n++
	if ch.Kind == processor.PutVector {
		return l.b.AddVector(ch.Vector)
	}
	return l.b.AddPattern(ch.Pattern)
}

func (l *modelLoader) Built() error {
	if l.b == nil {
		l.b = processor.NewBuilder()
	}
	l.onBuild(l.n)
	p, err := l.b.Build(l.genes, l.id, l.name)
	l.b, l.p = nil, p
	return err
}

func (l *modelLoader) Changes(chs processor.Changes) error { return l.p.Replay(chs) }

// activate takes the warm copy once it has caught up with etcd (or loads the
// model when it cannot, or warm is nil) and starts the committer fenced by
// lock.
func (e *engine) activate(ctx context.Context, lock *coord.ModelLock, warm *warmCopy, fence coord.Fence) error {
	start := time.Now()
	// Every write of the previous holder precedes our lock: the revision of
	// any read now covers them all.
	cur, err := kb.ReadCurrent(ctx, e.cli.KV, e.model)
	if err != nil {
		if warm != nil {
			warm.stop()
		}
		return fmt.Errorf("node: sync model %s: %w", e.model, err)
	}
	how := "warm copy"
	wait := e.ttl
	if cur.MetaRev == 0 {
		// No node ever wrote the model: it is empty or was imported, and a
		// full load is as quick as waiting for the copy's progress.
		wait = 0
	}
	var p *processor.Processor
	var next uint64
	if warm != nil {
		p, next = warm.take(ctx, cur.Rev, cur.MetaRev, wait)
	}
	ck := checkpointState{head: cur.Head, legacy: cur.Legacy}
	if p == nil {
		how = "full load"
		var st kb.State
		if p, st, err = e.load(ctx); err != nil {
			return err
		}
		next = st.NextSeq
		ck = checkpointState{head: st.Head, legacy: st.Legacy, logBytes: st.LogBytes}
	}
	ck.logFrom = next
	if ck.head != nil {
		ck.logFrom = ck.head.LogFrom
	}
	p.SetMaxRecordBytes(kb.MaxRecordBytes)
	m := e.m
	// models/<model>/meta, rewritten in every model transaction: with it the
	// model's etcd history says which writer made each change in which lock
	// epoch (the fault suite's checker reads it).
	meta := kb.Meta{V: coord.SchemaVersion, Model: e.model, Writer: e.id, Host: e.host, Fence: fence.Rev}
	com := kb.NewCommitter(e.model, lock.Txn, e.lg, next, func(n int, took time.Duration) {
		m.LearnBatch.Observe(float64(n))
		m.EtcdRequest.WithLabelValues("model_txn").Observe(took.Seconds())
	}, kb.WithMeta(meta.Encode))
	cctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	failCh, failOnce := make(chan struct{}), &sync.Once{}
	ckp := e.newCheckpointer(lock, com, meta, ck)
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() { defer wg.Done(); ckp.run(cctx) }()
		defer wg.Wait()
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
	e.lg.Info("model ready", zap.String("model", e.model), zap.String("from", how), zap.Int("patterns", st.Models),
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
