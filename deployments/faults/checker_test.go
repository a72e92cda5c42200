// This file tests the checker on hand-made histories: each check passes a
// clean one and reports the violations planted in a broken one.

package faults

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// history builds a synthetic etcd history for checker tests: one revision per
// call (several events in one call share it, as in a transaction).
type history struct {
	rev    int64
	t0     time.Time
	events []Event
	create map[string]int64
	seq    map[string]uint64 // the next log sequence number per model
}

func newHistory() *history {
	return &history{t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), create: map[string]int64{}, seq: map[string]uint64{}}
}

// at is the time of second s of the history.
func (h *history) at(s float64) time.Time { return h.t0.Add(time.Duration(s * float64(time.Second))) }

type ev struct {
	key   string
	value any // nil: delete; []byte: stored as it is
	lease int64
}

// txn applies evs at the next revision, received at second s.
func (h *history) txn(s float64, evs ...ev) int64 {
	h.rev++
	for _, e := range evs {
		out := Event{Rev: h.rev, Key: e.key, Lease: e.lease, At: h.at(s)}
		if e.value == nil {
			out.Delete = true
			out.CreateRev = h.create[e.key]
			delete(h.create, e.key)
		} else {
			if h.create[e.key] == 0 {
				h.create[e.key] = h.rev
			}
			out.CreateRev = h.create[e.key]
			b, ok := e.value.([]byte)
			if !ok {
				b, _ = json.Marshal(e.value)
			}
			out.Value = b
		}
		h.events = append(h.events, out)
	}
	return h.rev
}

func lockEv(model string, lease int64, id string) ev {
	return ev{key: coord.LockPrefix(model) + fmt.Sprintf("%x", lease), value: map[string]any{"v": 1, "id": id}, lease: lease}
}

func unlockEv(model string, lease int64) ev {
	return ev{key: coord.LockPrefix(model) + fmt.Sprintf("%x", lease)}
}

// pat is the name of the test pattern called short.
func pat(short string) string { return processor.ModelName([][]string{{short, "x"}}) }

func patChange(short string) processor.Change {
	events := [][]string{{short, "x"}}
	return processor.Change{Kind: processor.PutPattern, Pattern: processor.PatternRecord{Name: processor.ModelName(events), Events: events,
		Length: 2, Frequency: 1, Emotives: []processor.Emotives{}, Seq: 1}}
}

// writeEvs is a model transaction of writer under fence: its meta record
// and, with changes, the next log entry of the model.
func (h *history) writeEvs(t *testing.T, model, writer string, fence int64, changes ...processor.Change) []ev {
	t.Helper()
	out := []ev{{key: coord.ModelPrefix(model) + "meta", value: map[string]any{"v": 1, "format": kb.FormatVersion, "model": model, "writer": writer, "fence": fence}}}
	if len(changes) > 0 {
		key, val, err := kb.LogEntry(model, h.seq[model], changes)
		if err != nil {
			t.Fatal(err)
		}
		h.seq[model]++
		out = append(out, ev{key: key, value: val})
	}
	return out
}

func puts(shorts ...string) []processor.Change {
	var out []processor.Change
	for i, s := range shorts {
		ch := patChange(s)
		ch.Pattern.Seq = uint64(i + 1)
		out = append(out, ch)
	}
	return out
}

func recordEv(id, model string, status coord.Status, lease int64) ev {
	return ev{key: coord.InstanceKey(id), value: coord.Instance{ID: id, Model: model, Status: status}, lease: lease}
}

func checks(r Report) map[string]int {
	out := map[string]int{}
	for _, v := range r.Violations {
		out[v.Check]++
	}
	return out
}

func wantViolations(t *testing.T, r Report, want map[string]int, contains ...string) {
	t.Helper()
	got := checks(r)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("violations %v, want %v:\n%s", got, want, violationList(r))
	}
	all := violationList(r)
	for _, c := range contains {
		if !strings.Contains(all, c) {
			t.Errorf("no violation says %q:\n%s", c, all)
		}
	}
}

func violationList(r Report) string {
	var b strings.Builder
	for _, v := range r.Violations {
		b.WriteString(v.String() + "\n")
	}
	return b.String()
}

