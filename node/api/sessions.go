package api

// This file is the KATO 3 session routes: the Sessions backend they need,
// creating and counting sessions, and every operation on one (read, extend,
// config, observe, learn, predictions, clear, delete).

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/node/processor"
)

// Errors a Sessions backend returns that the API maps to status codes.
var (
	// ErrSessionNotFound: no such session, or it expired or was deleted (404).
	ErrSessionNotFound = errors.New("api: no such session (never created, expired or deleted)")
	// ErrBadSession: a session request the caller got wrong, e.g. a TTL out
	// of range (400).
	ErrBadSession = fmt.Errorf("%w: bad session request", processor.ErrInvalid)
)

// SessionInfo is a KATO 3 session's record.
type SessionInfo struct {
	ID       string
	Model    string
	Created  time.Time
	Expires  time.Time
	TTL      time.Duration
	Metadata json.RawMessage // a JSON object
	Config   processor.Config
}

// SessionCreate is a POST /sessions request.
type SessionCreate struct {
	TTL      time.Duration   // 0: the node's default
	Config   json.RawMessage // KATO 3 config object, or nil
	Metadata json.RawMessage // JSON object, or nil
}

// Sessions serves KATO 3 sessions on the node that holds their model. The
// API forwards every call for a session id to that node (the model is part
// of the id), except Count and Exists, which any node answers from etcd.
type Sessions interface {
	Create(ctx context.Context, model string, req SessionCreate) (SessionInfo, error)
	// Info returns the record and extends the TTL.
	Info(ctx context.Context, sid string) (SessionInfo, error)
	Delete(ctx context.Context, sid string) error
	// Exists does not extend the TTL.
	Exists(ctx context.Context, sid string) (bool, error)
	// Count counts the sessions of every model.
	Count(ctx context.Context) (int64, error)
	// Extend gives the session a new TTL from now.
	Extend(ctx context.Context, sid string, ttl time.Duration) error
	// SetConfig applies a KATO 3 config object to the session.
	SetConfig(ctx context.Context, sid string, config json.RawMessage) error
	// Read runs fn on the session (extending its TTL).
	Read(ctx context.Context, sid string, fn func(*processor.Session)) error
	// Write runs fn on the session and returns once the model changes fn
	// returns and the session's new state are durable in etcd.
	Write(ctx context.Context, sid string, fn func(*processor.Session) (processor.Changes, error)) error
}

type sessionRecordBody struct {
	SessionID     string          `json:"session_id"`
	NodeID        string          `json:"node_id"`
	CreatedAt     string          `json:"created_at"`
	ExpiresAt     string          `json:"expires_at"`
	TTLSeconds    int64           `json:"ttl_seconds"`
	Metadata      json.RawMessage `json:"metadata"`
	SessionConfig json.RawMessage `json:"session_config"`
}

func recordBody(in SessionInfo) sessionRecordBody {
	meta := in.Metadata
	if meta == nil {
		meta = json.RawMessage("{}")
	}
	return sessionRecordBody{SessionID: in.ID, NodeID: in.Model, CreatedAt: in.Created.UTC().Format(time.RFC3339Nano),
		ExpiresAt: in.Expires.UTC().Format(time.RFC3339Nano), TTLSeconds: int64(in.TTL / time.Second),
		Metadata: meta, SessionConfig: processor.SessionConfigJSON(in.Config)}
}

// sessions serves /sessions and /sessions/...; it returns the route name.
func (h *handler) sessions(w http.ResponseWriter, r *http.Request) string {
	r.Body = http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes)
	ss := h.opts.Sessions
	if ss == nil {
		return h.notFound(w, r)
	}
	rest := strings.TrimPrefix(strings.TrimPrefix(r.URL.Path, "/sessions"), "/")
	switch {
	case rest == "" && r.Method == http.MethodPost:
		return h.createSession(w, r, ss)
	case rest == "count" && r.Method == http.MethodGet:
		n, err := ss.Count(r.Context())
		if err != nil {
			h.failSession(w, err)
		} else {
			writeJSON(w, http.StatusOK, map[string]int64{"active_session_count": n})
		}
		return "session_count"
	}
	sid, op, _ := strings.Cut(rest, "/")
	model, ok := coord.SessionModel(sid)
	if !ok {
		h.fail(w, http.StatusNotFound, "SESSION_NOT_FOUND", fmt.Sprintf("%q is not a session id", sid))
		return "session_not_found"
	}
	if op == "exists" && r.Method == http.MethodGet {
		ok, err := ss.Exists(r.Context(), sid)
		if err != nil {
			h.failSession(w, err)
		} else {
			writeJSON(w, http.StatusOK, map[string]any{"exists": ok, "expired": !ok, "session_id": sid})
		}
		return "session_exists"
	}
	fn, name := h.sessionOp(ss, r.Method, op, sid)
	if fn == nil {
		return h.notFound(w, r)
	}
	return h.local(w, r, name, model, fn)
}

