package console

// This file is the console's poller: while a page is open, it reads from etcd
// what no watch gives (lease TTLs, lock queues, model sizes, sessions,
// inboxes, etcd members), within fixed bounds per poll.

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/kb"
)

// Bounds of one poll, so that a large cluster costs etcd a bounded read.
const (
	maxLeaseReads  = 200   // instance leases asked for their TTL
	maxModelReads  = 100   // models counted
	maxInboxKeys   = 10000 // inbox keys listed
	maxSessionKeys = 10000 // session keys listed (keys only)
	maxSessionAges = 100   // models whose oldest/newest session records are read
	sizeScanLimit  = 5000  // a model with more keys is not measured
	sizeScanBudget = 20000 // keys read to measure sizes, per poll
	requestTimeout = 2 * time.Second
	pollBudget     = 5 * time.Second // one poll, whatever etcd does
	minPollGap     = 300 * time.Millisecond
)

// pollResult is what the poller read last.
type pollResult struct {
	at          time.Time
	leases      map[string]leaseTTL // by lease hex
	locks       []coord.LockState
	models      map[string]modelStats
	inboxes     []inboxView
	inboxesMore bool
	inboxErr    string
	sessions    sessionsView
	etcd        etcdView
	etcdAt      time.Time
}

type leaseTTL struct{ left, granted int64 }

type modelStats struct {
	patterns, vectors, size int64
	last                    *lastWrite
	metaRev                 int64
	sum                     *kb.Summary // the counts' source, reused while metaRev holds
}

// lastWrite is the model's meta record: who wrote it last, when, under which fence.
type lastWrite struct {
	Writer string    `json:"writer"`
	Host   string    `json:"host"`
	Fence  int64     `json:"fence"`
	At     time.Time `json:"at"`
}

type inboxView struct {
	ID         string    `json:"id"`
	Registered bool      `json:"registered"`
	Pending    int       `json:"pending"`
	Oldest     time.Time `json:"oldest"`
	Newest     time.Time `json:"newest"`
	// ExpiresIn is the seconds until the oldest message's lease runs out; -1
	// when unknown.
	ExpiresIn int64 `json:"expires_in_s"`
}

type messagesView struct {
	Inboxes []inboxView `json:"inboxes"`
	More    bool        `json:"more"`
	Error   string      `json:"error,omitempty"`
}

type memberView struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Endpoint string `json:"endpoint"`
	Leader   bool   `json:"leader"`
	Learner  bool   `json:"learner"`
	Version  string `json:"version,omitempty"`
	DBSize   int64  `json:"db_size"`
	DBInUse  int64  `json:"db_in_use"`
	Quota    int64  `json:"quota"`
	Error    string `json:"error,omitempty"`
}

type etcdView struct {
	Members []memberView `json:"members"`
	Leader  string       `json:"leader"`
	Alarms  []string     `json:"alarms"`
	Error   string       `json:"error,omitempty"`
}

// poll reads what no watch gives, while a page is open: at every Interval, and
// soon after a change of the directory (at most every minPollGap).
func (c *Console) poll(ctx context.Context) {
	tick := time.NewTicker(c.cfg.Interval)
	defer tick.Stop()
	var last time.Time
	n := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-c.kick:
			if wait := minPollGap - time.Since(last); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return
				case <-t.C:
				}
			}
		}
		if c.viewers.Load() == 0 {
			continue
		}
		last = time.Now()
		c.readOnce(ctx, n%3 == 0)
		n++
	}
}

// readOnce reads leases, locks and inboxes, and, when slow (or for a model
// never read), model stats and etcd's members, then publishes.
func (c *Console) readOnce(ctx context.Context, slow bool) {
	ctx, cancel := context.WithTimeout(ctx, pollBudget)
	defer cancel()
	list := c.cfg.Directory.Instances()
	c.mu.Lock()
	prev := c.polled
	c.mu.Unlock()
	p := pollResult{at: time.Now(), leases: map[string]leaseTTL{}, models: map[string]modelStats{},
		etcd: prev.etcd, etcdAt: prev.etcdAt}
	cli := c.cfg.Client

	for i, in := range list {
		if i >= maxLeaseReads {
			break
		}
		var id int64
		if _, err := fmt.Sscanf(in.LeaseID, "%x", &id); err != nil {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, requestTimeout)
		resp, err := cli.TimeToLive(rctx, clientv3.LeaseID(id))
		cancel()
		if err != nil {
			c.lg.Debug("lease TTLs", zap.Error(err))
			break // etcd does not answer: the other leases would not do better
		}
		p.leases[in.LeaseID] = leaseTTL{left: max(resp.TTL, 0), granted: resp.GrantedTTL}
	}

	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	locks, _, err := coord.ListLocks(rctx, cli.KV)
	cancel()
	if err == nil {
		p.locks = locks
	} else {
		p.locks = prev.locks
		c.lg.Debug("list locks", zap.Error(err))
	}

	models := map[string]bool{}
	for _, in := range list {
		models[in.Model] = true
	}
	for _, l := range p.locks {
		models[l.Model] = true
	}
	n, budget := 0, int64(sizeScanBudget)
	for m := range models {
		old, known := prev.models[m]
		if m == "" {
			continue
		}
		if (known && !slow) || n >= maxModelReads {
			if known {
				p.models[m] = old
			}
			continue
		}
		n++
		st, err := c.modelStats(ctx, m, old, &budget)
		if err != nil {
			c.lg.Debug("model stats", zap.String("model", m), zap.Error(err))
			if old, ok := prev.models[m]; ok {
				p.models[m] = old
			}
			continue
		}
		p.models[m] = st
	}

	p.inboxes, p.inboxesMore, p.inboxErr = c.readInboxes(ctx)
	p.sessions = c.readSessions(ctx, prev.sessions)
	if slow || prev.etcdAt.IsZero() {
		p.etcd, p.etcdAt = c.readEtcd(ctx), time.Now()
	}

	c.mu.Lock()
	c.polled = p
	c.publish(time.Now())
	c.mu.Unlock()
}

