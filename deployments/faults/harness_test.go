// This file starts and stops the cluster under test: three etcd members and
// the katonodes, each on a test host of its own.

package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/namespace"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

// NodeSpec is one katonode of a cluster: its instance id and model.
type NodeSpec struct {
	ID    string
	Model string
}

// Config describes a cluster: three etcd members and the katonodes, each on
// a host of its own.
type Config struct {
	// Dir holds the members' data and every process's log files.
	Dir string
	// Katonode and Etcd are the binaries to run.
	Katonode string
	Etcd     string
	// Nodes are the katonodes.
	Nodes []NodeSpec
	// TTL is the katonodes' session TTL (--ttl). Default 4 s.
	TTL time.Duration
	// ElectionTimeout is etcd's --election-timeout (the heartbeat is a tenth
	// of it). Default 1 s.
	ElectionTimeout time.Duration
	// EtcdLogLevel is the members' --log-level (default warn); NodeLogLevel
	// the katonodes' (default info).
	EtcdLogLevel, NodeLogLevel string
	// Logf logs what the harness does (default: nothing).
	Logf func(string, ...any)
}

// Member is an etcd member process.
type Member struct {
	*Proc
	ClientURL string
}

// Node is a katonode process.
type Node struct {
	*Proc
	ID, Model string
	APIURL    string
}

// Cluster is a running test cluster. Close stops everything and removes the
// namespaces; it is idempotent.
type Cluster struct {
	Cfg     Config
	Net     *Net
	Members []*Member
	Nodes   []*Node
	// Client is this process's etcd client (all members, raw keys); KV is the
	// same confined to the /kato/ prefix, as katonode and katoctl see it.
	Client *clientv3.Client
	KV     clientv3.KV
	HTTP   *http.Client

	closeOnce sync.Once

	// Every node's record as WaitSettled last saw it: its create revision
	// and when that was first seen.
	regMu   sync.Mutex
	regSeen map[string]seenRecord
}

type seenRecord struct {
	createRev int64
	since     time.Time
}

const (
	etcdClientPort = 2379
	etcdPeerPort   = 2380
	nodePort       = 8000
)

// Start builds the network, starts the etcd members and then the nodes, and
// returns once every node is registered. On an error everything started is
// stopped again.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.TTL == 0 {
		cfg.TTL = 4 * time.Second
	}
	if cfg.ElectionTimeout == 0 {
		cfg.ElectionTimeout = time.Second
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if cfg.EtcdLogLevel == "" {
		cfg.EtcdLogLevel = "warn"
	}
	if cfg.NodeLogLevel == "" {
		cfg.NodeLogLevel = "info"
	}
	for _, d := range []string{"logs", "data"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	CleanLeftovers(ctx, cfg.Logf)
	n, err := NewNet(ctx, cfg.Logf)
	if err != nil {
		return nil, err
	}
	c := &Cluster{Cfg: cfg, Net: n, regSeen: map[string]seenRecord{}}
	defer func() {
		if err != nil {
			c.Close()
		}
	}()
	logs := filepath.Join(cfg.Dir, "logs")
	var peers, endpoints []string
	var mhosts []*Host
	for i := 1; i <= 3; i++ {
		h, err := n.AddHost(ctx, fmt.Sprintf("e%d", i), 10+i)
		if err != nil {
			return nil, err
		}
		mhosts = append(mhosts, h)
		peers = append(peers, fmt.Sprintf("%s=http://%s:%d", h.Name, h.IP, etcdPeerPort))
		endpoints = append(endpoints, fmt.Sprintf("%s:%d", h.IP, etcdClientPort))
	}
	et := cfg.ElectionTimeout.Milliseconds()
	for _, h := range mhosts {
		client := fmt.Sprintf("http://%s:%d", h.IP, etcdClientPort)
		peer := fmt.Sprintf("http://%s:%d", h.IP, etcdPeerPort)
		p := newProc(h.Name, h, logs, cfg.Etcd,
			"--name", h.Name, "--data-dir", filepath.Join(cfg.Dir, "data", h.Name),
			"--listen-client-urls", client, "--advertise-client-urls", client,
			"--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
			"--initial-cluster", strings.Join(peers, ","), "--initial-cluster-state", "new",
			"--initial-cluster-token", n.prefix,
			"--heartbeat-interval", fmt.Sprint(et/10), "--election-timeout", fmt.Sprint(et),
			"--auto-compaction-retention", "0",
			"--logger", "zap", "--log-level", cfg.EtcdLogLevel)
		c.Members = append(c.Members, &Member{Proc: p, ClientURL: client})
		if err := p.Start(); err != nil {
			return nil, err
		}
	}
	c.Client, err = newClient(ctx, endpoints)
	if err != nil {
		return nil, err
	}
	c.KV = namespace.NewKV(c.Client.KV, coord.DefaultPrefix)
	c.HTTP = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16, IdleConnTimeout: 30 * time.Second}}
	if err := c.WaitEtcd(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	for i, spec := range cfg.Nodes {
		h, err := n.AddHost(ctx, spec.ID, 21+i)
		if err != nil {
			return nil, err
		}
		p := newProc(spec.ID, h, logs, cfg.Katonode, "run",
			"--id", spec.ID, "--name", spec.ID, "--model", spec.Model,
			"--port", fmt.Sprint(nodePort), "--listen-host", h.IP, "--advertise-host", h.IP,
			"--ttl", cfg.TTL.String(), "--drain-timeout", "2s",
			"--endpoints", strings.Join(endpoints, ","), "--log-level", cfg.NodeLogLevel)
		node := &Node{Proc: p, ID: spec.ID, Model: spec.Model, APIURL: fmt.Sprintf("http://%s:%d", h.IP, nodePort)}
		c.Nodes = append(c.Nodes, node)
		if err := p.Start(); err != nil {
			return nil, err
		}
		// One at a time, so the first node of each model is its first holder.
		if err := c.WaitRegistered(ctx, spec.ID, 30*time.Second); err != nil {
			return nil, err
		}
	}
	return c, nil
}

