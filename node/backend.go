package node

// This file is the node's api.Backend: the HTTP server, and what the API
// asks of the node (routing, reads and writes, mailbox, history, instances).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/metrics"
	"github.com/kato-coord/kato/node/api"
	"github.com/kato-coord/kato/node/processor"
)

// backend adapts the node to api.Backend.
type backend struct{ n *Node }

func (n *Node) handler() http.Handler {
	return api.New(backend{n}, api.Options{Token: n.cfg.APIToken, MaxBodyBytes: n.cfg.MaxBodyBytes, Logger: n.lg,
		RetryAfter: int((n.cfg.TTL + time.Second - 1) / time.Second), Console: n.console, Sessions: sessionsAPI{n},
		ForwardTimeout: n.cfg.TTL, ForwardTLS: n.forwardTLS})
}

// server is the node's HTTP server. A request may take ReadTimeout to
// arrive; its answer may wait for a forward and its retry (2 × TTL) and a
// model write, so WriteTimeout adds those. The console's event stream is the
// one route that streams: it lifts its own deadlines with
// http.ResponseController.
func (n *Node) server(base context.Context) *http.Server {
	return &http.Server{
		Handler:           n.handler(),
		ReadHeaderTimeout: min(10*time.Second, n.cfg.ReadTimeout),
		ReadTimeout:       n.cfg.ReadTimeout,
		WriteTimeout:      n.cfg.ReadTimeout + 3*n.cfg.TTL + 10*time.Second,
		IdleTimeout:       n.cfg.IdleTimeout,
		BaseContext:       func(net.Listener) context.Context { return base },
		ErrorLog:          mustStdLog(n.lg),
		TLSConfig:         n.serverTLS,
	}
}

func (b backend) ID() string                { return b.n.cfg.ID }
func (b backend) Ready() bool               { return b.n.Ready() }
func (b backend) Loading() string           { return b.n.engine.progress.String() }
func (b backend) MailboxState() string      { return b.n.MailboxState() }
func (b backend) Metrics() *metrics.Metrics { return b.n.m }
func (b backend) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(b.n.reg, promhttp.HandlerOpts{Registry: b.n.reg})
}

func (b backend) Route(name string) (api.Route, error) {
	n := b.n
	model := name
	if name != n.cfg.ID && name != n.cfg.Model {
		m, holder, ok, known := n.dir.Resolve(name)
		if !known {
			return api.Route{}, api.ErrUnknownProcessor
		}
		if m != n.cfg.Model {
			if !ok {
				return api.Route{}, api.ErrNoHolder
			}
			return api.Route{Forward: holder.APIURL, ID: holder.ID}, nil
		}
		model = m
	}
	if n.Ready() {
		return api.Route{Local: true, ID: n.cfg.ID}, nil
	}
	_, holder, ok, _ := n.dir.Resolve(model)
	if !ok || holder.ID == n.cfg.ID {
		return api.Route{}, api.ErrNoHolder
	}
	return api.Route{Forward: holder.APIURL, ID: holder.ID}, nil
}

func (b backend) Read() (*processor.Processor, func(), error) {
	if !b.n.Ready() {
		return nil, nil, fmt.Errorf("%w: %v", api.ErrUnavailable, ErrNotServing)
	}
	p, done, err := b.n.engine.read()
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	return p, done, nil
}

func (b backend) Write(ctx context.Context, fn func(*processor.Processor) (processor.Changes, error)) error {
	return apiWriteErr(b.n.engine.write(ctx, fn))
}

// apiWriteErr maps an error of engine.write to the API's errors.
func apiWriteErr(err error) error {
	switch {
	case err == nil:
	case errors.Is(err, ErrOutcomeUnknown):
		return fmt.Errorf("%w: %v", api.ErrOutcomeUnknown, err)
	case errors.Is(err, ErrNotServing), errors.Is(err, ErrWriteFailed), errors.Is(err, ErrNotStored):
		return fmt.Errorf("%w: %v", api.ErrUnavailable, err)
	}
	return err
}

// GenesChanged writes the processor's genes into the registry record (D2).
func (b backend) GenesChanged(ctx context.Context) {
	n := b.n
	genes, err := json.Marshal(n.engine.geneMap())
	if err != nil {
		return
	}
	n.mu.Lock()
	ep := n.cur
	n.mu.Unlock()
	if ep == nil {
		return
	}
	if err := ep.setGenes(ctx, genes); err != nil {
		n.lg.Warn("cannot record the new genes in the registry", zap.Error(err))
	}
}

func (b backend) mailbox() (*coord.Mailbox, error) {
	b.n.mu.Lock()
	defer b.n.mu.Unlock()
	if b.n.cur == nil {
		return nil, fmt.Errorf("%w: no etcd session", api.ErrUnavailable)
	}
	return b.n.cur.mb, nil
}

func (b backend) Send(ctx context.Context, to string, msg coord.Message, ttl time.Duration) (coord.Sent, error) {
	mb, err := b.mailbox()
	if err != nil {
		return coord.Sent{}, err
	}
	return mb.Send(ctx, to, msg, ttl)
}

func (b backend) Pending(ctx context.Context, id string) ([]coord.Message, error) {
	mb, err := b.mailbox()
	if err != nil {
		return nil, err
	}
	return mb.Pending(ctx, id)
}

// History is this node's own history from memory, another instance's from
// what it published in etcd.
func (b backend) History(ctx context.Context, id string) ([]coord.ReceivedMessage, error) {
	if id == b.n.cfg.ID {
		list, _ := b.n.history.List()
		return list, nil
	}
	return coord.GetHistory(ctx, b.n.cli, id)
}

// MessageTarget sends what is addressed to a model to the instance holding
// it, rather than to an inbox named like the model that nobody reads.
func (b backend) MessageTarget(name string) (string, error) {
	n := b.n
	if name == n.cfg.ID {
		return name, nil
	}
	if _, ok := n.dir.Instance(name); ok {
		return name, nil
	}
	_, holder, ok, known := n.dir.Resolve(name)
	switch {
	case !known:
		return name, nil
	case !ok:
		return "", api.ErrNoHolder
	}
	return holder.ID, nil
}

// SD lists every live instance's metrics address for Prometheus HTTP SD,
// from the directory (kept current by a watch).
func (b backend) SD() []api.SDGroup {
	ins := b.n.dir.Instances()
	sort.Slice(ins, func(i, j int) bool { return ins[i].ID < ins[j].ID })
	out := make([]api.SDGroup, 0, len(ins))
	for _, in := range ins {
		u, err := url.Parse(in.MetricsURL)
		if err != nil || u.Host == "" {
			continue
		}
		host := u.Host
		if _, _, err := net.SplitHostPort(host); err != nil {
			continue
		}
		out = append(out, api.SDGroup{Targets: []string{host}, Labels: map[string]string{
			"__metrics_path__": u.Path, "__scheme__": u.Scheme,
			"id": in.ID, "name": in.Name, "model": in.Model, "status": string(in.Status),
		}})
	}
	return out
}

// mustStdLog adapts lg for net/http's own messages (handshake errors,
// connections closed by a timeout), at debug level.
func mustStdLog(lg *zap.Logger) *log.Logger {
	l, err := zap.NewStdLogAt(lg.Named("http"), zap.DebugLevel)
	if err != nil { // only for an invalid level
		return zap.NewStdLog(lg.Named("http"))
	}
	return l
}
