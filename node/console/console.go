package console

// This file is the Console itself: its config and Run, following the
// directory, building the views a page shows, and the broadcast that feeds
// every open page from one state.

import (
	"context"
	"encoding/json"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// Directory is the node's watched view of the cluster.
type Directory interface {
	// Instances returns every registered instance.
	Instances() []coord.Instance
	// Holders maps each locked model to its holder's instance id.
	Holders() map[string]string
	// Changed is closed at the next change.
	Changed() <-chan struct{}
}

// Config is what a console needs from its node.
type Config struct {
	// Client reaches etcd, confined to the key prefix.
	Client *clientv3.Client
	// Directory is the node's watched view of instances and lock holders.
	Directory Directory
	// Self and Model are this node's instance id and model.
	Self, Model string
	// Send sends a message from this node's mailbox.
	Send func(ctx context.Context, to string, msg coord.Message, ttl time.Duration) (coord.Sent, error)
	// Learns returns how many learns this node has handled (its metrics).
	Learns func() uint64
	// Interval is how often the poller reads what no watch gives, while a
	// page is open (default 2 s; etcd member status every 3rd time).
	Interval time.Duration
	// Logger (default: none).
	Logger *zap.Logger
}

// goneKeep is how long a departed instance stays on the page (greyed), and
// maxGone how many are kept at most.
const (
	goneKeep = 10 * time.Minute
	maxGone  = 50
	// learnMinutes is the length of the learns-per-minute sparkline.
	learnMinutes = 30
)

// Console serves the web console. Run keeps its state; ServeHTTP serves it.
type Console struct {
	cfg Config
	lg  *zap.Logger
	b   *broadcast

	viewers atomic.Int64
	kick    chan struct{} // asks the poller for a read now
	closed  chan struct{} // closed by Close: streams end
	close   sync.Once

	mu       sync.Mutex
	gone     map[string]goneInstance   // departed instances by id
	last     map[string]coord.Instance // the directory as follow saw it last
	holders  map[string]string
	polled   pollResult
	learns   []uint64 // learns per minute, oldest first; the last is the current minute
	learnMin time.Time
	learnAt  uint64 // counter at the start of the current minute
}

type goneInstance struct {
	in coord.Instance
	at time.Time
}

// New returns a console; Run must run for it to show anything.
func New(cfg Config) *Console {
	if cfg.Interval <= 0 {
		cfg.Interval = 2 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.Learns == nil {
		cfg.Learns = func() uint64 { return 0 }
	}
	return &Console{cfg: cfg, lg: cfg.Logger.Named("console"), b: newBroadcast(),
		kick: make(chan struct{}, 1), closed: make(chan struct{}),
		gone: map[string]goneInstance{}, last: map[string]coord.Instance{}}
}

// Close ends every open event stream (the node calls it when its HTTP server
// shuts down, so that open pages do not hold the shutdown up). Idempotent.
func (c *Console) Close() { c.close.Do(func() { close(c.closed) }) }

// Run follows the directory and, while a page is open, polls etcd, until ctx
// ends.
func (c *Console) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); c.poll(ctx) }()
	defer wg.Wait()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		changed := c.cfg.Directory.Changed()
		c.follow(time.Now())
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
			c.poke() // lock queues may have changed too
		case <-tick.C:
		}
	}
}

// poke asks the poller for a read soon, without waiting.
func (c *Console) poke() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

// follow takes the directory's current state, notes departed instances and
// learns, and publishes.
func (c *Console) follow(now time.Time) {
	list := c.cfg.Directory.Instances()
	holders := c.cfg.Directory.Holders()
	c.mu.Lock()
	cur := make(map[string]coord.Instance, len(list))
	for _, in := range list {
		cur[in.ID] = in
		delete(c.gone, in.ID)
	}
	for id, in := range c.last {
		if _, ok := cur[id]; !ok {
			c.gone[id] = goneInstance{in: in, at: now}
		}
	}
	c.last, c.holders = cur, holders
	for id, g := range c.gone {
		if now.Sub(g.at) > goneKeep {
			delete(c.gone, id)
		}
	}
	for len(c.gone) > maxGone {
		oldest := ""
		for id, g := range c.gone {
			if oldest == "" || g.at.Before(c.gone[oldest].at) {
				oldest = id
			}
		}
		delete(c.gone, oldest)
	}
	c.sampleLearns(now)
	c.publish(now)
	c.mu.Unlock()
}