// A holder's writes, a hand-over, the next holder's writes: nothing wrong.
func TestCheckFencingCleanHandOver(t *testing.T) {
	h := newHistory()
	f1 := h.txn(1, lockEv("m", 0xa, "n1"), ev{key: coord.LockInfoKey("m"), value: map[string]any{"id": "n1"}, lease: 0xa})
	h.txn(1, lockEv("m", 0xb, "n2"))
	h.txn(2, recordEv("n1", "m", coord.StatusRunning, 0xa))
	h.txn(3, h.writeEvs(t, "m", "n1", f1, puts("p1")...)...)
	h.txn(4, unlockEv("m", 0xa))
	h.txn(5, recordEv("n2", "m", coord.StatusRunning, 0xb))
	p2 := patChange("p2")
	p2.Pattern.Seq = 2
	h.txn(6, h.writeEvs(t, "m", "n2", f1+1, p2)...)
	ops := []Op{
		{Kind: OpLearn, Outcome: OK, Model: "m", Pattern: pat("p1"), ServedBy: "n1"},
		{Kind: OpLearn, Outcome: OK, Model: "m", Pattern: pat("p2"), ServedBy: "n2"},
		{Kind: OpLearn, Outcome: Unknown, Model: "m", Pattern: "lost-but-never-acknowledged"},
	}
	r := Check(Input{Events: h.events, Ops: ops, TTL: 4 * time.Second})
	wantViolations(t, r, map[string]int{})
	if r.ModelWrites != 2 || r.Running != 2 || r.AckedLearns != 2 {
		t.Errorf("checked %d writes, %d running claims, %d learns; want 2, 2, 2", r.ModelWrites, r.Running, r.AckedLearns)
	}
}

// The writes fencing stops: a stale holder after its key was deleted, a
// waiter whose key is not the lowest, a writer naming another's fence, a
// write without meta.
func TestCheckFencingViolations(t *testing.T) {
	h := newHistory()
	f1 := h.txn(1, lockEv("m", 0xa, "n1"))
	f2 := h.txn(1, lockEv("m", 0xb, "n2"))
	h.txn(2, h.writeEvs(t, "m", "n2", f2, puts("q")...)...)  // only queued
	h.txn(2, h.writeEvs(t, "m", "n2", f1, puts("q2")...)...) // n1's fence
	h.txn(3, unlockEv("m", 0xa))                             // broken
	h.txn(4, h.writeEvs(t, "m", "n1", f1, puts("late")...)...)
	h.txn(5, h.writeEvs(t, "m", "n1", f1, puts("nometa")...)[1])
	h.txn(6, recordEv("n1", "m", coord.StatusRunning, 0xa)) // running without the lock
	r := Check(Input{Events: h.events, TTL: 4 * time.Second})
	wantViolations(t, r, map[string]int{"fencing": 4, "running": 1},
		fmt.Sprintf("written at revision 6 by n1 under fence %d, but that lock key was deleted at revision 5; the holder was n2", f1),
		"which was only queued", "which is n1's lock key", "without its meta record",
		"n1 registered as running for model m at revision 8 while the holder was n2")
}

// An acknowledged learn must be in the model, written by the node that
// acknowledged it, and readable after the run.
func TestCheckLearns(t *testing.T) {
	h := newHistory()
	f1 := h.txn(1, lockEv("m", 0xa, "n1"))
	h.txn(2, h.writeEvs(t, "m", "n1", f1, puts("kept", "cleared")...)...)
	kept := patChange("kept")
	kept.Pattern.Seq = 3
	h.txn(3, h.writeEvs(t, "m", "n1", f1, processor.Change{Kind: processor.ClearAll}, kept)...)
	ops := []Op{
		{Kind: OpLearn, Outcome: OK, Model: "m", Pattern: pat("kept"), ServedBy: "n1"},
		{Kind: OpLearn, Outcome: OK, Model: "m", Pattern: pat("cleared"), ServedBy: "n1"},
		{Kind: OpLearn, Outcome: OK, Model: "m", Pattern: pat("kept"), ServedBy: "n2"},
		{Kind: OpCheck, Outcome: Fail, Model: "m", Pattern: pat("kept"), Node: "n3", Status: 404},
	}
	r := Check(Input{Events: h.events, Ops: ops, TTL: 4 * time.Second})
	wantViolations(t, r, map[string]int{"learn": 3},
		"learn of "+pat("cleared")+" acknowledged by n1", "is not in model m after the run",
		"but n2 never wrote it (writers: [n1])", "not served by n3 after the run: 404")
}