func newClient(ctx context.Context, endpoints []string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{
		Endpoints:            endpoints,
		DialTimeout:          5 * time.Second,
		DialKeepAliveTime:    2 * time.Second,
		DialKeepAliveTimeout: 2 * time.Second,
		Logger:               zap.NewNop(),
		Context:              ctx,
	})
}

// Close kills every process, closes the clients and removes the network.
func (c *Cluster) Close() {
	c.closeOnce.Do(func() {
		for _, n := range c.Nodes {
			n.Kill()
		}
		for _, m := range c.Members {
			m.Kill()
		}
		if c.Client != nil {
			c.Client.Close()
		}
		if c.HTTP != nil {
			c.HTTP.CloseIdleConnections()
		}
		c.Net.Close()
	})
}

// Node returns the node with id.
func (c *Cluster) Node(id string) *Node {
	for _, n := range c.Nodes {
		if n.ID == id {
			return n
		}
	}
	return nil
}

// Member returns the member named name.
func (c *Cluster) Member(name string) *Member {
	for _, m := range c.Members {
		if m.Name == name {
			return m
		}
	}
	return nil
}

// Models returns the models of the nodes, sorted by first appearance.
func (c *Cluster) Models() []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range c.Nodes {
		if !seen[n.Model] {
			seen[n.Model] = true
			out = append(out, n.Model)
		}
	}
	return out
}

// poll calls fn every 100 ms until it returns nil or d passes; the error is
// fn's last.
func poll(ctx context.Context, d time.Duration, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		err := fn(ctx)
		if err == nil {
			return nil
		}
		// An error caused by the deadline itself says less than the one before.
		if ctx.Err() == nil || last == nil {
			last = err
		}
		select {
		case <-ctx.Done():
			return last
		case <-tick.C:
		}
	}
}

// memberStatus asks one member for its status.
func (c *Cluster) memberStatus(ctx context.Context, m *Member) (*clientv3.StatusResponse, error) {
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	return c.Client.Status(sctx, m.ClientURL)
}

// Leader returns the member every running member names as leader, or "".
func (c *Cluster) Leader(ctx context.Context) (string, error) {
	var leader uint64
	var name string
	for _, m := range c.Members {
		if !m.Running() {
			continue
		}
		st, err := c.memberStatus(ctx, m)
		if err != nil {
			return "", fmt.Errorf("%s: %w", m.Name, err)
		}
		if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
			return "", fmt.Errorf("%s sees leader %x, others %x", m.Name, st.Leader, leader)
		}
		leader = st.Leader
		if st.Header.MemberId == st.Leader {
			name = m.Name
		}
	}
	if name == "" {
		return "", errors.New("no member says it is the leader")
	}
	return name, nil
}

// WaitEtcd waits until every running member agrees on a leader and a write
// goes through.
func (c *Cluster) WaitEtcd(ctx context.Context, d time.Duration) error {
	return poll(ctx, d, func(ctx context.Context) error {
		if _, err := c.Leader(ctx); err != nil {
			return fmt.Errorf("etcd not healthy: %w", err)
		}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err := c.Client.Put(pctx, "faults/health", "ok")
		return err
	})
}

// Record reads instances/<id>.
func (c *Cluster) Record(ctx context.Context, id string) (coord.Instance, bool, error) {
	in, rev, err := c.record(ctx, id)
	return in, rev != 0, err
}

// record reads instances/<id> and its create revision (0: not registered).
func (c *Cluster) record(ctx context.Context, id string) (coord.Instance, int64, error) {
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := c.KV.Get(gctx, coord.InstanceKey(id))
	if err != nil {
		return coord.Instance{}, 0, err
	}
	if len(resp.Kvs) == 0 {
		return coord.Instance{}, 0, nil
	}
	var in coord.Instance
	if err := json.Unmarshal(resp.Kvs[0].Value, &in); err != nil {
		return in, 0, err
	}
	return in, resp.Kvs[0].CreateRevision, nil
}

