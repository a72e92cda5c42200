// This file records what happened: every change of the /kato/ keys (Recorder),
// the clients' operations (Log) and the injected faults.

package faults

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kato-coord/kato/coord"
)

// Event is one change of a key below the root prefix, as etcd's watch
// reported it. etcd orders them: by revision, and within a revision in the
// order of the transaction's operations.
type Event struct {
	Rev       int64
	Delete    bool
	Key       string // relative to the root prefix
	Value     []byte
	CreateRev int64
	Lease     int64
	// At is when this process received the event: never before the change,
	// a little after it.
	At time.Time
}

// Recorder keeps the whole history of the keys below the root prefix, from
// a watch that starts at revision 1 (the cluster is new and nothing is
// compacted) and resumes after the last revision it saw when it breaks.
type Recorder struct {
	cli    *clientv3.Client
	prefix string

	mu      sync.Mutex
	events  []Event
	lastRev int64 // every revision up to it has been seen
	changed chan struct{}
	err     error // compaction: the history is incomplete
}

// NewRecorder returns a recorder of prefix on cli; Run records.
func NewRecorder(cli *clientv3.Client, prefix string) *Recorder {
	return &Recorder{cli: cli, prefix: prefix, changed: make(chan struct{})}
}

// Run records until ctx ends.
func (r *Recorder) Run(ctx context.Context) {
	for ctx.Err() == nil {
		r.mu.Lock()
		next := r.lastRev + 1
		r.mu.Unlock()
		wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
		wch := r.cli.Watch(wctx, r.prefix, clientv3.WithPrefix(), clientv3.WithRev(next), clientv3.WithProgressNotify())
		for wr := range wch {
			if wr.CompactRevision != 0 {
				r.mu.Lock()
				r.err = fmt.Errorf("faults: history compacted at revision %d: incomplete", wr.CompactRevision)
				r.mu.Unlock()
				break
			}
			if wr.Err() != nil {
				break
			}
			now := time.Now()
			r.mu.Lock()
			for _, ev := range wr.Events {
				e := Event{Rev: ev.Kv.ModRevision, Delete: ev.Type == mvccpb.DELETE,
					Key: strings.TrimPrefix(string(ev.Kv.Key), r.prefix), Value: ev.Kv.Value,
					CreateRev: ev.Kv.CreateRevision, Lease: ev.Kv.Lease, At: now}
				r.events = append(r.events, e)
				if e.Rev > r.lastRev {
					r.lastRev = e.Rev
				}
			}
			// A progress notification says every revision up to its header
			// was sent (an event response may be one chunk of a catch-up).
			if wr.IsProgressNotify() && wr.Header.Revision > r.lastRev {
				r.lastRev = wr.Header.Revision
			}
			close(r.changed)
			r.changed = make(chan struct{})
			r.mu.Unlock()
		}
		cancel()
		if ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}

// WaitRev waits until every revision up to rev was recorded.
func (r *Recorder) WaitRev(ctx context.Context, rev int64) error {
	for {
		r.mu.Lock()
		last, ch, err := r.lastRev, r.changed, r.err
		r.mu.Unlock()
		if err != nil {
			return err
		}
		if last >= rev {
			return nil
		}
		// Ask for a progress notification: the watch may be idle at rev.
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		r.cli.RequestProgress(clientv3.WithRequireLeader(pctx))
		cancel()
		t := time.NewTimer(200 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("faults: history recorded up to revision %d, want %d: %w", last, rev, ctx.Err())
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// Sync waits until the history holds everything etcd holds now.
func (r *Recorder) Sync(ctx context.Context) error {
	gctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	resp, err := r.cli.Get(gctx, "faults/sync", clientv3.WithCountOnly())
	cancel()
	if err != nil {
		return err
	}
	return r.WaitRev(ctx, resp.Header.Revision)
}

// Events returns the history recorded so far, and an error if it is known
// to be incomplete.
func (r *Recorder) Events() ([]Event, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Event(nil), r.events...), r.err
}

// Op kinds.
const (
	OpObserve = "observe"
	OpLearn   = "learn"
	OpSend    = "send"
	OpPut     = "put"  // a write straight to etcd
	OpCheck   = "read" // a read after the run, through the API
)

// Outcomes of an operation.
const (
	OK      = "ok"      // acknowledged
	Fail    = "fail"    // refused: nothing happened
	Unknown = "unknown" // no answer: it may or may not have happened
)

// Op is one client operation and what came of it.
type Op struct {
	Kind     string
	Node     string // the node the request went to ("" for etcd puts)
	Model    string // learn, observe, read: the model
	Start    time.Time
	End      time.Time
	Outcome  string
	Status   int    // HTTP status, 0 without an answer
	ServedBy string // X-Kato-Served-By
	Error    string

	Pattern string // learn: the pattern name acknowledged (without MODEL|); read: the one asked for

	// send
	To        string
	MsgKey    string // relative to the root prefix
	MsgRev    int64
	ExpiresAt time.Time

	// put
	Key, Value string

	Late bool // sent into a paused or cut-off node's socket
}

// Log collects operations from many goroutines.
type Log struct {
	mu  sync.Mutex
	ops []Op
}

// Add records op.
func (l *Log) Add(op Op) {
	l.mu.Lock()
	l.ops = append(l.ops, op)
	l.mu.Unlock()
}

// Ops returns what was recorded.
func (l *Log) Ops() []Op {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]Op(nil), l.ops...)
}

// Fault kinds, as counted in the summary.
const (
	FaultKill      = "kill"      // kill -9 a node, start it again once its record is gone
	FaultPause     = "pause"     // SIGSTOP a node for longer than its TTL, then SIGCONT
	FaultRestart   = "restart"   // SIGTERM a node (graceful stop), start it again
	FaultPartition = "partition" // cut a node off from every etcd member, both ways
	FaultOneWay    = "one-way"   // the node cannot send to etcd, or cannot hear from it
	FaultBreak     = "break"     // the holder cannot hear from etcd and an admin breaks its lock
	FaultEtcd      = "etcd"      // kill -9 or isolate one etcd member (the leader or not)
)

// Fault is one injected fault.
type Fault struct {
	Kind   string
	Target string // node id or member name
	Detail string
	Start  time.Time // injected
	Healed time.Time // over (restarted, resumed, healed)
	// Disappear: the target's registry record must be gone within TTL + 1 s
	// + Grace of Start (it was killed, stopped, paused past its TTL or cut
	// off).
	Disappear bool
	// Grace is 0 unless the target could still send to etcd after Start
	// (it only stopped hearing from etcd): then the keep-alive it had in
	// flight, or sent next, still reaches etcd and renews its lease once
	// more. The session sends one keep-alive at a time, every TTL/3, and
	// waits for the answer until its own deadline, so that is the only
	// renewal after the cut: Grace is TTL/3.
	Grace time.Duration
	// Etcd faults: how long until a write went through again (0 = never
	// interrupted), and whether the target was the leader.
	Leader   bool
	Recovery time.Duration
	// Settled is false when the cluster did not recover after the fault;
	// SettledAt is when it had (Cluster.WaitSettled): until then the target
	// is still recovering.
	Settled   bool
	SettledAt time.Time
	SettleErr string
}

// recordKey returns the instance id of a registry key, or "".
func recordKey(key string) string {
	id, ok := strings.CutPrefix(key, coord.InstancesPrefix())
	if !ok {
		return ""
	}
	return id
}
