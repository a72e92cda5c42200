// This file is the checker: Check verifies DESIGN.md §6 over the recorded
// history, the clients' operations and the injected faults.

package faults

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// Input is everything the checker looks at: etcd's history of the root
// prefix, the client operations, the faults, and what was read after the run.
type Input struct {
	Events []Event
	Ops    []Op
	Faults []Fault
	Nodes  []NodeSpec
	// TTL is the nodes' session TTL.
	TTL time.Duration
	// ServiceBound is how soon etcd must take writes again after one member
	// of three was killed or isolated.
	ServiceBound time.Duration
	// MsgGrace is how long a receiver must be up before a message's TTL runs
	// out for the message to count (restart, register, start receiving).
	MsgGrace time.Duration
	// RunEnd is when the run stopped injecting faults and began its final
	// checks; nodes stopped after it are not counted as disappearing.
	RunEnd time.Time
	// EtcdFinal holds the keys of the etcd workload read after the run.
	EtcdFinal map[string]string
}

// Violation is one broken promise.
type Violation struct {
	Check  string // fencing, running, learn, registry, message, etcd, liveness, history
	Detail string
}

func (v Violation) String() string { return v.Check + ": " + v.Detail }

// Report is what the checker found, with the counts it checked.
type Report struct {
	Violations  []Violation
	ModelWrites int // model transactions checked against the lock
	Running     int // "running" registry writes checked against the lock
	AckedLearns int
	Messages    int // acknowledged messages
	Delivered   int // of them delivered before their TTL
	Exempt      int // of them not delivered, to a receiver that never came back
	Puts        int // acknowledged etcd puts
}

func (r *Report) add(check, format string, args ...any) {
	r.Violations = append(r.Violations, Violation{Check: check, Detail: fmt.Sprintf(format, args...)})
}

// lockKey is one key of a model's lock queue.
type lockKey struct {
	key       string
	createRev int64
	lease     int64
	id        string // holder id from the queue entry
}

// modelMetaRecord is models/<model>/meta (node/engine.go modelMeta).
type modelMetaRecord struct {
	Model  string `json:"model"`
	Writer string `json:"writer"`
	Fence  int64  `json:"fence"`
}

// lockState is every model's lock queue at one point of the history.
type lockState struct {
	keys    map[string]map[string]lockKey // model -> key -> entry
	deleted map[int64]int64               // create revision -> revision it was deleted at
}

func (s *lockState) holder(model string) (lockKey, bool) {
	var best lockKey
	ok := false
	for _, k := range s.keys[model] {
		if !ok || k.createRev < best.createRev {
			best, ok = k, true
		}
	}
	return best, ok
}

func (s *lockState) describe(model string) string {
	h, ok := s.holder(model)
	if !ok {
		return "nobody held the lock"
	}
	return fmt.Sprintf("the holder was %s (fence %d)", orUnknown(h.id), h.createRev)
}

func orUnknown(s string) string {
	if s == "" {
		return "an unnamed key"
	}
	return s
}

// apply applies a lock key event.
func (s *lockState) apply(e Event) {
	rest, ok := strings.CutPrefix(e.Key, coord.LocksPrefix())
	if !ok {
		return
	}
	model, _, ok := strings.Cut(rest, "/")
	if !ok {
		return
	}
	if e.Delete {
		if k, ok := s.keys[model][e.Key]; ok {
			s.deleted[k.createRev] = e.Rev
		}
		delete(s.keys[model], e.Key)
		return
	}
	if s.keys[model] == nil {
		s.keys[model] = map[string]lockKey{}
	}
	var entry struct {
		ID string `json:"id"`
	}
	json.Unmarshal(e.Value, &entry)
	s.keys[model][e.Key] = lockKey{key: e.Key, createRev: e.CreateRev, lease: e.Lease, id: entry.ID}
}

// modelOf returns the model of a key below models/, or "".
func modelOf(key string) string {
	rest, ok := strings.CutPrefix(key, coord.ModelsPrefix())
	if !ok {
		return ""
	}
	m, _, _ := strings.Cut(rest, "/")
	return m
}