// WaitRegistered waits until node id is registered as running or standby.
func (c *Cluster) WaitRegistered(ctx context.Context, id string, d time.Duration) error {
	return poll(ctx, d, func(ctx context.Context) error {
		in, ok, err := c.Record(ctx, id)
		switch {
		case err != nil:
			return err
		case !ok:
			return fmt.Errorf("%s is not registered", id)
		case in.Status != coord.StatusRunning && in.Status != coord.StatusStandby:
			return fmt.Errorf("%s is %s", id, in.Status)
		}
		return nil
	})
}

// WaitGone waits until node id's record is gone.
func (c *Cluster) WaitGone(ctx context.Context, id string, d time.Duration) error {
	return poll(ctx, d, func(ctx context.Context) error {
		_, ok, err := c.Record(ctx, id)
		if err != nil {
			return err
		}
		if ok {
			return fmt.Errorf("%s is still registered", id)
		}
		return nil
	})
}

// Holder returns the node that holds model's lock (from the lock keys), or "".
func (c *Cluster) Holder(ctx context.Context, model string) (string, error) {
	gctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	st, _, err := coord.GetLock(gctx, c.KV, model)
	if errors.Is(err, coord.ErrNotLocked) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return st.Holder.ID, nil
}

// readyz asks a node whether it holds its model lock.
func (c *Cluster) readyz(ctx context.Context, n *Node) bool {
	rctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(rctx, http.MethodGet, n.APIURL+"/readyz", nil)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// WaitSettled waits until etcd is healthy, every node process runs and is
// registered with a session that has lasted TTL + 1 s (so etcd renewed its
// lease: its connections to etcd work again, which after a cut can take
// TCP's retransmission backoff), and every model's lock holder is registered
// as running and ready. It is how the schedule knows a fault is over.
func (c *Cluster) WaitSettled(ctx context.Context, d time.Duration) error {
	return poll(ctx, d, func(ctx context.Context) error {
		if _, err := c.Leader(ctx); err != nil {
			return fmt.Errorf("etcd: %w", err)
		}
		for _, n := range c.Nodes {
			if !n.Running() {
				return fmt.Errorf("%s is not running", n.ID)
			}
			in, rev, err := c.record(ctx, n.ID)
			if err != nil {
				return err
			}
			if rev == 0 || (in.Status != coord.StatusRunning && in.Status != coord.StatusStandby) {
				return fmt.Errorf("%s is not registered as running or standby (%q)", n.ID, in.Status)
			}
			c.regMu.Lock()
			seen, ok := c.regSeen[n.ID]
			if !ok || seen.createRev != rev {
				seen = seenRecord{createRev: rev, since: time.Now()}
				c.regSeen[n.ID] = seen
			}
			c.regMu.Unlock()
			if age := time.Since(seen.since); age < c.Cfg.TTL+time.Second {
				return fmt.Errorf("%s registered again only %v ago", n.ID, age.Round(time.Millisecond))
			}
		}
		for _, m := range c.Models() {
			h, err := c.Holder(ctx, m)
			if err != nil {
				return err
			}
			hn := c.Node(h)
			if hn == nil {
				return fmt.Errorf("model %s: holder %q is not a node", m, h)
			}
			in, _, err := c.Record(ctx, h)
			if err != nil {
				return err
			}
			if in.Status != coord.StatusRunning || !c.readyz(ctx, hn) {
				return fmt.Errorf("model %s: holder %s is %s and not ready yet", m, h, in.Status)
			}
		}
		return nil
	})
}

// CutNodeFromEtcd drops the node's packets to every member (toEtcd), the
// members' packets to the node (fromEtcd), or both.
func (c *Cluster) CutNodeFromEtcd(ctx context.Context, id string, toEtcd, fromEtcd bool) error {
	for _, m := range c.Members {
		if toEtcd {
			if err := c.Net.Cut(ctx, id, m.Name); err != nil {
				return err
			}
		}
		if fromEtcd {
			if err := c.Net.Cut(ctx, m.Name, id); err != nil {
				return err
			}
		}
	}
	return nil
}

// IsolateMember cuts member name off from every other host, both ways. This
// process still reaches it (so the checker can watch what it does), but no
// node and no other member does.
func (c *Cluster) IsolateMember(ctx context.Context, name string) error {
	for _, m := range c.Members {
		if m.Name != name {
			if err := c.Net.CutBoth(ctx, name, m.Name); err != nil {
				return err
			}
		}
	}
	for _, n := range c.Nodes {
		if err := c.Net.CutBoth(ctx, name, n.ID); err != nil {
			return err
		}
	}
	return nil
}

// StartNode starts node id again, and waits until it is registered.
func (c *Cluster) StartNode(ctx context.Context, id string, d time.Duration) error {
	n := c.Node(id)
	if err := n.Start(); err != nil {
		return err
	}
	return c.WaitRegistered(ctx, id, d)
}
