// The instance registry: the record of each instance under its session
// lease (Register, Update, Deregister) and reading it (List, Get, WatchInstances).

package coord

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// Status is where an instance is in its lifecycle (DESIGN.md §5).
type Status string

// Instance statuses.
const (
	StatusStarting Status = "starting"
	StatusStandby  Status = "standby"  // waiting for the model lock
	StatusRunning  Status = "running"  // holds the lock and serves
	StatusDraining Status = "draining" // stopping gracefully
)

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool {
	switch s {
	case StatusStarting, StatusStandby, StatusRunning, StatusDraining:
		return true
	}
	return false
}

// Instance is the registry record of one instance, stored as JSON at
// instances/<id> under the owning session's lease.
type Instance struct {
	V          int             `json:"v"`
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Model      string          `json:"model"`
	Host       string          `json:"host"`
	PID        int             `json:"pid"`
	APIURL     string          `json:"api_url"`
	MetricsURL string          `json:"metrics_url"`
	Status     Status          `json:"status"`
	Genes      json.RawMessage `json:"genes,omitempty"`
	Version    string          `json:"version"`
	StartedAt  time.Time       `json:"started_at"`
	LeaseID    string          `json:"lease_id"` // hex, as in concurrency.Mutex keys
	// EmbeddedEtcd is set when the etcd runs inside the instance's process:
	// it goes when the instance stops.
	EmbeddedEtcd bool `json:"embedded_etcd,omitempty"`

	// ModRevision is the etcd revision of the record's last write (not stored).
	ModRevision int64 `json:"-"`
}

func (in *Instance) validate() error {
	if err := CheckID(in.ID); err != nil {
		return err
	}
	if err := CheckName(in.Name); err != nil {
		return err
	}
	if in.Model != "" {
		if err := CheckID(in.Model); err != nil {
			return fmt.Errorf("model name: %w", err)
		}
	}
	if !in.Status.Valid() {
		return fmt.Errorf("coord: instance %s: unknown status %q", in.ID, in.Status)
	}
	return nil
}

func decodeInstance(kv *mvccpb.KeyValue) (Instance, error) {
	var in Instance
	if err := json.Unmarshal(kv.Value, &in); err != nil {
		return in, fmt.Errorf("coord: registry record %s: %w", kv.Key, err)
	}
	in.ModRevision = kv.ModRevision
	return in, nil
}

// Registry registers this process's instance under its session lease. Reading
// the registry (List, Get, Watch) needs no session: see ListInstances,
// GetInstance and WatchInstances.
type Registry struct {
	s  *Session
	lg *zap.Logger
}

// NewRegistry returns the registry of session s.
func NewRegistry(s *Session) *Registry {
	return &Registry{s: s, lg: s.lg.Named("registry")}
}

// Register creates instances/<id> under the session lease if no live instance
// holds the id. Otherwise it fails with ErrIDTaken naming the holder's host
// and pid. in.LeaseID and in.V are filled in.
func (r *Registry) Register(ctx context.Context, in *Instance) error {
	val, err := r.encode(in)
	if err != nil {
		return err
	}
	key := InstanceKey(in.ID)
	resp, err := r.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(r.s.Lease()))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return r.leaseErr(fmt.Errorf("coord: register %s: %w", in.ID, err))
	}
	if !resp.Succeeded {
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) == 0 { // deleted between the compare and the get
			return fmt.Errorf("%w: %s (the holder just left; retry)", ErrIDTaken, in.ID)
		}
		if clientv3.LeaseID(kvs[0].Lease) == r.s.Lease() {
			// Ours: an earlier Register that etcd applied but whose answer
			// was lost (a timeout, a member that went away). Write this one.
			return r.Update(ctx, in)
		}
		holder, derr := decodeInstance(kvs[0])
		if derr != nil {
			return fmt.Errorf("%w: %s (holder record unreadable: %v)", ErrIDTaken, in.ID, derr)
		}
		return fmt.Errorf("%w: %q is held by pid %d on host %s (name %q, status %s, since %s)",
			ErrIDTaken, in.ID, holder.PID, holder.Host, holder.Name, holder.Status, holder.StartedAt.Format(time.RFC3339))
	}
	in.ModRevision = resp.Header.Revision
	r.lg.Info("registered", zap.String("instance", in.ID), zap.String("status", string(in.Status)))
	return nil
}

