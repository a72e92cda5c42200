package api

// This file is the KATO-compatible processor routes (PROCESSOR.md §8): their
// table, handlers and answer bodies, and the message routes (send to an
// instance, read what waits for it).

import (
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/processor"
)

type routeKey struct{ method, rest string }

type routeOp struct {
	name string
	fn   func(h *handler, id, rest string) http.HandlerFunc
}

// routes are the KATO routes of PROCESSOR.md §8.2 below /{id}/.
var routes = map[routeKey]routeOp{
	{http.MethodGet, "ping"}:                  {"ping", (*handler).ping},
	{http.MethodGet, "status"}:                {"status", (*handler).status},
	{http.MethodPost, "observe"}:              {"observe", (*handler).observe},
	{http.MethodPost, "learn"}:                {"learn", (*handler).learn},
	{http.MethodGet, "predictions"}:           {"predictions", (*handler).predictions},
	{http.MethodPost, "predictions"}:          {"predictions", (*handler).predictions},
	{http.MethodGet, "working-memory"}:        {"working_memory", (*handler).workingMemory},
	{http.MethodPost, "clear-working-memory"}: {"clear_working_memory", (*handler).clearWM},
	{http.MethodPost, "working-memory/clear"}: {"clear_working_memory", (*handler).clearWM},
	{http.MethodPost, "clear-all-memory"}:     {"clear_all_memory", (*handler).clearAll},
	{http.MethodGet, "percept-data"}:          {"percept_data", (*handler).perceptData},
	{http.MethodGet, "cognition-data"}:        {"cognition_data", (*handler).cognitionData},
	{http.MethodPost, "genes/change"}:         {"genes_change", (*handler).genesChange},
}

// prefixRoute matches gene/{name} and model/{name}.
func prefixRoute(method, rest string) (routeOp, bool) {
	if method != http.MethodGet {
		return routeOp{}, false
	}
	switch {
	case strings.HasPrefix(rest, "gene/") && len(rest) > len("gene/"):
		return routeOp{"gene", (*handler).gene}, true
	case strings.HasPrefix(rest, "model/") && len(rest) > len("model/"):
		return routeOp{"model", (*handler).model}, true
	}
	return routeOp{}, false
}

// withProc runs fn with the processor for a call that stores nothing.
func (h *handler) withProc(w http.ResponseWriter, fn func(p *processor.Processor)) {
	p, done, err := h.b.Read()
	if err != nil {
		h.failErr(w, err)
		return
	}
	defer done()
	fn(p)
}

type pingBody struct {
	ID        string            `json:"id"`
	Interval  int64             `json:"interval"`
	TimeStamp processor.PyFloat `json:"time_stamp"`
	Status    string            `json:"status"`
	Message   string            `json:"message"`
	Processor string            `json:"processor"`
}

func (h *handler) ping(id, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.withProc(w, func(p *processor.Processor) {
			writeJSON(w, http.StatusOK, pingBody{ID: id, Interval: p.Time(), TimeStamp: now(), Status: "okay", Message: p.Name(), Processor: p.Name()})
		})
	}
}

type statusInner struct {
	Status   string `json:"status"`
	Message  string `json:"message"`
	ID       string `json:"id"`
	Interval int64  `json:"interval"`
}

type statusBody struct {
	Status    string            `json:"status"`
	Processor string            `json:"processor"`
	ID        string            `json:"id"`
	TimeStamp processor.PyFloat `json:"time_stamp"`
	Interval  int64             `json:"interval"`
	Message   statusInner       `json:"message"`
}

func (h *handler) status(_, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.withProc(w, func(p *processor.Processor) {
			t := p.Time()
			writeJSON(w, http.StatusOK, statusBody{Status: "okay", Processor: p.Name(), ID: p.ID(), TimeStamp: now(), Interval: t,
				Message: statusInner{Status: "okay", Message: p.Name(), ID: p.ID(), Interval: t}})
		})
	}
}

type observeMessage struct {
	Status           string  `json:"status"`
	AutoLearnedModel *string `json:"auto_learned_model"`
}

type observeBody struct {
	ID        string            `json:"id"`
	Interval  int64             `json:"interval"`
	TimeStamp processor.PyFloat `json:"time_stamp"`
	Status    string            `json:"status"`
	Message   observeMessage    `json:"message"`
}

