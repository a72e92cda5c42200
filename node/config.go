package node

// This file is the node's Config, its defaults and checks, and binding the
// HTTP port.

import (
	"fmt"
	"net"
	"time"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/kb"
	"github.com/kato-coord/kato/node/processor"
)

// Config is what a node runs with. Zero values take the documented defaults.
type Config struct {
	// ID is the instance id (required, valid per coord.CheckID).
	ID string
	// Name is a free-text name (default: the id).
	Name string
	// Model is the model (knowledge base) name (default: the id).
	Model string
	// ListenHost is the address the HTTP server binds (default all interfaces).
	ListenHost string
	// Port is the HTTP port asked for (default 8000); when it is taken the
	// next free one is used. 0 picks any free port.
	Port int
	// PortTries bounds how many ports after Port are tried (default 100).
	PortTries int
	// AdvertiseHost is the host name other hosts reach this node by (default:
	// the host name).
	AdvertiseHost string
	// Genes are the processor's start-up genes (default processor.DefaultConfig()).
	Genes processor.Config
	// CheckpointPolicy says when the holder folds the model's log into a new
	// snapshot (nil: kb.DefaultPolicy).
	CheckpointPolicy *kb.Policy
	// CheckpointStep, if not nil, is told each step of a checkpoint as it
	// is reached (CheckpointSteps): for crash tests.
	CheckpointStep func(step string)
	// TTL is the session lease TTL (default 10 s).
	TTL time.Duration
	// LockTimeout bounds the wait for the model lock (0 = wait forever).
	LockTimeout time.Duration
	// DrainTimeout bounds how long a graceful stop waits for in-flight
	// requests (default 10 s).
	DrainTimeout time.Duration
	// APIToken, when set, is required as "Authorization: Bearer <token>" on
	// every route but /healthz, /readyz and /metrics.
	APIToken string
	// MaxBodyBytes bounds request bodies (default 4 MiB).
	MaxBodyBytes int64
	// ReadTimeout bounds reading a whole request, body included (default
	// 30 s: 4 MiB at about 1 Mbit/s), so a client that trickles its body
	// cannot hold a connection. Request headers get at most 10 s of it.
	ReadTimeout time.Duration
	// IdleTimeout closes a keep-alive connection idle this long (default 60 s).
	IdleTimeout time.Duration
	// MaxConns caps the connections served at once (default 4096); more wait
	// in the kernel's accept queue.
	MaxConns int
	// TLSCert and TLSKey, when given, make the API HTTPS (PEM files). TLSCA
	// verifies the nodes a request is forwarded to (default: the system's
	// roots).
	TLSCert, TLSKey, TLSCA string
	// Version is shown in the registry record and node info.
	Version string
	// EmbeddedEtcd says the etcd runs inside this process (katonode run
	// --embedded-etcd): the record says so, katoctl stop --all stops such a
	// node last, and a dead earlier run's hold on the id is taken over at
	// once, since only this process can have started the etcd.
	EmbeddedEtcd bool
	// SessionTTLs bound the TTL of KATO 3 sessions (sessions.go).
	SessionTTLs SessionTTLs
}

func (c *Config) applyDefaults() error {
	if err := coord.CheckID(c.ID); err != nil {
		return err
	}
	if c.Name == "" {
		c.Name = c.ID
	}
	if err := coord.CheckName(c.Name); err != nil {
		return err
	}
	if c.Model == "" {
		c.Model = c.ID
	}
	if err := coord.CheckID(c.Model); err != nil {
		return fmt.Errorf("model name: %w", err)
	}
	if c.Port == 0 && c.PortTries == 0 {
		c.PortTries = 1
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("node: port %d out of range", c.Port)
	}
	if c.PortTries <= 0 {
		c.PortTries = 100
	}
	if c.AdvertiseHost == "" {
		c.AdvertiseHost = coord.Hostname()
	}
	if c.Genes == (processor.Config{}) {
		c.Genes = processor.DefaultConfig()
	}
	if err := c.Genes.Validate(); err != nil {
		return err
	}
	if c.TTL == 0 {
		c.TTL = coord.DefaultTTL
	}
	if c.TTL < coord.MinTTL {
		return fmt.Errorf("node: --ttl %v is below the minimum %v", c.TTL, coord.MinTTL)
	}
	if c.LockTimeout < 0 {
		return fmt.Errorf("node: --lock-timeout %v is negative", c.LockTimeout)
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 4 << 20
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 4096
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return fmt.Errorf("node: --tls-cert and --tls-key go together")
	}
	if c.Version == "" {
		c.Version = "devel"
	}
	return c.SessionTTLs.applyDefaults()
}

// listen binds the asked port or, when it is taken, the next free one.
func listen(host string, port, tries int) (net.Listener, error) {
	var firstErr error
	for i := 0; i < tries && port+i <= 65535; i++ {
		p := port
		if port != 0 {
			p = port + i
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(host, fmt.Sprint(p)))
		if err == nil {
			return ln, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	return nil, fmt.Errorf("node: no free port in %d..%d: %w", port, port+tries-1, firstErr)
}