// encode fills in the schema version and lease of a record, checks it and
// returns its JSON.
func (r *Registry) encode(in *Instance) ([]byte, error) {
	in.V = SchemaVersion
	in.LeaseID = LeaseHex(r.s.Lease())
	if err := in.validate(); err != nil {
		return nil, err
	}
	return json.Marshal(in)
}

// Update rewrites the record if it is still held by this session. Only
// changes are written: liveness is the lease, never a heartbeat write.
func (r *Registry) Update(ctx context.Context, in *Instance) error {
	val, err := r.encode(in)
	if err != nil {
		return err
	}
	key := InstanceKey(in.ID)
	resp, err := r.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", r.s.Lease()),
			clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(r.s.Lease()))).
		Commit()
	if err != nil {
		return r.leaseErr(fmt.Errorf("coord: update %s: %w", in.ID, err))
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s", ErrNotRegistered, in.ID)
	}
	in.ModRevision = resp.Header.Revision
	return nil
}

// Deregister deletes the record if this session holds it.
func (r *Registry) Deregister(ctx context.Context, id string) error {
	key := InstanceKey(id)
	resp, err := r.s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.LeaseValue(key), "=", r.s.Lease()),
			clientv3.Compare(clientv3.CreateRevision(key), ">", 0)).
		Then(clientv3.OpDelete(key)).
		Commit()
	if err != nil {
		return r.leaseErr(fmt.Errorf("coord: deregister %s: %w", id, err))
	}
	if !resp.Succeeded {
		return fmt.Errorf("%w: %s", ErrNotRegistered, id)
	}
	r.lg.Info("deregistered", zap.String("instance", id))
	return nil
}

func (r *Registry) leaseErr(err error) error {
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return fmt.Errorf("%w: %w", ErrSessionLost, err)
	}
	return err
}

// List returns every registered instance (sorted by id) and the revision read.
func (r *Registry) List(ctx context.Context) ([]Instance, int64, error) {
	return ListInstances(ctx, r.s.cli)
}

// Get returns one instance, or ErrNotFound.
func (r *Registry) Get(ctx context.Context, id string) (Instance, error) {
	return GetInstance(ctx, r.s.cli, id)
}

// Watch is WatchInstances on the session's client.
func (r *Registry) Watch(ctx context.Context, fromRev int64, fn func(InstanceEvent)) error {
	return WatchInstances(ctx, r.s.cli, r.lg, fromRev, fn)
}