// patternKey names a pattern of a model.
func patternKey(model, pattern string) string {
	return coord.ModelPrefix(model) + "patterns/" + pattern
}

// presence is a kb.Loader that keeps the names of a model's patterns.
type presence map[string]bool

func (p presence) Record(ch processor.Change) error {
	if ch.Kind == processor.PutPattern {
		name := ch.Pattern.Name
		if name == "" {
			name = processor.ModelName(ch.Pattern.Events)
		}
		p[name] = true
	}
	return nil
}

func (p presence) Built() error { return nil }

func (p presence) Changes(chs processor.Changes) error {
	for _, ch := range chs {
		switch ch.Kind {
		case processor.PutPattern:
			p[ch.Pattern.Name] = true
		case processor.ClearAll:
			clear(p)
		}
	}
	return nil
}

// Check checks every promise over in. What it checks (DESIGN.md §6):
//
//   - fencing: every model transaction (revision R, its meta naming writer W
//     and fence F) was made while the lock key created at F existed, was the
//     model's holder (the lowest create revision of its lock keys) just
//     before R, and was W's key. A write a stale holder made after its lock
//     was broken or its lease expired fails this.
//   - running: an instance's registry record is put with status "running"
//     only while its own lock key (the key of the record's lease) holds the
//     model's lock. Lock epochs (the revisions during which one key is the
//     lowest) never overlap, so two nodes are never running for one model
//     in overlapping epochs; a stale "running" left by a node that cannot
//     reach etcd is not a new claim and is not counted.
//   - learn: every acknowledged learn's pattern is in the model at the end,
//     was written by the node that acknowledged it, and is served by the API
//     after the run.
//   - registry: a killed, stopped, paused (past its TTL) or cut-off node's
//     record is gone within TTL + 1 s of the fault (of the last keep-alive
//     that could reach etcd, for a node that only stopped hearing from etcd:
//     see Fault.Grace); no other record ever disappears. A node is under its
//     fault from Start until the cluster settled after it (every node kept
//     a session for TTL + 1 s), and healthy otherwise: etcd faults are no
//     faults of the nodes. Deletions after RunEnd are the harness stopping
//     the nodes.
//   - message: an acknowledged message was put at the revision its sender was
//     told, and was deleted (handled by its receiver) before its TTL ran out,
//     unless the receiver was down from the send until MsgGrace before that.
//   - etcd: every acknowledged put is there after the run; after a member was
//     killed or isolated, writes went through again within ServiceBound.
//   - liveness: after every fault was healed the cluster settled again.
func Check(in Input) Report {
	var r Report
	events := append([]Event(nil), in.Events...)
	sort.SliceStable(events, func(i, j int) bool { return events[i].Rev < events[j].Rev })

	final := checkHistory(&r, events)
	checkLearns(&r, in, events, final)
	checkRegistry(&r, in, events)
	checkMessages(&r, in, events)
	checkEtcd(&r, in)
	for _, f := range in.Faults {
		if !f.Settled {
			r.add("liveness", "the cluster did not settle after %s", describeFault(f, f.SettleErr))
		}
	}
	return r
}

func describeFault(f Fault, extra string) string {
	s := fmt.Sprintf("%s %s at %s", f.Kind, f.Target, f.Start.Format("15:04:05.000"))
	if f.Detail != "" {
		s += " (" + f.Detail + ")"
	}
	if f.Kind == FaultEtcd {
		s += fmt.Sprintf(" [writes back after %v]", f.Recovery.Round(time.Millisecond))
	}
	if extra != "" {
		s += ": " + extra
	}
	return s
}

