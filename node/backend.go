package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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
		RetryAfter: int((n.cfg.TTL + time.Second - 1) / time.Second), Console: n.console, Sessions: sessionsAPI{n}})
}

func (b backend) ID() string                { return b.n.cfg.ID }
func (b backend) Ready() bool               { return b.n.Ready() }
func (b backend) Loading() string           { return b.n.engine.progress.String() }
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
	reg, rec := n.registry, n.record
	n.mu.Unlock()
	if reg == nil || rec == nil {
		return
	}
	n.recMu.Lock()
	defer n.recMu.Unlock()
	rec.Genes = genes
	if err := reg.Update(ctx, rec); err != nil {
		n.lg.Warn("cannot record the new genes in the registry", zap.Error(err))
	}
}

func (b backend) mailbox() (*coord.Mailbox, error) {
	b.n.mu.Lock()
	defer b.n.mu.Unlock()
	if b.n.mailbox == nil {
		return nil, fmt.Errorf("%w: no etcd session", api.ErrUnavailable)
	}
	return b.n.mailbox, nil
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
