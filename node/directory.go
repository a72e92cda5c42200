// The directory: this node's live view of the registered instances and the
// lock holders, kept by watches.

package node

import (
	"context"
	"errors"
	"sync"
	"time"

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
		if coord.Sleep(ctx, 200*time.Millisecond) != nil {
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

// watchHolders follows the lock holders (coord.WatchLocks) and signals
// listed after each full listing.
func (d *Directory) watchHolders(ctx context.Context, listed chan<- struct{}) error {
	return coord.WatchLocks(ctx, d.cli, d.lg, func(infos map[string]coord.LockInfo, _ int64) {
		holders := make(map[string]string, len(infos))
		for model, info := range infos {
			holders[model] = info.ID
		}
		d.mu.Lock()
		d.holders = holders
		d.bump()
		d.mu.Unlock()
		select {
		case listed <- struct{}{}:
		default:
		}
	}, func(ev coord.LockEvent) {
		d.mu.Lock()
		defer d.mu.Unlock()
		if ev.Removed {
			delete(d.holders, ev.Model)
		} else {
			d.holders[ev.Model] = ev.Info.ID
		}
		d.bump()
	})
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

// sleep waits d; false when ctx ended first. It stays for the callers in
// node/engine.go and node/sessions.go; it is coord.Sleep.
func sleep(ctx context.Context, d time.Duration) bool { return coord.Sleep(ctx, d) == nil }
