// This file makes the test hosts: network namespaces joined by a bridge, with
// nftables rules to cut one off from another and heal.

package faults

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// namePrefix starts the name of every network namespace the harness makes:
// kfault-<pid>-<seq>-<host>. The pid lets a later run tell the leftovers of a
// crashed run (pid gone) from those of a run still going.
const namePrefix = "kfault-"

// rootAddr is the last octet of the address of this process (the root
// namespace end of the test network): the clients and the checker's etcd
// client talk from it.
const rootAddr = 1

// netSeq numbers the networks made by one process.
var netSeq atomic.Int64

// Host is one test host: a network namespace with one address.
type Host struct {
	Name string // e1, n1, ...
	NS   string // network namespace
	IP   string
}

// Net is a set of test hosts, each in its own network namespace with one
// veth into a bridge. The bridge lives in a switch namespace of its own, so
// the root namespace's firewall (Docker's FORWARD DROP with bridge netfilter
// on) never sees the hosts' traffic; this process reaches the hosts through
// a veth from the root namespace into that bridge.
//
// Cuts drop packets at the receiving host's input (nftables), as a network
// that loses them would: the sender sees no error, TCP retransmits, and
// traffic flows again after Heal.
type Net struct {
	prefix string // kfault-<pid>-<seq>
	sw     string // switch namespace
	rootIf string // veth in the root namespace
	subnet string // "10.77.N"
	logf   func(string, ...any)

	mu    sync.Mutex
	hosts map[string]*Host
	cuts  map[[2]string]bool // {from, to}: packets from → to are dropped
	addrs map[string]string  // IP -> host name, and the root's
}

// RootIP is this process's address on the test network.
func (n *Net) RootIP() string { return fmt.Sprintf("%s.%d", n.subnet, rootAddr) }

// Root is the pseudo host name of this process in cuts.
const Root = "root"

// run runs a command and returns an error that holds its output.
func run(ctx context.Context, name string, args ...string) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// output runs a command and returns its output.
func output(ctx context.Context, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// CanRun reports why this machine cannot make test hosts, or nil when it can:
// root, the ip command with netns support and nft are needed.
func CanRun() error {
	if os.Geteuid() != 0 {
		return errors.New("not root: network namespaces need root")
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (iproute2, nftables)", tool)
		}
	}
	ctx := context.Background()
	if _, err := output(ctx, "ip", "netns", "list"); err != nil {
		return fmt.Errorf("ip netns unavailable: %w", err)
	}
	probe := fmt.Sprintf("%s%d-probe", namePrefix, os.Getpid())
	if err := run(ctx, "ip", "netns", "add", probe); err != nil {
		return fmt.Errorf("cannot make a network namespace: %w", err)
	}
	defer run(ctx, "ip", "netns", "del", probe)
	if err := run(ctx, "ip", "netns", "exec", probe, "nft", "add", "table", "inet", "kfault"); err != nil {
		return fmt.Errorf("nftables unusable in a network namespace: %w", err)
	}
	return nil
}

// CleanLeftovers deletes the namespaces (and kills the processes in them) of
// earlier runs whose process is gone. Deleting a switch namespace removes its
// veths, the root namespace end included.
func CleanLeftovers(ctx context.Context, logf func(string, ...any)) {
	out, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return
	}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || !strings.HasPrefix(f[0], namePrefix) {
			continue
		}
		ns := f[0]
		rest := strings.TrimPrefix(ns, namePrefix)
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid <= 0 || pid == os.Getpid() || processAlive(pid) {
			continue
		}
		killNamespace(ctx, ns)
		if err := run(ctx, "ip", "netns", "del", ns); err == nil {
			logf("removed %s, left by a run (pid %d) that is gone", ns, pid)
		}
	}
}