func TestCheckRegistry(t *testing.T) {
	h := newHistory()
	ttl := 4 * time.Second
	h.txn(0, recordEv("n1", "m", coord.StatusStandby, 0xa))
	h.txn(0, recordEv("n2", "m", coord.StatusStandby, 0xb))
	h.txn(0, recordEv("n3", "m", coord.StatusStandby, 0xc))
	h.txn(0, recordEv("n4", "m", coord.StatusStandby, 0xd))
	h.txn(14.5, ev{key: coord.InstanceKey("n1")}) // killed at 10: in time
	h.txn(26, ev{key: coord.InstanceKey("n2")})   // cut off at 20: late
	h.txn(35.8, ev{key: coord.InstanceKey("n3")}) // deaf at 30: in time with the keep-alive grace
	h.txn(50, ev{key: coord.InstanceKey("n4")})   // no fault at all
	faults := []Fault{
		{Kind: FaultKill, Target: "n1", Start: h.at(10), Healed: h.at(15), Disappear: true, Settled: true},
		{Kind: FaultPartition, Target: "n2", Start: h.at(20), Healed: h.at(27), Disappear: true, Settled: true},
		{Kind: FaultOneWay, Target: "n3", Start: h.at(30), Healed: h.at(37), Disappear: true, Grace: ttl / 3, Settled: true},
	}
	r := Check(Input{Events: h.events, Faults: faults, TTL: ttl})
	wantViolations(t, r, map[string]int{"registry": 2},
		"n2's record disappeared 6s after partition n2", "n4's record disappeared at 00:00:50.000 (revision 8) with no fault on n4")
}

func TestCheckMessages(t *testing.T) {
	h := newHistory()
	key := func(i int) string { return coord.InboxPrefix("n2") + fmt.Sprint(i) }
	var ops []Op
	for i := 0; i < 4; i++ {
		rev := h.txn(float64(i), ev{key: key(i), value: map[string]any{"id": i}, lease: 0x7})
		ops = append(ops, Op{Kind: OpSend, Outcome: OK, To: "n2", MsgKey: key(i), MsgRev: rev, End: h.at(float64(i)), ExpiresAt: h.at(float64(i) + 20)})
	}
	h.txn(5, ev{key: key(0)})  // delivered
	h.txn(22, ev{key: key(1)}) // expired unread: n2 was up from 1 to 21
	// key(2): never handled, n2 down from 2 until after its expiry
	ops = append(ops, Op{Kind: OpSend, Outcome: OK, To: "n2", MsgKey: "inbox/n2/ghost", MsgRev: 99, ExpiresAt: h.at(30)})
	faults := []Fault{{Target: "n2", Start: h.at(1.5), Healed: h.at(19), Settled: true}}
	// key(3) sent at 3, n2 back at 19, expiry 23 minus grace 5 = 18 < 19: away.
	r := Check(Input{Events: h.events, Ops: ops, Faults: faults, MsgGrace: 5 * time.Second, TTL: 4 * time.Second})
	wantViolations(t, r, map[string]int{"message": 2}, "inbox/n2/1 to n2 sent at 00:00:01.000", "gone only at 00:00:22.000",
		"inbox/n2/ghost to n2 acknowledged at revision 99 is not in etcd's history")
	if r.Delivered != 1 || r.Exempt != 2 {
		t.Errorf("%d delivered, %d exempt; want 1, 2", r.Delivered, r.Exempt)
	}
}

func TestCheckEtcd(t *testing.T) {
	ops := []Op{
		{Kind: OpPut, Outcome: OK, Key: "a", Value: "1"},
		{Kind: OpPut, Outcome: OK, Key: "b", Value: "2"},
		{Kind: OpPut, Outcome: Unknown, Key: "c", Value: "3"},
	}
	faults := []Fault{
		{Kind: FaultEtcd, Target: "e1", Recovery: 2 * time.Second, Settled: true},
		{Kind: FaultEtcd, Target: "e2", Recovery: 4 * time.Second, Settled: true},
		{Kind: FaultEtcd, Target: "e3", Recovery: -1, Settled: false, SettleErr: "no leader"},
	}
	r := Check(Input{Ops: ops, Faults: faults, ServiceBound: ServiceBound(time.Second), EtcdFinal: map[string]string{"a": "1"}})
	wantViolations(t, r, map[string]int{"etcd": 3, "liveness": 1}, "acknowledged put b=2", "only 4s after etcd e2", "never went through again after etcd e3",
		"did not settle after etcd e3")
}