// checkHistory replays the history for the fencing and running checks and
// returns the final value of every key.
func checkHistory(r *Report, events []Event) map[string][]byte {
	locks := &lockState{keys: map[string]map[string]lockKey{}, deleted: map[int64]int64{}}
	final := map[string][]byte{}
	for i := 0; i < len(events); {
		j := i
		for j < len(events) && events[j].Rev == events[i].Rev {
			j++
		}
		group := events[i:j]
		rev := group[0].Rev
		// Model transactions, against the locks as they were before them.
		touched := map[string]bool{}
		metas := map[string]modelMetaRecord{}
		for _, e := range group {
			m := modelOf(e.Key)
			if m == "" {
				continue
			}
			touched[m] = true
			if e.Key == coord.ModelPrefix(m)+"meta" && !e.Delete {
				var meta modelMetaRecord
				if err := json.Unmarshal(e.Value, &meta); err == nil {
					metas[m] = meta
				}
			}
		}
		for m := range touched {
			r.ModelWrites++
			meta, ok := metas[m]
			if !ok {
				r.add("fencing", "model %s written at revision %d without its meta record (no writer or fence to check)", m, rev)
				continue
			}
			h, held := locks.holder(m)
			var fenceKey lockKey
			found := false
			for _, k := range locks.keys[m] {
				if k.createRev == meta.Fence {
					fenceKey, found = k, true
				}
			}
			switch {
			case !found:
				gone := "never existed"
				if d, ok := locks.deleted[meta.Fence]; ok {
					gone = fmt.Sprintf("was deleted at revision %d", d)
				}
				r.add("fencing", "model %s written at revision %d by %s under fence %d, but that lock key %s; %s",
					m, rev, meta.Writer, meta.Fence, gone, locks.describe(m))
			case !held || h.createRev != meta.Fence:
				r.add("fencing", "model %s written at revision %d by %s under fence %d, which was only queued; %s",
					m, rev, meta.Writer, meta.Fence, locks.describe(m))
			case fenceKey.id != meta.Writer:
				r.add("fencing", "model %s written at revision %d by %s under fence %d, which is %s's lock key",
					m, rev, meta.Writer, meta.Fence, orUnknown(fenceKey.id))
			}
		}
		for _, e := range group {
			locks.apply(e)
			if e.Delete {
				delete(final, e.Key)
			} else {
				final[e.Key] = e.Value
			}
		}
		// Running claims, against the locks as they are at this revision.
		for _, e := range group {
			id := recordKey(e.Key)
			if id == "" || e.Delete {
				continue
			}
			var in coord.Instance
			if err := json.Unmarshal(e.Value, &in); err != nil || in.Status != coord.StatusRunning {
				continue
			}
			r.Running++
			h, ok := locks.holder(in.Model)
			if !ok || h.lease != e.Lease {
				r.add("running", "%s registered as running for model %s at revision %d while %s",
					id, in.Model, rev, locks.describe(in.Model))
			}
		}
		i = j
	}
	return final
}

