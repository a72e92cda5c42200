// This file is the scheduler: Run starts the workloads, injects seeded random
// faults one after the other, waits for the cluster to settle and checks.

package faults

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/coord"
)

// RunConfig is one fault-injection run.
type RunConfig struct {
	// Duration is how long faults are injected.
	Duration time.Duration
	// Faults, when not 0, stops the run after that many faults.
	Faults int
	// Seed chooses the faults and the workloads' requests.
	Seed uint64
	// Weights of the fault kinds (Fault* constants); nil = DefaultWeights.
	Weights map[string]int
	// Learners and Messengers are the number of client goroutines of each
	// workload (default 4 and 1); one etcd writer always runs.
	Learners, Messengers int
	// MsgTTL is the TTL of the messages sent (default 20 s: longer than any
	// fault keeps a receiver away).
	MsgTTL time.Duration
	// Gap is the quiet time between a fault's end and the next (default 1 s).
	Gap time.Duration
	// Logf logs the faults as they are injected.
	Logf func(string, ...any)
}

// DefaultWeights is the mix of faults of a run.
var DefaultWeights = map[string]int{
	FaultKill: 3, FaultPause: 2, FaultRestart: 1, FaultPartition: 2, FaultOneWay: 2, FaultBreak: 1, FaultEtcd: 3,
}

// FaultKinds lists the kinds in summary order.
var FaultKinds = []string{FaultKill, FaultPause, FaultRestart, FaultPartition, FaultOneWay, FaultBreak, FaultEtcd}

// Result is a finished run.
type Result struct {
	Input   Input
	Report  Report
	Elapsed time.Duration
	Seed    uint64
}

// Summary is the one-line account of a run.
func (r *Result) Summary() string {
	counts := map[string]int{}
	for _, f := range r.Input.Faults {
		counts[f.Kind]++
	}
	var parts []string
	for _, k := range FaultKinds {
		parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
	}
	return fmt.Sprintf("faults: %d operations, %d faults (%s): %d violations "+
		"[%d acknowledged learns, %d model writes, %d running claims, %d messages (%d delivered, %d to receivers away), %d etcd puts; seed %d; %v]",
		len(r.Input.Ops), len(r.Input.Faults), strings.Join(parts, ", "), len(r.Report.Violations),
		r.Report.AckedLearns, r.Report.ModelWrites, r.Report.Running, r.Report.Messages, r.Report.Delivered, r.Report.Exempt,
		r.Report.Puts, r.Seed, r.Elapsed.Round(time.Second))
}

// settleTimeout bounds how long the cluster may take to recover after a fault.
const settleTimeout = 45 * time.Second