func (h *handler) failSession(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, ErrSessionNotFound):
		h.fail(w, http.StatusNotFound, "SESSION_NOT_FOUND", err.Error())
	case errors.Is(err, ErrBadSession):
		h.fail(w, http.StatusBadRequest, "BAD_SESSION_REQUEST", err.Error())
	default:
		h.failErr(w, err)
	}
}

func (h *handler) createSession(w http.ResponseWriter, r *http.Request, ss Sessions) string {
	var req struct {
		NodeID     *string         `json:"node_id"`
		TTLSeconds *json.Number    `json:"ttl_seconds"`
		Config     json.RawMessage `json:"config"`
		Metadata   json.RawMessage `json:"metadata"`
	}
	body, ok := h.decodeBody(w, r, &req, bodyShape{code: "BAD_JSON", usage: "body must be {node_id, ttl_seconds?, config?, metadata?}"})
	if !ok {
		return "session_create"
	}
	r.Body = io.NopCloser(bytes.NewReader(body)) // for forwarding
	if req.NodeID == nil || *req.NodeID == "" {
		h.fail(w, http.StatusBadRequest, "BAD_SESSION_REQUEST", "node_id (the model name) is required")
		return "session_create"
	}
	var create SessionCreate
	if req.TTLSeconds != nil {
		n, err := req.TTLSeconds.Int64()
		if err != nil || n <= 0 {
			h.fail(w, http.StatusBadRequest, "BAD_SESSION_REQUEST", fmt.Sprintf("ttl_seconds must be a positive integer, not %s", *req.TTLSeconds))
			return "session_create"
		}
		create.TTL = time.Duration(n) * time.Second
	}
	if len(req.Metadata) > 0 && string(req.Metadata) != "null" {
		if req.Metadata[0] != '{' {
			h.fail(w, http.StatusBadRequest, "BAD_SESSION_REQUEST", "metadata must be an object")
			return "session_create"
		}
		create.Metadata = req.Metadata
	}
	if string(req.Config) != "null" {
		create.Config = req.Config
	}
	model := *req.NodeID
	return h.local(w, r, "session_create", model, func(w http.ResponseWriter, r *http.Request) {
		info, err := ss.Create(r.Context(), model, create)
		if err != nil {
			h.failSession(w, err)
			return
		}
		writeJSON(w, http.StatusOK, recordBody(info))
	})
}

type sessionObserveBody struct {
	Status             string  `json:"status"`
	SessionID          string  `json:"session_id"`
	ProcessorID        string  `json:"processor_id"`
	STMLength          int     `json:"stm_length"`
	Time               int64   `json:"time"`
	UniqueID           string  `json:"unique_id"`
	AutoLearnedPattern *string `json:"auto_learned_pattern"`
}