// checkLearns checks the acknowledged learns against the final model and the
// writes' meta records, and the reads made after the run.
func checkLearns(r *Report, in Input, events []Event, final map[string][]byte) {
	// Who wrote each pattern key, per revision.
	writers := map[string]map[string]bool{} // pattern key -> writers
	metaAt := map[int64]map[string]string{} // rev -> model -> writer
	for _, e := range events {
		if m := modelOf(e.Key); m != "" && e.Key == coord.ModelPrefix(m)+"meta" && !e.Delete {
			var meta modelMetaRecord
			if json.Unmarshal(e.Value, &meta) == nil {
				if metaAt[e.Rev] == nil {
					metaAt[e.Rev] = map[string]string{}
				}
				metaAt[e.Rev][m] = meta.Writer
			}
		}
	}
	// A pattern is written by the log entry that completes its group
	// (node/kb): decode each model's log as it was written.
	decoders := map[string]*kb.LogDecoder{}
	for _, e := range events {
		m := modelOf(e.Key)
		if m == "" || e.Delete {
			continue
		}
		d := decoders[m]
		if d == nil {
			d = kb.NewLogDecoder(m)
			decoders[m] = d
		}
		chs, err := d.Put(e.Key, e.Value)
		if err != nil {
			r.add("learn", "model %s: %s at revision %d does not decode: %v", m, e.Key, e.Rev, err)
			continue
		}
		for _, ch := range chs {
			if ch.Kind != processor.PutPattern {
				continue
			}
			key := patternKey(m, ch.Pattern.Name)
			if writers[key] == nil {
				writers[key] = map[string]bool{}
			}
			writers[key][metaAt[e.Rev][m]] = true
		}
	}
	// The patterns each model holds after the run, read from its final keys
	// as a node loads them (snapshot, then log).
	held := map[string]map[string]bool{}
	holds := func(model, pattern string) bool {
		if held[model] == nil {
			p := presence{}
			if _, err := kb.LoadKeys(model, final, p); err != nil {
				r.add("learn", "model %s does not load after the run: %v", model, err)
			}
			held[model] = p
		}
		return held[model][pattern]
	}
	for _, op := range in.Ops {
		switch {
		case op.Kind == OpLearn && op.Outcome == OK && op.Pattern != "":
			r.AckedLearns++
			key := patternKey(op.Model, op.Pattern)
			if !holds(op.Model, op.Pattern) {
				r.add("learn", "learn of %s acknowledged by %s (asked %s at %s) is not in model %s after the run",
					op.Pattern, op.ServedBy, op.Node, op.End.Format("15:04:05.000"), op.Model)
			}
			if !writers[key][op.ServedBy] {
				r.add("learn", "learn of %s acknowledged by %s (asked %s at %s), but %s never wrote it (writers: %v)",
					op.Pattern, orUnknown(op.ServedBy), op.Node, op.End.Format("15:04:05.000"), orUnknown(op.ServedBy), keys(writers[key]))
			}
		case op.Kind == OpCheck && op.Outcome != OK:
			r.add("learn", "acknowledged pattern %s of model %s not served by %s after the run: %d %s",
				op.Pattern, op.Model, op.Node, op.Status, op.Error)
		}
	}
}

func keys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkRegistry checks that faulted nodes' records disappear in time and
// that no other record ever disappears.
func checkRegistry(r *Report, in Input, events []Event) {
	bound := in.TTL + time.Second
	byID := map[string][]Event{}
	for _, e := range events {
		if id := recordKey(e.Key); id != "" {
			byID[id] = append(byID[id], e)
		}
	}
	faultsOn := map[string][]Fault{}
	for _, f := range in.Faults {
		faultsOn[f.Target] = append(faultsOn[f.Target], f)
	}
	for _, f := range in.Faults {
		if !f.Disappear {
			continue
		}
		evs := byID[f.Target]
		// The record that was there when the fault began: the last put
		// received before it, not deleted before it.
		present := -1
		for i, e := range evs {
			if e.At.After(f.Start) {
				break
			}
			if e.Delete {
				present = -1
			} else {
				present = i
			}
		}
		if present < 0 {
			continue // nothing registered to disappear
		}
		var gone *Event
		for i := present + 1; i < len(evs); i++ {
			if evs[i].Delete {
				gone = &evs[i]
				break
			}
		}
		switch {
		case gone == nil:
			r.add("registry", "%s's record never disappeared after %s", f.Target, describeFault(f, ""))
		case gone.At.Sub(f.Start) > bound+f.Grace:
			want := fmt.Sprintf("TTL + 1 s = %v", bound)
			if f.Grace > 0 {
				want = fmt.Sprintf("TTL + 1 s + one keep-alive interval = %v", bound+f.Grace)
			}
			r.add("registry", "%s's record disappeared %v after %s, want within %s",
				f.Target, gone.At.Sub(f.Start).Round(time.Millisecond), describeFault(f, ""), want)
		}
	}
	for id, evs := range byID {
		for _, e := range evs {
			if !e.Delete || (!in.RunEnd.IsZero() && e.At.After(in.RunEnd)) {
				continue
			}
			explained := false
			for _, f := range faultsOn[id] {
				end := f.Healed.Add(bound + f.Grace)
				if f.SettledAt.After(end) {
					end = f.SettledAt
				}
				if !e.At.Before(f.Start) && !e.At.After(end) {
					explained = true
				}
			}
			if !explained {
				r.add("registry", "%s's record disappeared at %s (revision %d) with no fault on %s",
					id, e.At.Format("15:04:05.000"), e.Rev, id)
			}
		}
	}
}