// sampleLearns keeps the learns-per-minute ring; c.mu must be held.
func (c *Console) sampleLearns(now time.Time) {
	n := c.cfg.Learns()
	minute := now.Truncate(time.Minute)
	switch {
	case c.learnMin.IsZero():
		c.learnMin, c.learnAt, c.learns = minute, n, []uint64{0}
	case minute.After(c.learnMin):
		// Close the last minute with the learns since the last sample, then
		// the minutes passed (idle ones count 0).
		c.learns[len(c.learns)-1] = n - c.learnAt
		steps := int(minute.Sub(c.learnMin) / time.Minute)
		for i := 0; i < steps && i < learnMinutes; i++ {
			c.learns = append(c.learns, 0)
		}
		c.learnMin, c.learnAt = minute, n
	}
	c.learns[len(c.learns)-1] = n - c.learnAt
	if len(c.learns) > learnMinutes {
		c.learns = c.learns[len(c.learns)-learnMinutes:]
	}
}

// instanceView is one row of the instances table.
type instanceView struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Model     string    `json:"model"`
	Status    string    `json:"status"`
	Host      string    `json:"host"`
	APIURL    string    `json:"api_url"`
	StartedAt time.Time `json:"started_at"`
	Lease     string    `json:"lease"`
	// TTLLeft and TTL are the lease's seconds left and granted, as the poller
	// last read them at LeaseReadAt; -1 when unknown.
	TTLLeft     int64      `json:"ttl_left_s"`
	TTL         int64      `json:"ttl_s"`
	LeaseReadAt *time.Time `json:"lease_read_at,omitempty"`
	Self        bool       `json:"self"`
	// GoneAt is set for an instance that left the registry (lease expired or
	// stopped); it stays on the page, greyed, for a while.
	GoneAt *time.Time `json:"gone_at,omitempty"`
}

// modelView is one row of the models table.
type modelView struct {
	Model     string            `json:"model"`
	Patterns  int64             `json:"patterns"`
	Vectors   int64             `json:"vectors"`
	SizeBytes int64             `json:"size_bytes"` // -1 when not measured (see modelStats)
	Holder    string            `json:"holder"`     // instance id, "" when nobody holds it
	Lock      *coord.LockEntry  `json:"lock,omitempty"`
	Waiters   []coord.LockEntry `json:"waiters"`
	LastWrite *lastWrite        `json:"last_write,omitempty"`
	// Learns is learns per minute on this node, oldest first, for the model
	// this node serves.
	Learns []uint64 `json:"learns_per_min,omitempty"`
	Known  bool     `json:"stats_known"`
}

type envelope struct {
	At   time.Time `json:"at"`
	Self string    `json:"self"`
	Data any       `json:"data"`
}