func (h *handler) observe(id, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(r)
		if err != nil {
			h.failErr(w, err)
			return
		}
		start := time.Now()
		// Decoded before any lock: a hostile body costs its sender, not the
		// model's other clients.
		obs, decodeErr := processor.DecodeObservation(body)
		if errors.Is(decodeErr, processor.ErrBadJSON) {
			h.failErr(w, decodeErr)
			return
		}
		var res processor.ObserveResult
		var t int64
		m := h.b.Metrics()
		err = h.b.Write(r.Context(), func(p *processor.Processor) (processor.Changes, error) {
			if decodeErr != nil {
				return nil, p.Rejected(decodeErr)
			}
			var ch processor.Changes
			var err error
			pstart := time.Now()
			res, ch, err = p.Observe(obs)
			m.Predict.Observe(time.Since(pstart).Seconds())
			t = p.Time()
			m.STMLength.Set(float64(len(p.WorkingMemory())))
			if len(ch) > 0 {
				m.Patterns.Set(float64(p.Stats().Models))
			}
			return ch, err
		})
		m.Observe.Observe(time.Since(start).Seconds())
		if err != nil {
			h.failErr(w, err)
			return
		}
		var learned *string
		if res.AutoLearnedModel != "" {
			learned = &res.AutoLearnedModel
		}
		writeJSON(w, http.StatusOK, observeBody{ID: id, Interval: t, TimeStamp: now(), Status: "okay",
			Message: observeMessage{Status: "observed", AutoLearnedModel: learned}})
	}
}

type okBody struct {
	ID        string            `json:"id"`
	Interval  int64             `json:"interval"`
	TimeStamp processor.PyFloat `json:"time_stamp"`
	Status    string            `json:"status"`
	Message   string            `json:"message"`
}

func (h *handler) learn(id, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		var name string
		m := h.b.Metrics()
		err := h.b.Write(r.Context(), func(p *processor.Processor) (processor.Changes, error) {
			var ch processor.Changes
			var err error
			if name, ch, err = p.TryLearn(); err != nil {
				return nil, err
			}
			m.Patterns.Set(float64(p.Stats().Models))
			m.STMLength.Set(0)
			return ch, nil
		})
		h.b.Metrics().Learn.Observe(time.Since(start).Seconds())
		if err != nil {
			h.failErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, okBody{ID: id, Interval: 0, TimeStamp: now(), Status: "okay", Message: name})
	}
}

type messageBody struct {
	Message any `json:"message"`
}

func (h *handler) predictions(_, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.withProc(w, func(p *processor.Processor) {
			writeJSON(w, http.StatusOK, messageBody{p.Predictions()})
		})
	}
}

type wmBody struct {
	Message   [][]string        `json:"message"`
	TimeStamp processor.PyFloat `json:"time_stamp"`
	Interval  int64             `json:"interval"`
}

func (h *handler) workingMemory(_, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.withProc(w, func(p *processor.Processor) {
			wm := p.WorkingMemory()
			h.b.Metrics().STMLength.Set(float64(len(wm)))
			writeJSON(w, http.StatusOK, wmBody{Message: wm, TimeStamp: now(), Interval: p.Time()})
		})
	}
}

func (h *handler) clearWM(id, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h.b.Write(r.Context(), func(p *processor.Processor) (processor.Changes, error) {
			p.ClearWorkingMemory()
			return nil, nil
		})
		if err != nil {
			h.failErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, okBody{ID: id, TimeStamp: now(), Status: "okay", Message: "wm-cleared"})
	}
}

func (h *handler) clearAll(id, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		err := h.b.Write(r.Context(), func(p *processor.Processor) (processor.Changes, error) {
			return p.ClearAll(), nil
		})
		if err != nil {
			h.failErr(w, err)
			return
		}
		h.b.Metrics().Patterns.Set(0)
		writeJSON(w, http.StatusOK, okBody{ID: id, TimeStamp: now(), Status: "okay", Message: "all-cleared"})
	}
}

func (h *handler) perceptData(_, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.withProc(w, func(p *processor.Processor) {
			writeJSON(w, http.StatusOK, messageBody{p.PerceptData()})
		})
	}
}

func (h *handler) cognitionData(_, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		h.withProc(w, func(p *processor.Processor) {
			writeJSON(w, http.StatusOK, messageBody{p.CognitionData()})
		})
	}
}

type geneBody struct {
	GeneName  string `json:"gene_name"`
	GeneValue any    `json:"gene_value"`
	Message   any    `json:"message"`
}

func (h *handler) gene(_, rest string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := unescape(strings.TrimPrefix(rest, "gene/"))
		h.withProc(w, func(p *processor.Processor) {
			v, err := p.Gene(name)
			if err != nil {
				h.failErr(w, err)
				return
			}
			writeJSON(w, http.StatusOK, geneBody{GeneName: name, GeneValue: v, Message: v})
		})
	}
}

func (h *handler) model(_, rest string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		name := unescape(strings.TrimPrefix(rest, "model/"))
		h.withProc(w, func(p *processor.Processor) {
			m, err := p.Model(name)
			if err != nil {
				h.failErr(w, err)
				return
			}
			writeJSON(w, http.StatusOK, messageBody{m})
		})
	}
}