// Run runs the workloads against c while injecting faults for rc.Duration,
// heals everything, reads what the checker needs and checks it.
func Run(ctx context.Context, c *Cluster, rc RunConfig) (*Result, error) {
	start := time.Now()
	if rc.Weights == nil {
		rc.Weights = DefaultWeights
	}
	if rc.Learners == 0 {
		rc.Learners = 4
	}
	if rc.Messengers == 0 {
		rc.Messengers = 1
	}
	if rc.MsgTTL == 0 {
		rc.MsgTTL = 20 * time.Second
	}
	if rc.Gap == 0 {
		rc.Gap = time.Second
	}
	if rc.Logf == nil {
		rc.Logf = func(string, ...any) {}
	}
	rec := NewRecorder(c.Client, coord.DefaultPrefix)
	recCtx, stopRec := context.WithCancel(ctx)
	var recWG sync.WaitGroup
	recWG.Add(1)
	go func() { defer recWG.Done(); rec.Run(recCtx) }()
	defer func() { stopRec(); recWG.Wait() }()

	if err := c.WaitSettled(ctx, settleTimeout); err != nil {
		return nil, fmt.Errorf("faults: cluster not ready before the run: %w", err)
	}
	log := &Log{}
	w := &clients{c: c, log: log, msgTTL: rc.MsgTTL}
	rng := rand.New(rand.NewPCG(rc.Seed, rc.Seed^0x5eed))
	wctx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i := 0; i < rc.Learners; i++ {
		r := rand.New(rand.NewPCG(rc.Seed, uint64(100+i)))
		wg.Add(1)
		go func() { defer wg.Done(); w.learner(wctx, i, r) }()
	}
	for i := 0; i < rc.Messengers; i++ {
		r := rand.New(rand.NewPCG(rc.Seed, uint64(200+i)))
		wg.Add(1)
		go func() { defer wg.Done(); w.messenger(wctx, i, r) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); w.etcdWriter(wctx) }()

	s := &scheduler{c: c, w: w, rng: rng, logf: rc.Logf}
	var faults []Fault
	var runErr error
	// Every kind once first, in a seeded order, so that even a short run
	// covers them all; then as the weights say.
	var deck []string
	for _, k := range FaultKinds {
		if rc.Weights[k] > 0 {
			deck = append(deck, k)
		}
	}
	rng.Shuffle(len(deck), func(i, j int) { deck[i], deck[j] = deck[j], deck[i] })
	for time.Since(start) < rc.Duration && (rc.Faults == 0 || len(faults) < rc.Faults) && ctx.Err() == nil {
		kind := pickWeighted(rng, rc.Weights)
		if len(faults) < len(deck) {
			kind = deck[len(faults)]
		}
		f, err := s.inject(ctx, kind)
		if err != nil {
			runErr = fmt.Errorf("faults: inject %s: %w", kind, err)
			break
		}
		serr := c.WaitSettled(ctx, settleTimeout)
		f.Settled, f.SettledAt = serr == nil, time.Now()
		if serr != nil {
			f.SettleErr = serr.Error()
		}
		faults = append(faults, f)
		rc.Logf("fault %d: %s -> settled %v %s", len(faults), describeFault(f, ""), f.Settled, f.SettleErr)
		if !f.Settled {
			break // the checker reports it; more faults would only blur it
		}
		if !pace(ctx, rc.Gap) {
			break
		}
	}
	stopWork()
	wg.Wait()
	// Whatever a failed injection left: heal, resume, start.
	s.healAll(ctx)
	if err := c.WaitSettled(ctx, settleTimeout); err != nil && runErr == nil && len(faults) > 0 && faults[len(faults)-1].Settled {
		runErr = fmt.Errorf("faults: cluster not settled after the run: %w", err)
	}
	if runErr != nil {
		return nil, runErr
	}

	// Wait until every acknowledged message was handled or expired.
	if err := waitMessages(ctx, rec, log.Ops()); err != nil {
		return nil, err
	}
	w.verify(ctx, log.Ops())
	final, err := readPrefix(ctx, c.Client, "faults/etcd/")
	if err != nil {
		return nil, fmt.Errorf("faults: read the etcd workload's keys: %w", err)
	}
	if err := rec.Sync(ctx); err != nil {
		return nil, err
	}
	runEnd := time.Now()
	events, err := rec.Events()
	if err != nil {
		return nil, err
	}
	in := Input{
		Events: events, Ops: log.Ops(), Faults: faults, Nodes: c.Cfg.Nodes, TTL: c.Cfg.TTL,
		ServiceBound: ServiceBound(c.Cfg.ElectionTimeout), MsgGrace: 5 * time.Second, RunEnd: runEnd, EtcdFinal: final,
	}
	res := &Result{Input: in, Report: Check(in), Seed: rc.Seed}
	res.Elapsed = time.Since(start)
	return res, nil
}

// ServiceBound is how soon etcd must take writes again after losing one
// member: a follower notices a dead leader after an election timeout drawn
// from [ET, 2 ET), then one round of (pre-)votes and a commit; 1 s covers
// those rounds and a client request that went to the dead member first.
func ServiceBound(electionTimeout time.Duration) time.Duration {
	return 2*electionTimeout + time.Second
}

func pickWeighted(rng *rand.Rand, w map[string]int) string {
	kinds := make([]string, 0, len(w))
	total := 0
	for k, n := range w {
		if n > 0 {
			kinds = append(kinds, k)
			total += n
		}
	}
	sort.Strings(kinds)
	x := rng.IntN(total)
	for _, k := range kinds {
		if x < w[k] {
			return k
		}
		x -= w[k]
	}
	return kinds[len(kinds)-1]
}

// waitMessages waits until every acknowledged message has a delete in the
// history or is past its expiry (bounded by the latest expiry).
func waitMessages(ctx context.Context, rec *Recorder, ops []Op) error {
	var latest time.Time
	pending := map[string]time.Time{}
	for _, op := range ops {
		if op.Kind == OpSend && op.Outcome == OK {
			pending[op.MsgKey] = op.ExpiresAt
			if op.ExpiresAt.After(latest) {
				latest = op.ExpiresAt
			}
		}
	}
	ctx, cancel := context.WithDeadline(ctx, latest.Add(5*time.Second))
	defer cancel()
	for {
		if err := rec.Sync(ctx); err != nil {
			return nil // past the deadline: the checker reports what is missing
		}
		events, _ := rec.Events()
		for _, e := range events {
			if e.Delete {
				delete(pending, e.Key)
			}
		}
		now := time.Now()
		for k, exp := range pending {
			if now.After(exp.Add(time.Second)) {
				delete(pending, k)
			}
		}
		if len(pending) == 0 || !pace(ctx, 200*time.Millisecond) {
			return nil
		}
	}
}