// publish builds every section from the current state; c.mu must be held.
func (c *Console) publish(now time.Time) {
	p := c.polled
	holders := c.holders
	list := make([]coord.Instance, 0, len(c.last))
	for _, in := range c.last {
		list = append(list, in)
	}
	rows := make([]instanceView, 0, len(list)+len(c.gone))
	for _, in := range list {
		v := viewOf(in, c.cfg.Self)
		if l, ok := p.leases[in.LeaseID]; ok {
			v.TTLLeft, v.TTL = l.left, l.granted
			at := p.at
			v.LeaseReadAt = &at
		}
		rows = append(rows, v)
	}
	for id, g := range c.gone {
		if _, back := c.last[id]; back {
			continue
		}
		v := viewOf(g.in, c.cfg.Self)
		v.Status, v.TTLLeft = "gone", 0
		at := g.at
		v.GoneAt = &at
		rows = append(rows, v)
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	c.b.set("instances", envelope{At: now, Self: c.cfg.Self, Data: rows})

	models := map[string]*modelView{}
	get := func(m string) *modelView {
		v := models[m]
		if v == nil {
			v = &modelView{Model: m, SizeBytes: -1, Waiters: []coord.LockEntry{}}
			models[m] = v
		}
		return v
	}
	for _, in := range list {
		if in.Model != "" {
			get(in.Model)
		}
	}
	for m, id := range holders {
		get(m).Holder = id
	}
	for _, l := range p.locks {
		v := get(l.Model)
		h := l.Holder
		v.Lock, v.Waiters = &h, l.Waiters
		if v.Holder == "" {
			v.Holder = h.ID
		}
	}
	for m, st := range p.models {
		if v, ok := models[m]; ok {
			v.Patterns, v.Vectors, v.SizeBytes, v.LastWrite, v.Known = st.patterns, st.vectors, st.size, st.last, true
		}
	}
	get(c.cfg.Model).Learns = append([]uint64(nil), c.learns...)
	mrows := make([]modelView, 0, len(models))
	for _, v := range models {
		mrows = append(mrows, *v)
	}
	sort.Slice(mrows, func(i, j int) bool { return mrows[i].Model < mrows[j].Model })
	c.b.set("models", envelope{At: now, Self: c.cfg.Self, Data: mrows})

	if !p.at.IsZero() {
		registered := map[string]bool{}
		for _, in := range list {
			registered[in.ID] = true
		}
		inboxes := make([]inboxView, len(p.inboxes))
		for i, ib := range p.inboxes {
			ib.Registered = registered[ib.ID]
			inboxes[i] = ib
		}
		c.b.set("messages", envelope{At: p.at, Self: c.cfg.Self, Data: messagesView{Inboxes: inboxes, More: p.inboxesMore, Error: p.inboxErr}})
		c.b.set("sessions", envelope{At: p.at, Self: c.cfg.Self, Data: p.sessions})
	}
	if !p.etcdAt.IsZero() {
		c.b.set("etcd", envelope{At: p.etcdAt, Self: c.cfg.Self, Data: p.etcd})
	}
}

func viewOf(in coord.Instance, self string) instanceView {
	return instanceView{ID: in.ID, Name: in.Name, Model: in.Model, Status: string(in.Status), Host: in.Host,
		APIURL: in.APIURL, StartedAt: in.StartedAt, Lease: in.LeaseID, TTLLeft: -1, TTL: -1, Self: in.ID == self}
}

// broadcast holds the latest JSON of each section with a generation number,
// and wakes every stream when one changes.
type broadcast struct {
	mu       sync.Mutex
	sections map[string]section
	gen      uint64
	changed  chan struct{}
}

type section struct {
	data []byte // the envelope's Data, to tell a change
	msg  []byte // the whole envelope
	gen  uint64
}

func newBroadcast() *broadcast {
	return &broadcast{sections: map[string]section{}, changed: make(chan struct{})}
}

// set stores a section if its data changed and wakes the streams.
func (b *broadcast) set(name string, env envelope) {
	data, err := json.Marshal(env.Data)
	if err != nil {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if old, ok := b.sections[name]; ok && string(old.data) == string(data) {
		return
	}
	msg, err := json.Marshal(envelope{At: env.At, Self: env.Self, Data: json.RawMessage(data)})
	if err != nil {
		return
	}
	b.gen++
	b.sections[name] = section{data: data, msg: msg, gen: b.gen}
	close(b.changed)
	b.changed = make(chan struct{})
}

// event is one section to send.
type event struct {
	name string
	msg  []byte
}

// since returns the sections newer than sent (and records them there), and
// the channel closed at the next change.
func (b *broadcast) since(sent map[string]uint64) ([]event, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []event
	for _, name := range sectionNames {
		s, ok := b.sections[name]
		if ok && s.gen > sent[name] {
			sent[name] = s.gen
			out = append(out, event{name, s.msg})
		}
	}
	return out, b.changed
}

var sectionNames = []string{"instances", "models", "sessions", "messages", "etcd"}