// modelStats reads a model's summary (count-only reads, its head and meta
// records: kb.Summarize). The size is its snapshot's stored bytes plus the
// bytes of its other keys (log, meta, records of the old layout), read again
// only when the model changed, only for models of at most sizeScanLimit such
// keys and while budget (keys per poll) lasts; -1 otherwise.
func (c *Console) modelStats(ctx context.Context, model string, prev modelStats, budget *int64) (modelStats, error) {
	pfx := coord.ModelPrefix(model)
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	sum, err := kb.Summarize(rctx, c.cfg.Client.KV, model, prev.sum)
	if err != nil {
		return prev, err
	}
	st := modelStats{patterns: sum.Patterns, vectors: sum.Vectors, size: -1, metaRev: sum.MetaRev, sum: &sum}
	if sum.MetaRev != 0 {
		m := sum.Meta
		st.last = &lastWrite{Writer: m.Writer, Host: m.Host, Fence: m.Fence, At: m.WrittenAt}
	}
	var chunks int64
	if sum.Head != nil {
		chunks = int64(sum.Head.Chunks)
	}
	keys := sum.Keys - chunks
	switch {
	case keys > sizeScanLimit:
	case prev.size >= 0 && prev.metaRev == st.metaRev && st.metaRev != 0:
		st.size = prev.size
	case keys > *budget:
		st.size = prev.size // measured again at a later poll
	default:
		*budget -= keys
		var size int64
		for _, r := range kb.ScanRanges() {
			resp, err := c.cfg.Client.Get(rctx, pfx+r[0], clientv3.WithRange(pfx+r[1]), clientv3.WithLimit(sizeScanLimit+1))
			if err != nil {
				return prev, err
			}
			if resp.More {
				return st, nil
			}
			for _, kv := range resp.Kvs {
				size += int64(len(kv.Key) + len(kv.Value))
			}
		}
		st.size = size + sum.SnapshotBytes
	}
	return st, nil
}

// readInboxes lists the inboxes and asks when their oldest messages expire.
func (c *Console) readInboxes(ctx context.Context) ([]inboxView, bool, string) {
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	list, more, err := coord.ListInboxes(rctx, c.cfg.Client.KV, maxInboxKeys)
	if err != nil {
		return nil, false, err.Error()
	}
	ttls := map[clientv3.LeaseID]int64{}
	out := make([]inboxView, len(list))
	for i, ib := range list {
		v := inboxView{ID: ib.ID, Pending: ib.Pending, Oldest: ib.Oldest, Newest: ib.Newest, ExpiresIn: -1}
		if l := ib.OldestLease; l != 0 {
			ttl, ok := ttls[l]
			if !ok {
				ttl = -1
				if resp, err := c.cfg.Client.TimeToLive(rctx, l); err == nil && resp.TTL >= 0 {
					ttl = resp.TTL
				}
				ttls[l] = ttl
			}
			v.ExpiresIn = ttl
		}
		out[i] = v
	}
	return out, more, ""
}

type sessionsView struct {
	Models []sessionModel `json:"models"`
	// More is set when there were more keys than maxSessionKeys: the counts
	// are of the keys read.
	More  bool   `json:"more"`
	Error string `json:"error,omitempty"`
}

// sessionModel is one model's KATO 3 sessions: how many, and when the
// oldest and newest (by creation) were created.
type sessionModel struct {
	Model  string     `json:"model"`
	Count  int        `json:"count"`
	Oldest *time.Time `json:"oldest,omitempty"`
	Newest *time.Time `json:"newest,omitempty"`

	oldest, newest sessionKey
}

