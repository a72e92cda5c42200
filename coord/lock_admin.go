// The admin side of model locks: reading every lock as stored (ListLocks,
// GetLock) and breaking a stuck holder's lock (BreakLock).

package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// LockEntry is one key of a model's lock queue.
type LockEntry struct {
	Key   string `json:"key"`
	Rev   int64  `json:"rev"`   // create revision: the holder's fencing token
	Lease string `json:"lease"` // hex, as in the key
	// ID and Host name the process (empty for a plain concurrency.Mutex or
	// etcdctl lock). Since is when the holder took the lock (from lockinfo),
	// or when a waiter queued.
	ID    string    `json:"id,omitempty"`
	Host  string    `json:"host,omitempty"`
	Since time.Time `json:"since,omitzero"`
}

// LockState is one model lock as stored in etcd: the holder and the waiters in
// queue order.
type LockState struct {
	Model   string      `json:"model"`
	Holder  LockEntry   `json:"holder"`
	Waiters []LockEntry `json:"waiters"`
}

// lockEntryOf describes queue key kv, with the holder record info when it
// belongs to kv.
func lockEntryOf(kv, info *mvccpb.KeyValue) LockEntry {
	e := LockEntry{Key: string(kv.Key), Rev: kv.CreateRevision, Lease: LeaseHex(clientv3.LeaseID(kv.Lease))}
	var q queueEntry
	if json.Unmarshal(kv.Value, &q) == nil {
		e.ID, e.Host, e.Since = q.ID, q.Host, q.Since
	}
	if info == nil {
		return e
	}
	r, err := ParseLockInfo(info)
	if err != nil {
		return e
	}
	if r.Key == e.Key && r.Rev == e.Rev {
		e.ID, e.Host, e.Since = r.ID, r.Host, r.Since
	}
	return e
}

// ListLocks returns every model lock that has a holder, by model name, and
// the revision it was read at.
func ListLocks(ctx context.Context, kv clientv3.KV) ([]LockState, int64, error) {
	return readLocks(ctx, kv, LocksPrefix(), LockInfoPrefix())
}

// GetLock returns the lock of one model, or ErrNotLocked when nobody holds it.
func GetLock(ctx context.Context, kv clientv3.KV, model string) (LockState, int64, error) {
	if err := CheckID(model); err != nil {
		return LockState{}, 0, fmt.Errorf("coord: model name: %w", err)
	}
	locks, rev, err := readLocks(ctx, kv, LockPrefix(model), LockInfoKey(model))
	if err != nil {
		return LockState{}, rev, err
	}
	if len(locks) == 0 {
		return LockState{}, rev, fmt.Errorf("%w: model %q has no lock key", ErrNotLocked, model)
	}
	return locks[0], rev, nil
}

// readLocks reads the queue keys under pfx and the holder records under
// infoPfx in one transaction.
func readLocks(ctx context.Context, kv clientv3.KV, pfx, infoPfx string) ([]LockState, int64, error) {
	resp, err := kv.Txn(ctx).Then(
		clientv3.OpGet(pfx, clientv3.WithPrefix(), clientv3.WithSort(clientv3.SortByCreateRevision, clientv3.SortAscend)),
		clientv3.OpGet(infoPfx, clientv3.WithPrefix()),
	).Commit()
	if err != nil {
		return nil, 0, fmt.Errorf("coord: read locks under %s: %w", pfx, err)
	}
	infos := map[string]*mvccpb.KeyValue{}
	for _, kv := range resp.Responses[1].GetResponseRange().Kvs {
		infos[string(kv.Key)[len(lockInfoDir):]] = kv
	}
	var (
		locks []LockState
		index = map[string]int{}
	)
	for _, kv := range resp.Responses[0].GetResponseRange().Kvs {
		model, ok := lockModel(string(kv.Key))
		if !ok {
			continue
		}
		i, seen := index[model]
		if !seen {
			index[model] = len(locks)
			locks = append(locks, LockState{Model: model, Holder: lockEntryOf(kv, infos[model]), Waiters: []LockEntry{}})
			continue
		}
		locks[i].Waiters = append(locks[i].Waiters, lockEntryOf(kv, nil))
	}
	sort.Slice(locks, func(a, b int) bool { return locks[a].Model < locks[b].Model })
	return locks, resp.Header.Revision, nil
}