type genesChangedBody struct {
	ID      string `json:"id"`
	Status  string `json:"status"`
	Message string `json:"message"`
}

func (h *handler) genesChange(id, _ string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := readBody(r)
		if err != nil {
			h.failErr(w, err)
			return
		}
		changes, err := processor.DecodeGeneChanges(body)
		if err != nil {
			h.failErr(w, err)
			return
		}
		err = h.b.Write(r.Context(), func(p *processor.Processor) (processor.Changes, error) {
			return nil, p.ChangeGenes(changes)
		})
		if err != nil {
			h.failErr(w, err)
			return
		}
		h.b.GenesChanged(r.Context())
		writeJSON(w, http.StatusOK, genesChangedBody{ID: id, Status: "okay", Message: "updated-genes"})
	}
}

// connect answers GET /connect with the genome of this node's processor.
func (h *handler) connect(w http.ResponseWriter, r *http.Request) {
	h.withProc(w, func(p *processor.Processor) {
		genome := map[string]any{}
		classifier := any("CVC")
		for _, g := range p.Genes() {
			genome[g.Name] = g.Value
			if g.Name == "classifier" {
				classifier = g.Value
			}
		}
		genome["elements"] = map[string]any{"nodes": []any{map[string]any{"data": map[string]any{"id": p.ID(), "name": p.Name(), "classifier": classifier}}}}
		writeJSON(w, http.StatusOK, map[string]any{"status": "okay", "message": "connected", "genome": genome})
	})
}

func unescape(s string) string {
	if u, err := url.PathUnescape(s); err == nil {
		return u
	}
	return s
}

// sendRequest is the body of POST /{id}/messages.
type sendRequest struct {
	Kind string `json:"kind"`
	Body string `json:"body"`
	// TTL is a Go duration ("90s", "1h"); empty = the default.
	TTL string `json:"ttl"`
}

// pendingBody is the answer of GET /{id}/messages: the messages waiting for
// the instance, and the ones it received lately (oldest first).
type pendingBody struct {
	ID       string                  `json:"id"`
	Message  []coord.Message         `json:"message"`
	Received []coord.ReceivedMessage `json:"received"`
}

// messages serves POST (send to {id}) and GET (read pending, not consumed).
func (h *handler) messages(w http.ResponseWriter, r *http.Request, id string) string {
	if err := coord.CheckID(id); err != nil {
		h.fail(w, http.StatusBadRequest, "INVALID_ID", err.Error())
		return "messages"
	}
	to, err := h.b.MessageTarget(id)
	if errors.Is(err, ErrNoHolder) {
		h.failNoHolder(w, id)
		return "messages"
	}
	if err != nil {
		h.failErr(w, err)
		return "messages"
	}
	id = to
	switch r.Method {
	case http.MethodGet:
		msgs, err := h.b.Pending(r.Context(), id)
		if err != nil {
			h.failErr(w, err)
			return "messages"
		}
		if msgs == nil {
			msgs = []coord.Message{}
		}
		received, err := h.b.History(r.Context(), id)
		if err != nil {
			h.failErr(w, err)
			return "messages"
		}
		writeJSON(w, http.StatusOK, pendingBody{ID: id, Message: msgs, Received: received})
	case http.MethodPost:
		var req sendRequest
		if _, ok := h.decodeBody(w, r, &req, bodyShape{code: "INVALID_JSON", usage: "message body", strict: true}); !ok {
			return "messages"
		}
		var ttl time.Duration
		var err error
		if req.TTL != "" {
			if ttl, err = time.ParseDuration(req.TTL); err != nil {
				h.fail(w, http.StatusBadRequest, "INVALID_TTL", err.Error())
				return "messages"
			}
		}
		sent, err := h.b.Send(r.Context(), id, coord.Message{Kind: req.Kind, Body: req.Body}, ttl)
		switch {
		case errors.Is(err, coord.ErrBodyTooLarge), errors.Is(err, coord.ErrInvalidMessage), errors.Is(err, coord.ErrInvalidTTL), errors.Is(err, coord.ErrInvalidID):
			h.fail(w, http.StatusBadRequest, "INVALID_MESSAGE", err.Error())
			return "messages"
		case err != nil:
			h.failErr(w, err)
			return "messages"
		}
		h.b.Metrics().MessagesSent.WithLabelValues(metricKind(req.Kind)).Inc()
		writeJSON(w, http.StatusOK, messageBody{sent})
	}
	return "messages"
}

// metricKind bounds the label set of message kinds.
func metricKind(k string) string {
	switch k {
	case "", coord.KindText:
		return coord.KindText
	case coord.KindControl:
		return k
	}
	return "other"
}