func readPrefix(ctx context.Context, cli *clientv3.Client, prefix string) (map[string]string, error) {
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := cli.Get(gctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, err
	}
	out := make(map[string]string, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		out[string(kv.Key)] = string(kv.Value)
	}
	return out, nil
}

// scheduler injects faults.
type scheduler struct {
	c    *Cluster
	w    *clients
	rng  *rand.Rand
	logf func(string, ...any)
}

// hold is how long a node stays paused or cut off: past its TTL, so that
// etcd expires its lease, and by a second more than the registry check's
// bound, so the check sees the record go during the fault.
func (s *scheduler) hold() time.Duration { return s.c.Cfg.TTL + 2*time.Second }

// target picks a node: two times in three the holder of a random model.
func (s *scheduler) target(ctx context.Context) *Node {
	if s.rng.IntN(3) < 2 {
		models := s.c.Models()
		if h, err := s.c.Holder(ctx, models[s.rng.IntN(len(models))]); err == nil && s.c.Node(h) != nil {
			return s.c.Node(h)
		}
	}
	return s.c.Nodes[s.rng.IntN(len(s.c.Nodes))]
}

func (s *scheduler) inject(ctx context.Context, kind string) (Fault, error) {
	switch kind {
	case FaultEtcd:
		return s.etcd(ctx)
	case FaultBreak:
		models := s.c.Models()
		return s.breakLock(ctx, models[s.rng.IntN(len(models))])
	}
	n := s.target(ctx)
	f := Fault{Kind: kind, Target: n.ID, Disappear: true}
	switch kind {
	case FaultKill:
		f.Start = time.Now()
		if err := n.Kill(); err != nil {
			return f, err
		}
		// Start it again once etcd has expired its record: a new process
		// would be refused the id while the old record lives.
		s.c.WaitGone(ctx, n.ID, s.c.Cfg.TTL+5*time.Second)
		if err := n.Start(); err != nil {
			return f, err
		}
		f.Healed = time.Now()
	case FaultRestart:
		f.Start = time.Now()
		if err := n.Stop(10 * time.Second); err != nil {
			return f, err
		}
		if err := n.Start(); err != nil {
			return f, err
		}
		f.Healed = time.Now()
	case FaultPause:
		f.Start = time.Now()
		if err := n.Pause(); err != nil {
			return f, err
		}
		pace(ctx, s.hold())
		// Requests that wait in its socket and are handled the instant it
		// resumes, before or after it sees that its lease is gone.
		read := s.w.lateLearns(n, n.Model, 3)
		if err := n.Resume(); err != nil {
			return f, err
		}
		f.Healed = time.Now()
		f.Detail = "3 learns queued in its socket"
		read()
	case FaultPartition, FaultOneWay:
		toEtcd, fromEtcd := true, true
		f.Detail = "both ways"
		if kind == FaultOneWay {
			if s.rng.IntN(2) == 0 {
				fromEtcd, f.Detail = false, "it cannot send to etcd"
			} else {
				toEtcd, f.Detail = false, "it cannot hear from etcd"
				f.Grace = s.c.Cfg.TTL / 3
			}
		}
		f.Start = time.Now()
		if err := s.c.CutNodeFromEtcd(ctx, n.ID, toEtcd, fromEtcd); err != nil {
			return f, err
		}
		pace(ctx, s.hold())
		if err := s.c.Net.Heal(ctx); err != nil {
			return f, err
		}
		f.Healed = time.Now()
	default:
		return f, fmt.Errorf("unknown fault kind %q", kind)
	}
	return f, nil
}