// checkMessages checks that acknowledged messages were stored and handled
// before their TTL.
func checkMessages(r *Report, in Input, events []Event) {
	byKey := map[string][]Event{}
	for _, e := range events {
		if strings.HasPrefix(e.Key, coord.InboxesPrefix()) {
			byKey[e.Key] = append(byKey[e.Key], e)
		}
	}
	for _, op := range in.Ops {
		if op.Kind != OpSend || op.Outcome != OK {
			continue
		}
		r.Messages++
		evs := byKey[op.MsgKey]
		stored := false
		var deleted *Event
		for i, e := range evs {
			if !e.Delete && e.Rev == op.MsgRev {
				stored = true
			}
			if e.Delete && e.Rev > op.MsgRev && deleted == nil {
				deleted = &evs[i]
			}
		}
		if !stored {
			r.add("message", "message %s to %s acknowledged at revision %d is not in etcd's history", op.MsgKey, op.To, op.MsgRev)
			continue
		}
		if deleted != nil && deleted.At.Before(op.ExpiresAt) {
			r.Delivered++
			continue
		}
		if receiverAway(in, op) {
			r.Exempt++
			continue
		}
		what := "never handled"
		if deleted != nil {
			what = fmt.Sprintf("gone only at %s (revision %d)", deleted.At.Format("15:04:05.000"), deleted.Rev)
		}
		r.add("message", "message %s to %s sent at %s with TTL until %s was %s", op.MsgKey, op.To,
			op.End.Format("15:04:05.000"), op.ExpiresAt.Format("15:04:05.000"), what)
	}
}

// receiverAway reports whether the message's receiver was under a fault (or
// stopped after the run) for the whole time from the send until MsgGrace
// before the message expired.
func receiverAway(in Input, op Op) bool {
	from, to := op.End, op.ExpiresAt.Add(-in.MsgGrace)
	if !to.After(from) {
		return true
	}
	var down [][2]time.Time
	for _, f := range in.Faults {
		if f.Target == op.To {
			down = append(down, [2]time.Time{f.Start, f.Healed})
		}
	}
	if !in.RunEnd.IsZero() {
		down = append(down, [2]time.Time{in.RunEnd, to.Add(time.Hour)})
	}
	sort.Slice(down, func(i, j int) bool { return down[i][0].Before(down[j][0]) })
	covered := from
	for _, d := range down {
		if d[0].After(covered) {
			break
		}
		if d[1].After(covered) {
			covered = d[1]
		}
	}
	return !covered.Before(to)
}

// checkEtcd checks the etcd workload.
func checkEtcd(r *Report, in Input) {
	for _, op := range in.Ops {
		if op.Kind != OpPut || op.Outcome != OK {
			continue
		}
		r.Puts++
		if got, ok := in.EtcdFinal[op.Key]; !ok || got != op.Value {
			r.add("etcd", "acknowledged put %s=%s (at %s) lost: after the run the key holds %q (present %v)",
				op.Key, op.Value, op.End.Format("15:04:05.000"), got, ok)
		}
	}
	for _, f := range in.Faults {
		if f.Kind != FaultEtcd {
			continue
		}
		switch {
		case f.Recovery < 0:
			r.add("etcd", "writes never went through again after %s", describeFault(f, ""))
		case f.Recovery > in.ServiceBound:
			r.add("etcd", "writes went through again only %v after %s, want within %v",
				f.Recovery.Round(time.Millisecond), describeFault(f, ""), in.ServiceBound)
		}
	}
}