// sessionKey is a session's key and etcd create revision, and its record's
// created_at once read.
type sessionKey struct {
	key string
	rev int64
	at  *time.Time
}

// readSessions counts the sessions of each model from one keys-only listing
// of at most maxSessionKeys keys, and reads created_at from the records of
// each model's first and last created session (by etcd create revision),
// only when those changed since prev and for at most maxSessionAges models.
func (c *Console) readSessions(ctx context.Context, prev sessionsView) sessionsView {
	v := sessionsView{Models: []sessionModel{}}
	all := coord.SessionsPrefix()
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := c.cfg.Client.Get(rctx, all, clientv3.WithPrefix(), clientv3.WithKeysOnly(), clientv3.WithLimit(maxSessionKeys))
	if err != nil {
		prev.Error = err.Error()
		return prev
	}
	v.More = resp.More
	byModel := map[string]*sessionModel{}
	for _, kv := range resp.Kvs {
		model, _, ok := strings.Cut(strings.TrimPrefix(string(kv.Key), all), "/")
		if !ok || model == "" {
			continue // not a session key
		}
		m := byModel[model]
		k := sessionKey{key: string(kv.Key), rev: kv.CreateRevision}
		if m == nil {
			m = &sessionModel{Model: model, oldest: k, newest: k}
			byModel[model] = m
		}
		m.Count++
		if k.rev < m.oldest.rev {
			m.oldest = k
		}
		if k.rev > m.newest.rev {
			m.newest = k
		}
	}
	type keyRev struct {
		key string
		rev int64
	}
	known := map[keyRev]*time.Time{}
	for _, m := range prev.Models {
		known[keyRev{m.oldest.key, m.oldest.rev}] = m.oldest.at
		known[keyRev{m.newest.key, m.newest.rev}] = m.newest.at
	}
	for _, m := range byModel {
		v.Models = append(v.Models, *m)
	}
	sort.Slice(v.Models, func(i, j int) bool { return v.Models[i].Model < v.Models[j].Model })
	reads := 0
	for i := range v.Models {
		m := &v.Models[i]
		for _, k := range []*sessionKey{&m.oldest, &m.newest} {
			if at := known[keyRev{k.key, k.rev}]; at != nil {
				k.at = at
				continue
			}
			if reads >= 2*maxSessionAges {
				continue
			}
			reads++
			r, err := c.cfg.Client.Get(rctx, k.key)
			if err != nil {
				v.Error = err.Error()
				continue
			}
			if len(r.Kvs) == 1 {
				var rec struct {
					CreatedAt time.Time `json:"created_at"`
				}
				if json.Unmarshal(r.Kvs[0].Value, &rec) == nil && !rec.CreatedAt.IsZero() {
					k.at = &rec.CreatedAt
				}
			}
		}
		m.Oldest, m.Newest = m.oldest.at, m.newest.at
	}
	return v
}

// readEtcd reads the members, each member's status and the alarms.
func (c *Console) readEtcd(ctx context.Context) etcdView {
	cli := c.cfg.Client
	v := etcdView{Members: []memberView{}, Alarms: []string{}}
	rctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	ml, err := cli.MemberList(rctx)
	if err != nil {
		v.Error = fmt.Sprintf("member list: %v", err)
		return v
	}
	names := map[uint64]string{}
	for _, m := range ml.Members {
		mv := memberView{ID: fmt.Sprintf("%x", m.ID), Name: m.Name, Learner: m.IsLearner}
		names[m.ID] = m.Name
		if len(m.ClientURLs) == 0 {
			mv.Error = "not started"
			v.Members = append(v.Members, mv)
			continue
		}
		mv.Endpoint = m.ClientURLs[0]
		sctx, scancel := context.WithTimeout(ctx, requestTimeout)
		st, err := cli.Status(sctx, mv.Endpoint)
		scancel()
		if err != nil {
			mv.Error = err.Error()
		} else {
			mv.Version, mv.DBSize, mv.DBInUse, mv.Quota = st.Version, st.DbSize, st.DbSizeInUse, st.DbSizeQuota
			mv.Leader = st.Leader == m.ID
			if len(st.Errors) > 0 {
				mv.Error = strings.Join(st.Errors, "; ")
			}
		}
		if mv.Leader {
			v.Leader = m.Name
		}
		v.Members = append(v.Members, mv)
	}
	al, err := cli.AlarmList(rctx)
	if err != nil {
		v.Alarms = append(v.Alarms, fmt.Sprintf("alarm list: %v", err))
		return v
	}
	for _, a := range al.Alarms {
		if a.Alarm == pb.AlarmType_NONE {
			continue
		}
		name := names[a.MemberID]
		if name == "" {
			name = fmt.Sprintf("%x", a.MemberID)
		}
		v.Alarms = append(v.Alarms, fmt.Sprintf("%s on member %s", a.Alarm, name))
	}
	return v
}