// ListInstances returns every registered instance, sorted by id, and the
// revision of the read. Records that do not decode are skipped and logged by
// the caller's choice: they are returned in the error only when nothing else is.
func ListInstances(ctx context.Context, kv clientv3.KV) ([]Instance, int64, error) {
	resp, err := kv.Get(ctx, InstancesPrefix(), clientv3.WithPrefix())
	if err != nil {
		return nil, 0, fmt.Errorf("coord: list instances: %w", err)
	}
	out := make([]Instance, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		in, err := decodeInstance(kv)
		if err != nil {
			continue // a record of a future schema or written by hand; cleanup reports it
		}
		out = append(out, in)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, resp.Header.Revision, nil
}

// GetInstance returns the record of id, or ErrNotFound.
func GetInstance(ctx context.Context, kv clientv3.KV, id string) (Instance, error) {
	if err := CheckID(id); err != nil {
		return Instance{}, err
	}
	resp, err := kv.Get(ctx, InstanceKey(id))
	if err != nil {
		return Instance{}, fmt.Errorf("coord: get instance %s: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return Instance{}, fmt.Errorf("%w: instance %s", ErrNotFound, id)
	}
	return decodeInstance(resp.Kvs[0])
}

// EventType says what happened to an instance.
type EventType string

// Event types.
const (
	EventAdded   EventType = "added"
	EventUpdated EventType = "updated"
	EventRemoved EventType = "removed"
)

// InstanceEvent is one change of the registry. For EventRemoved, Instance is
// the last record known.
type InstanceEvent struct {
	Type     EventType `json:"type"`
	Instance Instance  `json:"instance"`
	Revision int64     `json:"revision"`
}

// WatchInstances calls fn for every change of the registry from fromRev on, in
// revision order, until ctx ends. With fromRev <= 0 it first lists the
// registry and reports every instance as added. It never skips a change: a
// broken watch resumes after the last revision seen, and when that revision
// has been compacted it lists again and reports the difference.
func WatchInstances(ctx context.Context, cli *clientv3.Client, lg *zap.Logger, fromRev int64, fn func(InstanceEvent)) error {
	if lg == nil {
		lg = zap.NewNop()
	}
	known := map[string]Instance{}
	if fromRev > 0 {
		// Start from the state at fromRev-1 so deletes can name the record.
		resp, err := cli.Get(ctx, InstancesPrefix(), clientv3.WithPrefix(), clientv3.WithRev(fromRev-1))
		switch {
		case errors.Is(err, rpctypes.ErrCompacted):
			fromRev = 0 // list instead
		case err != nil:
			return fmt.Errorf("coord: watch instances: %w", err)
		default:
			for _, kv := range resp.Kvs {
				if in, err := decodeInstance(kv); err == nil {
					known[in.ID] = in
				}
			}
		}
	}
	w := &resumableWatch{
		cli: cli, lg: lg, what: "registry", key: InstancesPrefix(), opts: []clientv3.OpOption{clientv3.WithPrefix()},
		list: func(ctx context.Context) (int64, error) { return relist(ctx, cli, known, fn) },
		events: func(evs []*clientv3.Event) error {
			for _, ev := range evs {
				instanceEvent(ev, known, fn)
			}
			return nil
		},
	}
	return w.run(ctx, fromRev)
}

// relist reads the registry, reports the difference to known, and returns the
// revision read.
func relist(ctx context.Context, cli *clientv3.Client, known map[string]Instance, fn func(InstanceEvent)) (int64, error) {
	list, rev, err := ListInstances(ctx, cli)
	if err != nil {
		return 0, err
	}
	seen := make(map[string]bool, len(list))
	for _, in := range list {
		seen[in.ID] = true
		old, ok := known[in.ID]
		known[in.ID] = in
		switch {
		case !ok:
			fn(InstanceEvent{Type: EventAdded, Instance: in, Revision: in.ModRevision})
		case old.ModRevision != in.ModRevision:
			fn(InstanceEvent{Type: EventUpdated, Instance: in, Revision: in.ModRevision})
		}
	}
	ids := make([]string, 0)
	for id := range known {
		if !seen[id] {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	for _, id := range ids {
		fn(InstanceEvent{Type: EventRemoved, Instance: known[id], Revision: rev})
		delete(known, id)
	}
	return rev, nil
}

// instanceEvent reports one watch event of the registry and applies it to
// known.
func instanceEvent(ev *clientv3.Event, known map[string]Instance, fn func(InstanceEvent)) {
	id := string(ev.Kv.Key[len(InstancesPrefix()):])
	if ev.Type == clientv3.EventTypeDelete {
		old, ok := known[id]
		if !ok {
			old = Instance{ID: id}
		}
		delete(known, id)
		fn(InstanceEvent{Type: EventRemoved, Instance: old, Revision: ev.Kv.ModRevision})
		return
	}
	in, err := decodeInstance(ev.Kv)
	if err != nil {
		return
	}
	typ := EventUpdated
	if ev.IsCreate() {
		typ = EventAdded
	}
	known[id] = in
	fn(InstanceEvent{Type: typ, Instance: in, Revision: ev.Kv.ModRevision})
}