// sessionOp returns the handler of a route below /sessions/{sid}/ served by
// the holder of the session's model, and its route name.
func (h *handler) sessionOp(ss Sessions, method, op, sid string) (http.HandlerFunc, string) {
	ok := func(w http.ResponseWriter, body any) { writeJSON(w, http.StatusOK, body) }
	read := func(w http.ResponseWriter, r *http.Request, fn func(*processor.Session)) {
		if err := ss.Read(r.Context(), sid, fn); err != nil {
			h.failSession(w, err)
		}
	}
	// answer serves a read route: the body answer gives for the session.
	answer := func(body func(*processor.Session) any) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			read(w, r, func(s *processor.Session) { ok(w, body(s)) })
		}
	}
	write := func(w http.ResponseWriter, r *http.Request, fn func(*processor.Session) (processor.Changes, error), answer func()) {
		if err := ss.Write(r.Context(), sid, fn); err != nil {
			h.failSession(w, err)
			return
		}
		answer()
	}
	type key struct{ method, op string }
	switch (key{method, op}) {
	case key{http.MethodGet, ""}:
		return func(w http.ResponseWriter, r *http.Request) {
			info, err := ss.Info(r.Context(), sid)
			if err != nil {
				h.failSession(w, err)
				return
			}
			ok(w, recordBody(info))
		}, "session_get"
	case key{http.MethodDelete, ""}:
		return func(w http.ResponseWriter, r *http.Request) {
			if err := ss.Delete(r.Context(), sid); err != nil {
				h.failSession(w, err)
				return
			}
			ok(w, map[string]string{"status": "deleted", "session_id": sid})
		}, "session_delete"
	case key{http.MethodPost, "extend"}:
		return func(w http.ResponseWriter, r *http.Request) {
			n, err := strconv.ParseInt(r.URL.Query().Get("ttl_seconds"), 10, 64)
			if err != nil || n <= 0 {
				h.fail(w, http.StatusBadRequest, "BAD_SESSION_REQUEST", "ttl_seconds must be a positive integer query parameter")
				return
			}
			if err := ss.Extend(r.Context(), sid, time.Duration(n)*time.Second); err != nil {
				h.failSession(w, err)
				return
			}
			ok(w, map[string]any{"status": "extended", "session_id": sid, "ttl_seconds": n})
		}, "session_extend"
	case key{http.MethodGet, "config"}:
		return answer(func(s *processor.Session) any {
			return map[string]any{"session_id": sid, "config": json.RawMessage(processor.SessionConfigJSON(s.Config()))}
		}), "session_config"
	case key{http.MethodPost, "config"}:
		return func(w http.ResponseWriter, r *http.Request) {
			var req struct {
				Config json.RawMessage `json:"config"`
			}
			shape := bodyShape{code: "BAD_JSON", usage: `body must be {"config": {...}}`}
			if _, ok := h.decodeBody(w, r, &req, shape); !ok {
				return
			}
			if len(req.Config) == 0 {
				h.fail(w, http.StatusBadRequest, shape.code, shape.usage)
				return
			}
			if err := ss.SetConfig(r.Context(), sid, req.Config); err != nil {
				h.failSession(w, err)
				return
			}
			ok(w, map[string]string{"status": "okay", "message": "session config updated", "session_id": sid})
		}, "session_config"
	case key{http.MethodPost, "observe"}:
		return func(w http.ResponseWriter, r *http.Request) {
			body, err := readBody(r)
			if err != nil {
				h.failErr(w, err)
				return
			}
			start := time.Now()
			var out sessionObserveBody
			write(w, r, func(s *processor.Session) (processor.Changes, error) {
				res, ch, err := s.ObserveJSON(body)
				out = h.observed(s, sid, res)
				return ch, err
			}, func() { ok(w, out) })
			h.b.Metrics().Observe.Observe(time.Since(start).Seconds())
		}, "session_observe"
	case key{http.MethodPost, "observe-sequence"}:
		return h.observeSequence(ss, sid), "session_observe_sequence"
	case key{http.MethodGet, "stm"}:
		return answer(func(s *processor.Session) any {
			stm := s.STM()
			return map[string]any{"stm": stm, "session_id": sid, "length": len(stm)}
		}), "session_stm"
	case key{http.MethodPost, "learn"}:
		return func(w http.ResponseWriter, r *http.Request) {
			var name string
			write(w, r, func(s *processor.Session) (processor.Changes, error) {
				if len(s.STM()) == 0 {
					return nil, fmt.Errorf("%w: the session's STM is empty; observe first", ErrBadSession)
				}
				var ch processor.Changes
				var err error
				name, ch, err = s.Learn()
				return ch, err
			}, func() { ok(w, map[string]string{"status": "learned", "pattern_name": name, "session_id": sid}) })
		}, "session_learn"
	case key{http.MethodGet, "predictions"}:
		return answer(func(s *processor.Session) any {
			p := s.Predictions()
			return map[string]any{"predictions": p, "session_id": sid, "count": len(p)}
		}), "session_predictions"
	case key{http.MethodPost, "clear-stm"}:
		return func(w http.ResponseWriter, r *http.Request) {
			write(w, r, func(s *processor.Session) (processor.Changes, error) { s.ClearSTM(); return nil, nil },
				func() { ok(w, map[string]string{"status": "cleared", "session_id": sid}) })
		}, "session_clear_stm"
	case key{http.MethodPost, "clear-all"}:
		return func(w http.ResponseWriter, r *http.Request) {
			write(w, r, func(s *processor.Session) (processor.Changes, error) { s.ClearAll(); return nil, nil },
				func() { ok(w, map[string]string{"status": "cleared", "session_id": sid, "scope": "all"}) })
		}, "session_clear_all"
	case key{http.MethodGet, "percept-data"}:
		return answer(func(s *processor.Session) any { return messageBody{s.PerceptData()} }), "session_percept_data"
	case key{http.MethodGet, "cognition-data"}:
		return answer(func(s *processor.Session) any { return messageBody{s.CognitionData()} }), "session_cognition_data"
	}
	return nil, ""
}

