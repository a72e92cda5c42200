package node

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// Directory is this node's live view of the cluster: every registered
// instance and the holder of every model lock, kept current by watches (never
// read from etcd per request). Request routing and /v1/sd read it.
type Directory struct {
	cli *clientv3.Client
	lg  *zap.Logger

	mu        sync.RWMutex
	instances map[string]coord.Instance
	holders   map[string]string // model -> holder instance id
	ready     chan struct{}     // closed after the first full listing
	readyOnce sync.Once
	changed   chan struct{} // closed and replaced on every change
}

// NewDirectory returns an empty directory; Run fills it.
func NewDirectory(cli *clientv3.Client, lg *zap.Logger) *Directory {
	return &Directory{cli: cli, lg: lg.Named("directory"), instances: map[string]coord.Instance{},
		holders: map[string]string{}, ready: make(chan struct{}), changed: make(chan struct{})}
}

// Run keeps the directory current until ctx ends.
func (d *Directory) Run(ctx context.Context) error {
	var rev int64
	for {
		list, r, err := coord.ListInstances(ctx, d.cli)
		if err == nil {
			d.mu.Lock()
			for _, in := range list {
				d.instances[in.ID] = in
			}
			d.bump()
			d.mu.Unlock()
			rev = r
			break
		}
		if !sleep(ctx, 200*time.Millisecond) {
			return nil
		}
	}
	errc := make(chan error, 1)
	listed := make(chan struct{}, 1)
	go func() { errc <- d.watchHolders(ctx, listed) }()
	select {
	case <-listed:
		d.readyOnce.Do(func() { close(d.ready) })
	case <-ctx.Done():
	}
	err := coord.WatchInstances(ctx, d.cli, d.lg, rev+1, func(ev coord.InstanceEvent) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if ev.Type == coord.EventRemoved {
			delete(d.instances, ev.Instance.ID)
		} else {
			d.instances[ev.Instance.ID] = ev.Instance
		}
		d.bump()
	})
	herr := <-errc
	if ctx.Err() != nil {
		return nil
	}
	return errors.Join(err, herr)
}

// Ready is closed once the directory has listed the cluster.
func (d *Directory) Ready() <-chan struct{} { return d.ready }

// Changed returns a channel that is closed at the next change of the
// directory (an instance or a lock holder); call it again after each change.
func (d *Directory) Changed() <-chan struct{} {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.changed
}

// bump signals a change; d.mu must be held for writing.
func (d *Directory) bump() {
	close(d.changed)
	d.changed = make(chan struct{})
}

type holderInfo struct {
	ID string `json:"id"`
}

// watchHolders lists lockinfo/ and follows it, re-listing on compaction.
func (d *Directory) watchHolders(ctx context.Context, listed chan<- struct{}) error {
	prefix := coord.LockInfoPrefix()
	for {
		resp, err := d.cli.Get(ctx, prefix, clientv3.WithPrefix())
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			d.lg.Debug("list lock holders", zap.Error(err))
			if !sleep(ctx, 200*time.Millisecond) {
				return ctx.Err()
			}
			continue
		}
		holders := map[string]string{}
		for _, kv := range resp.Kvs {
			var h holderInfo
			if json.Unmarshal(kv.Value, &h) == nil {
				holders[strings.TrimPrefix(string(kv.Key), prefix)] = h.ID
			}
		}
		d.mu.Lock()
		d.holders = holders
		d.bump()
		d.mu.Unlock()
		select {
		case listed <- struct{}{}:
		default:
		}
		next := resp.Header.Revision + 1
		for {
			err = d.followHolders(ctx, prefix, &next)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, rpctypes.ErrCompacted) {
				break // list again
			}
			if !sleep(ctx, 100*time.Millisecond) {
				return ctx.Err()
			}
		}
	}
}

func (d *Directory) followHolders(ctx context.Context, prefix string, next *int64) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	for resp := range d.cli.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(*next)) {
		if err := resp.Err(); err != nil {
			return err
		}
		d.mu.Lock()
		for _, ev := range resp.Events {
			model := strings.TrimPrefix(string(ev.Kv.Key), prefix)
			var h holderInfo
			if ev.Type == clientv3.EventTypeDelete || json.Unmarshal(ev.Kv.Value, &h) != nil {
				delete(d.holders, model)
			} else {
				d.holders[model] = h.ID
			}
		}
		d.bump()
		d.mu.Unlock()
		if n := len(resp.Events); n > 0 {
			*next = resp.Events[n-1].Kv.ModRevision + 1
		}
	}
	return errors.New("watch closed")
}

// Instances returns every registered instance, in no order.
func (d *Directory) Instances() []coord.Instance {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make([]coord.Instance, 0, len(d.instances))
	for _, in := range d.instances {
		out = append(out, in)
	}
	return out
}

// Holders returns the holder instance id of every locked model.
func (d *Directory) Holders() map[string]string {
	d.mu.RLock()
	defer d.mu.RUnlock()
	out := make(map[string]string, len(d.holders))
	for m, id := range d.holders {
		out[m] = id
	}
	return out
}

// Instance returns the record of id.
func (d *Directory) Instance(id string) (coord.Instance, bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	in, ok := d.instances[id]
	return in, ok
}

// Resolve maps the {id} of an API path, an instance id or a model name, to a
// model, and returns the instance that holds that model's lock (ok false when
// nobody holds it). known is false when the name is neither a registered
// instance, nor a model any instance serves or any lock names.
func (d *Directory) Resolve(name string) (model string, holder coord.Instance, ok, known bool) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	model = name
	if in, found := d.instances[name]; found {
		model = in.Model
		known = true
	}
	if !known {
		if _, locked := d.holders[name]; locked {
			known = true
		}
		for _, in := range d.instances {
			if in.Model == name {
				known = true
				break
			}
		}
	}
	if id, locked := d.holders[model]; locked {
		holder, ok = d.instances[id]
	}
	return model, holder, ok, known
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