// lockModel returns the model of queue key locks/models/<model>/<lease-hex>.
func lockModel(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, locksDir)
	if !ok {
		return "", false
	}
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 || i == len(rest)-1 {
		return "", false
	}
	return rest[:i], true
}

// BreakLock removes the lock key of a model's holder, as an admin does when a
// holder is stuck: its fenced writes fail from then on, its Lost channel is
// closed, and the next waiter takes the lock. lockinfo/<model> goes in the same
// transaction when it belongs to that holder. It returns the lock as it was
// read (Holder is the entry removed, Waiters[0] the next holder, if any), and
// ErrNotLocked when nobody holds the model. It never removes a holder other
// than the one it read: if the lock changed hands in between, it fails.
func BreakLock(ctx context.Context, kv clientv3.KV, model string) (LockState, error) {
	st, _, err := GetLock(ctx, kv, model)
	if err != nil {
		return st, err
	}
	h := st.Holder
	lease, err := strconv.ParseInt(h.Lease, 16, 64)
	if err != nil {
		return st, fmt.Errorf("coord: model %q: lock key %s: lease %q: %w", model, h.Key, h.Lease, err)
	}
	info := LockInfoKey(model)
	resp, err := kv.Txn(ctx).
		If(Fence{Key: h.Key, Rev: h.Rev}.Cmp()).
		Then(clientv3.OpDelete(h.Key), clientv3.OpTxn(
			[]clientv3.Cmp{clientv3.Compare(clientv3.LeaseValue(info), "=", lease)},
			[]clientv3.Op{clientv3.OpDelete(info)}, nil)).
		Commit()
	if err != nil {
		return st, fmt.Errorf("coord: model %q: break lock key %s: %w", model, h.Key, err)
	}
	if !resp.Succeeded {
		return st, fmt.Errorf("coord: model %q: lock key %s (fence %d) went away before it could be broken; nothing removed", model, h.Key, h.Rev)
	}
	return st, nil
}

// LockEvent is the holder record of one model as WatchLocks reports it: Info
// is the zero LockInfo (but for Model) when the model has no holder record
// (Removed), or one that does not decode.
type LockEvent struct {
	Model    string
	Info     LockInfo
	Removed  bool
	Revision int64
}

// WatchLocks follows the holder records of every model lock (lockinfo/)
// until ctx ends: list is called with every record at a revision, first and
// again whenever the watch had to list again (its revision was compacted),
// and fn with each change after it, in revision order. A record that does not
// parse is reported as Removed: the model has no holder anyone can be sent to.
func WatchLocks(ctx context.Context, cli *clientv3.Client, lg *zap.Logger, list func(map[string]LockInfo, int64), fn func(LockEvent)) error {
	if lg == nil {
		lg = zap.NewNop()
	}
	w := &resumableWatch{
		cli: cli, lg: lg, what: "lock holders", key: lockInfoDir, opts: []clientv3.OpOption{clientv3.WithPrefix()},
		list: func(ctx context.Context) (int64, error) {
			resp, err := cli.Get(ctx, lockInfoDir, clientv3.WithPrefix())
			if err != nil {
				return 0, fmt.Errorf("coord: list lock holders: %w", err)
			}
			infos := make(map[string]LockInfo, len(resp.Kvs))
			for _, kv := range resp.Kvs {
				if info, err := ParseLockInfo(kv); err == nil {
					infos[info.Model] = info
				}
			}
			list(infos, resp.Header.Revision)
			return resp.Header.Revision, nil
		},
		events: func(evs []*clientv3.Event) error {
			for _, ev := range evs {
				e := LockEvent{Model: string(ev.Kv.Key[len(lockInfoDir):]), Revision: ev.Kv.ModRevision}
				if ev.Type == clientv3.EventTypeDelete {
					e.Removed = true
				} else if info, err := ParseLockInfo(ev.Kv); err == nil {
					e.Info = info
				} else {
					e.Removed = true
				}
				fn(e)
			}
			return nil
		},
	}
	return w.run(ctx, 0)
}