// observed is the answer to one observe of a session.
func (h *handler) observed(s *processor.Session, sid string, res processor.ObserveResult) sessionObserveBody {
	out := sessionObserveBody{Status: "okay", SessionID: sid, ProcessorID: h.b.ID(), STMLength: len(s.STM()),
		Time: s.Time(), UniqueID: res.UniqueID}
	if out.UniqueID == "" {
		out.UniqueID = "rest-" + strconv.FormatInt(time.Now().UnixMicro(), 10)
	}
	if res.AutoLearnedModel != "" {
		name := res.AutoLearnedModel
		out.AutoLearnedPattern = &name
	}
	return out
}

// observeSequence observes a list of observations in one call; the whole
// sequence is one write (the session's state is stored once, at the end).
func (h *handler) observeSequence(ss Sessions, sid string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Observations    []json.RawMessage `json:"observations"`
			LearnAfterEach  bool              `json:"learn_after_each"`
			LearnAtEnd      bool              `json:"learn_at_end"`
			ClearSTMBetween bool              `json:"clear_stm_between"`
		}
		shape := bodyShape{code: "BAD_JSON", usage: "body must be {observations: [...], learn_after_each?, learn_at_end?, clear_stm_between?}"}
		if _, ok := h.decodeBody(w, r, &req, shape); !ok {
			return
		}
		if req.Observations == nil {
			h.fail(w, http.StatusBadRequest, shape.code, shape.usage)
			return
		}
		var results []sessionObserveBody
		var learned []string
		err := ss.Write(r.Context(), sid, func(s *processor.Session) (processor.Changes, error) {
			var all processor.Changes
			for i, o := range req.Observations {
				if req.ClearSTMBetween && i > 0 {
					s.ClearSTM()
				}
				res, ch, err := s.ObserveJSON(o)
				all = append(all, ch...)
				if err != nil {
					return all, fmt.Errorf("observation %d: %w", i, err)
				}
				results = append(results, h.observed(s, sid, res))
				if res.AutoLearnedModel != "" {
					learned = append(learned, res.AutoLearnedModel)
				}
				if req.LearnAfterEach {
					name, ch, err := s.Learn()
					all = append(all, ch...)
					if err != nil {
						return all, fmt.Errorf("learn after observation %d: %w", i, err)
					}
					if name != "" {
						learned = append(learned, name)
					}
				}
			}
			if req.LearnAtEnd {
				name, ch, err := s.Learn()
				all = append(all, ch...)
				if err != nil {
					return all, fmt.Errorf("learn at the end: %w", err)
				}
				if name != "" {
					learned = append(learned, name)
				}
			}
			return all, nil
		})
		if err != nil {
			h.failSession(w, err)
			return
		}
		if learned == nil {
			learned = []string{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "okay", "session_id": sid, "observations_processed": len(results),
			"results": results, "auto_learned_patterns": learned})
	}
}