func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// killNamespace kills every process in namespace ns (only processes of a
// harness run ever live there).
func killNamespace(ctx context.Context, ns string) {
	out, err := output(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(out) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
			syscall.Kill(pid, syscall.SIGCONT)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// NewNet makes the switch namespace and the root veth, on a /24 of 10.77/16
// that no address or route of this machine uses yet.
func NewNet(ctx context.Context, logf func(string, ...any)) (_ *Net, err error) {
	seq := netSeq.Add(1)
	n := &Net{
		prefix: fmt.Sprintf("%s%d-%d", namePrefix, os.Getpid(), seq),
		rootIf: fmt.Sprintf("kf%xs%d", os.Getpid(), seq),
		logf:   logf,
		hosts:  map[string]*Host{},
		cuts:   map[[2]string]bool{},
		addrs:  map[string]string{},
	}
	if len(n.rootIf) > 15 {
		return nil, fmt.Errorf("faults: interface name %q too long", n.rootIf)
	}
	n.sw = n.prefix + "-sw"
	// Choosing a subnet and taking it must not interleave with another run.
	unlock, err := lockFile(filepath.Join(os.TempDir(), "kato-faults-net.lock"))
	if err != nil {
		return nil, err
	}
	defer unlock()
	used, err := output(ctx, "sh", "-c", "ip -4 -o addr show; ip -4 route show table all")
	if err != nil {
		return nil, err
	}
	start := os.Getpid()%250 + 1
	for i := 0; i < 250; i++ {
		cand := fmt.Sprintf("10.77.%d", (start+i)%250+1)
		if !strings.Contains(used, cand+".") {
			n.subnet = cand
			break
		}
	}
	if n.subnet == "" {
		return nil, errors.New("faults: no free /24 in 10.77.0.0/16")
	}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	steps := [][]string{
		{"ip", "netns", "add", n.sw},
		{"ip", "-n", n.sw, "link", "set", "lo", "up"},
		{"ip", "-n", n.sw, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", n.sw, "link", "set", "br0", "up"},
		{"ip", "link", "add", n.rootIf, "type", "veth", "peer", "name", "up0", "netns", n.sw},
		{"ip", "-n", n.sw, "link", "set", "up0", "master", "br0", "up"},
		{"ip", "addr", "add", n.RootIP() + "/24", "dev", n.rootIf},
		{"ip", "link", "set", n.rootIf, "up"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	n.addrs[n.RootIP()] = Root
	logf("test network %s.0/24 (namespaces %s-*)", n.subnet, n.prefix)
	return n, nil
}

// lockFile takes an exclusive flock on path.
func lockFile(path string) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// AddHost makes a host with address subnet.octet, joined to the bridge, with
// an empty nftables input chain for cuts.
func (n *Net) AddHost(ctx context.Context, name string, octet int) (*Host, error) {
	h := &Host{Name: name, NS: n.prefix + "-" + name, IP: fmt.Sprintf("%s.%d", n.subnet, octet)}
	n.mu.Lock()
	idx := len(n.hosts)
	n.mu.Unlock()
	port := fmt.Sprintf("h%d", idx)
	steps := [][]string{
		{"ip", "netns", "add", h.NS},
		{"ip", "-n", h.NS, "link", "set", "lo", "up"},
		{"ip", "-n", n.sw, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", h.NS},
		{"ip", "-n", n.sw, "link", "set", port, "master", "br0", "up"},
		{"ip", "-n", h.NS, "addr", "add", h.IP + "/24", "dev", "eth0"},
		{"ip", "-n", h.NS, "link", "set", "eth0", "up"},
		{"ip", "netns", "exec", h.NS, "nft", "add table inet kfault; add chain inet kfault input { type filter hook input priority 0; policy accept; }"},
	}
	for _, s := range steps {
		if err := run(ctx, s[0], s[1:]...); err != nil {
			return nil, err
		}
	}
	n.mu.Lock()
	n.hosts[name] = h
	n.addrs[h.IP] = name
	n.mu.Unlock()
	return h, nil
}

func (n *Net) addr(name string) (string, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if name == Root {
		return n.RootIP(), nil
	}
	h, ok := n.hosts[name]
	if !ok {
		return "", fmt.Errorf("faults: no host %q", name)
	}
	return h.IP, nil
}

// Cut drops every packet from host from to host to (one way). from may be
// Root; to must be a host (the root namespace's firewall is never touched).
func (n *Net) Cut(ctx context.Context, from, to string) error {
	src, err := n.addr(from)
	if err != nil {
		return err
	}
	n.mu.Lock()
	h, ok := n.hosts[to]
	done := n.cuts[[2]string{from, to}]
	n.mu.Unlock()
	if !ok {
		return fmt.Errorf("faults: cut %s -> %s: no host %q", from, to, to)
	}
	if done {
		return nil
	}
	if err := run(ctx, "ip", "netns", "exec", h.NS, "nft", "add", "rule", "inet", "kfault", "input", "ip", "saddr", src, "drop"); err != nil {
		return err
	}
	n.mu.Lock()
	n.cuts[[2]string{from, to}] = true
	n.mu.Unlock()
	return nil
}

// CutBoth cuts a and b off from each other.
func (n *Net) CutBoth(ctx context.Context, a, b string) error {
	if err := n.Cut(ctx, a, b); err != nil {
		return err
	}
	if b == Root {
		return nil
	}
	return n.Cut(ctx, b, a)
}

// Heal removes every cut.
func (n *Net) Heal(ctx context.Context) error {
	n.mu.Lock()
	hosts := map[string]*Host{}
	for c := range n.cuts {
		hosts[c[1]] = n.hosts[c[1]]
	}
	n.mu.Unlock()
	var errs []error
	for name, h := range hosts {
		if err := run(ctx, "ip", "netns", "exec", h.NS, "nft", "flush", "chain", "inet", "kfault", "input"); err != nil {
			errs = append(errs, err)
			continue
		}
		n.mu.Lock()
		for c := range n.cuts {
			if c[1] == name {
				delete(n.cuts, c)
			}
		}
		n.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Close kills whatever still runs in the hosts and deletes every namespace
// of the network (the veths go with them). It is idempotent.
func (n *Net) Close() {
	ctx := context.Background()
	n.mu.Lock()
	hosts := make([]*Host, 0, len(n.hosts))
	for _, h := range n.hosts {
		hosts = append(hosts, h)
	}
	n.hosts = map[string]*Host{}
	n.mu.Unlock()
	for _, h := range hosts {
		killNamespace(ctx, h.NS)
		if err := run(ctx, "ip", "netns", "del", h.NS); err != nil {
			n.logf("cleanup: %v", err)
		}
	}
	if n.sw != "" {
		if err := run(ctx, "ip", "netns", "del", n.sw); err != nil && !strings.Contains(err.Error(), "No such file") {
			n.logf("cleanup: %v", err)
		}
		n.sw = ""
	}
	// The root veth went with the switch namespace; remove it should it not have.
	if _, err := output(ctx, "ip", "link", "show", n.rootIf); err == nil {
		run(ctx, "ip", "link", "del", n.rootIf)
	}
}