// breakLock makes model's holder deaf to etcd (its packets still arrive, no
// answer comes back: its keep-alives, watches and writes are sent and
// applied, it hears nothing), breaks its lock as an admin would (katoctl
// locks break), and sends it learns at once. The holder does not know it
// lost the lock: only the fence compare keeps its writes out.
//
// The learners are held back while it sets up, so that the holder has no
// write in flight when it goes deaf and the late learns' transactions are
// among the first things it sends after the cut: TCP delivers what a host
// that hears nothing sends until its first retransmission timeout, then
// only retransmits.
func (s *scheduler) breakLock(ctx context.Context, model string) (Fault, error) {
	s.w.quiet.Lock()
	quiet := true
	release := func() {
		if quiet {
			quiet = false
			s.w.quiet.Unlock()
		}
	}
	defer release()
	h, err := s.c.Holder(ctx, model)
	if err != nil {
		return Fault{}, err
	}
	n := s.c.Node(h)
	if n == nil {
		return Fault{}, fmt.Errorf("model %s: holder %q is not a node", model, h)
	}
	f := Fault{Kind: FaultBreak, Target: n.ID, Disappear: true, Grace: s.c.Cfg.TTL / 3, Start: time.Now()}
	if err := s.c.CutNodeFromEtcd(ctx, n.ID, false, true); err != nil {
		return f, err
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	st, err := coord.BreakLock(bctx, s.c.KV, model)
	cancel()
	if err != nil {
		f.Detail = "lock not broken: " + err.Error()
	} else {
		f.Detail = fmt.Sprintf("lock of %s broken (fence %d)", model, st.Holder.Rev)
	}
	var wg sync.WaitGroup
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.w.learnOnce(ctx, n, model, fmt.Sprintf("b%d-%d-", f.Start.UnixNano(), i), true)
		}()
	}
	// The late learns' first transaction is on its way once they have had
	// time to be handled; they get no answer before the heal.
	pace(ctx, time.Second)
	release()
	pace(ctx, s.hold()-time.Second)
	if err := s.c.Net.Heal(ctx); err != nil {
		return f, err
	}
	f.Healed = time.Now()
	wg.Wait()
	return f, nil
}

// etcd kills or isolates one member, the leader half of the time, measures
// how long writes fail, and brings it back.
func (s *scheduler) etcd(ctx context.Context) (Fault, error) {
	leader, err := s.c.Leader(ctx)
	if err != nil {
		return Fault{}, err
	}
	m := s.c.Member(leader)
	if s.rng.IntN(2) == 0 {
		var others []*Member
		for _, o := range s.c.Members {
			if o.Name != leader {
				others = append(others, o)
			}
		}
		m = others[s.rng.IntN(len(others))]
	}
	kill := s.rng.IntN(2) == 0
	f := Fault{Kind: FaultEtcd, Target: m.Name, Leader: m.Name == leader, Detail: "isolated"}
	if kill {
		f.Detail = "killed"
	}
	if f.Leader {
		f.Detail += ", the leader"
	}
	f.Start = time.Now()
	if kill {
		if err := m.Kill(); err != nil {
			return f, err
		}
	} else if err := s.c.IsolateMember(ctx, m.Name); err != nil {
		return f, err
	}
	f.Recovery = s.probe(ctx, f.Start, 15*time.Second)
	pace(ctx, time.Until(f.Start.Add(4*time.Second)))
	if kill {
		if err := m.Start(); err != nil {
			return f, err
		}
	} else if err := s.c.Net.Heal(ctx); err != nil {
		return f, err
	}
	f.Healed = time.Now()
	return f, nil
}

// probe writes until a write goes through and returns how long after since
// that was, or -1 after limit.
func (s *scheduler) probe(ctx context.Context, since time.Time, limit time.Duration) time.Duration {
	deadline := since.Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ctx), 300*time.Millisecond)
		_, err := s.c.Client.Put(pctx, "faults/probe", since.String())
		cancel()
		if err == nil {
			return time.Since(since)
		}
		pace(ctx, 20*time.Millisecond)
	}
	return -1
}

// healAll undoes whatever a fault left: cuts, paused or stopped processes.
func (s *scheduler) healAll(ctx context.Context) {
	s.c.Net.Heal(ctx)
	for _, m := range s.c.Members {
		if m.Running() {
			m.Resume()
		} else if err := m.Start(); err != nil {
			s.logf("restart %s: %v", m.Name, err)
		}
	}
	for _, n := range s.c.Nodes {
		if n.Running() {
			n.Resume()
			continue
		}
		s.c.WaitGone(ctx, n.ID, s.c.Cfg.TTL+5*time.Second)
		if err := n.Start(); err != nil && !errors.Is(err, context.Canceled) {
			s.logf("restart %s: %v", n.ID, err)
		}
	}
}
