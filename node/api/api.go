// Package api is the HTTP side of a node: the KATO-compatible routes of
// PROCESSOR.md §8 with the D6 error model, forwarding to the node that holds
// a model, health and readiness, Prometheus metrics and service discovery,
// and message routes for clients that are not Go. It is an http.Handler only;
// the node supplies a Backend.
package api

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
	"github.com/kato-coord/kato/metrics"
	"github.com/kato-coord/kato/node/processor"
)

// Errors a Backend returns that the API maps to status codes.
var (
	// ErrUnknownProcessor: the {id} of a path is neither a registered instance
	// nor a model anyone serves (404 PROCESSOR_NOT_FOUND).
	ErrUnknownProcessor = errors.New("api: unknown processor")
	// ErrNoHolder: nobody holds the model's lock right now (503 + Retry-After).
	ErrNoHolder = errors.New("api: no node holds this model now")
	// ErrUnavailable: this node cannot serve the model right now (503).
	ErrUnavailable = errors.New("api: not available")
	// ErrOutcomeUnknown: a change was sent to etcd but whether it was stored
	// is not known (503 OUTCOME_UNKNOWN).
	ErrOutcomeUnknown = errors.New("api: outcome unknown")
)

// ForwardedHeader marks a request forwarded by another node; a node never
// forwards such a request again.
const ForwardedHeader = "X-Kato-Forwarded-By"

// ServedByHeader names the instance that served a processor route.
const ServedByHeader = "X-Kato-Served-By"

// Route says where a request for a model is served.
type Route struct {
	Local   bool   // this node holds the model
	Forward string // base URL of the holder's API, when not local
	ID      string // the instance id that serves (for "id" in /status)
}

// Backend is what the API needs from its node.
type Backend interface {
	// ID is this instance's id.
	ID() string
	// Ready reports whether the node is registered and holds its model lock.
	Ready() bool
	// Loading describes model loads in progress ("" when none runs), for
	// the body of /readyz.
	Loading() string
	// MailboxState is the state of the node's mailbox receiver, for /readyz.
	MailboxState() string
	// Route resolves the {id} of a path (an instance id or a model name).
	Route(name string) (Route, error)
	// Read gives the processor for a call that stores nothing; done must be
	// called after. ErrUnavailable (wrapped) when not serving.
	Read() (p *processor.Processor, done func(), err error)
	// Write runs fn and returns after its changes are durable.
	Write(ctx context.Context, fn func(*processor.Processor) (processor.Changes, error)) error
	// GenesChanged records the processor's current genes (D2).
	GenesChanged(ctx context.Context)
	// Send and Pending are the mailbox.
	Send(ctx context.Context, to string, msg coord.Message, ttl time.Duration) (coord.Sent, error)
	Pending(ctx context.Context, id string) ([]coord.Message, error)
	// History returns the messages instance id received lately.
	History(ctx context.Context, id string) ([]coord.ReceivedMessage, error)
	// MessageTarget resolves the {id} of /{id}/messages: an instance id
	// stays, a model name becomes the instance that holds it (ErrNoHolder
	// when none does), another name stays (its messages wait for it).
	MessageTarget(name string) (string, error)
	// SD returns the Prometheus HTTP service-discovery groups of every live instance.
	SD() []SDGroup
	// Metrics are the node's collectors; MetricsHandler serves them.
	Metrics() *metrics.Metrics
	MetricsHandler() http.Handler
}

// SDGroup is one target group of Prometheus HTTP service discovery.
type SDGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// Options configure the handler.
type Options struct {
	// Token, when set, is required as a bearer token on every route but
	// /healthz, /readyz and /metrics.
	Token string
	// MaxBodyBytes bounds request bodies.
	MaxBodyBytes int64
	// RetryAfter is the Retry-After of 503 answers (seconds, default 1).
	RetryAfter int
	// ForwardTimeout bounds the wait for the headers of a forwarded
	// request's answer (default 10 s; the node uses its TTL, after which a
	// holder that does not answer has lost its lock). A forward that times
	// out or fails is sent once more to the model's new holder, if one takes
	// over within another ForwardTimeout.
	ForwardTimeout time.Duration
	// ForwardTLS, when set, is used to reach holders over HTTPS.
	ForwardTLS *tls.Config
	Logger     *zap.Logger
	// Console, when set, serves the web console below /ui/: the page without
	// the token (it asks the user for it), /ui/api/ behind it.
	Console http.Handler
	// Sessions, when set, serves KATO 3 sessions below /sessions (a model
	// named "sessions" is then reached by its instance id only).
	Sessions Sessions
}

type handler struct {
	b     Backend
	opts  Options
	lg    *zap.Logger
	proxy *httputil.ReverseProxy
}

// New returns the node's HTTP handler.
func New(b Backend, opts Options) http.Handler {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = 4 << 20
	}
	if opts.RetryAfter <= 0 {
		opts.RetryAfter = 1
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.ForwardTimeout <= 0 {
		opts.ForwardTimeout = 10 * time.Second
	}
	h := &handler{b: b, opts: opts, lg: opts.Logger.Named("api")}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.ResponseHeaderTimeout = opts.ForwardTimeout
	tr.TLSClientConfig = opts.ForwardTLS
	h.proxy = &httputil.ReverseProxy{
		Transport: tr,
		Rewrite: func(r *httputil.ProxyRequest) {
			target := r.In.Context().Value(forwardKey{}).(*forwardAttempt).target
			r.SetURL(target)
			r.Out.URL.Path, r.Out.URL.RawPath = r.In.URL.Path, r.In.URL.RawPath
			r.Out.Header.Set(ForwardedHeader, b.ID())
			r.SetXForwarded()
		},
		ModifyResponse: func(resp *http.Response) error {
			if resp.StatusCode == http.StatusServiceUnavailable && resp.Request.Context().Value(forwardKey{}).(*forwardAttempt).holdBack503 {
				return errNotReady
			}
			return nil
		},
		// Called only before anything was written: forward decides.
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			r.Context().Value(forwardKey{}).(*forwardAttempt).err = err
		},
	}
	return h
}

// statusWriter remembers the status code for the request counter.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 && code >= 200 { // 1xx (100 Continue through a proxy) are not the answer
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Unwrap lets http.ResponseController reach the connection (flushes of the
// console's event stream).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	sw := &statusWriter{ResponseWriter: w}
	route := h.serve(sw, r)
	code := sw.code
	if code == 0 {
		code = http.StatusOK
	}
	h.b.Metrics().HTTPRequests.WithLabelValues(route, strconv.Itoa(code)).Inc()
}

// serve dispatches and returns the route name for metrics (bounded set).
func (h *handler) serve(w http.ResponseWriter, r *http.Request) string {
	path := r.URL.Path
	switch path {
	case "/healthz":
		writeJSON(w, http.StatusOK, map[string]string{"status": "okay"})
		return "healthz"
	case "/readyz":
		mb := h.b.MailboxState()
		if h.b.Ready() {
			writeJSON(w, http.StatusOK, readyBody{Status: "ready", Mailbox: mb})
		} else {
			w.Header().Set("Retry-After", strconv.Itoa(h.opts.RetryAfter))
			msg := "not registered or not holding the model lock"
			if l := h.b.Loading(); l != "" {
				msg += "; " + l
			}
			writeJSON(w, http.StatusServiceUnavailable, readyBody{Status: "error", ErrorCode: "NOT_READY",
				Message: msg, Mailbox: mb})
		}
		return "readyz"
	case "/metrics":
		h.b.MetricsHandler().ServeHTTP(w, r)
		return "metrics"
	}
	console := h.opts.Console != nil && (path == "/ui" || strings.HasPrefix(path, "/ui/"))
	if console && !strings.HasPrefix(path, "/ui/api/") {
		h.opts.Console.ServeHTTP(w, r)
		return "ui"
	}
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="kato"`)
		h.fail(w, http.StatusUnauthorized, "UNAUTHORIZED", "missing or wrong bearer token")
		return "unauthorized"
	}
	if path == "/sessions" || strings.HasPrefix(path, "/sessions/") {
		return h.sessions(w, r)
	}
	if r.Method != http.MethodGet && r.Method != http.MethodPost {
		h.fail(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "only GET and POST are served")
		return "other"
	}
	r.Body = http.MaxBytesReader(w, r.Body, h.opts.MaxBodyBytes)
	if console {
		h.opts.Console.ServeHTTP(w, r)
		return "ui_api"
	}
	switch path {
	case "/v1/sd":
		writeJSON(w, http.StatusOK, h.b.SD())
		return "sd"
	case "/kato-api/ping":
		if r.Method != http.MethodGet {
			return h.notFound(w, r)
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "okay"})
		return "kato_ping"
	case "/connect":
		if r.Method != http.MethodGet {
			return h.notFound(w, r)
		}
		return h.local(w, r, "connect", "", h.connect)
	}
	id, rest, ok := splitID(path)
	if !ok {
		return h.notFound(w, r)
	}
	// Messages are per instance and live in etcd: any node serves them.
	if rest == "messages" {
		return h.messages(w, r, id)
	}
	op, ok := routes[routeKey{r.Method, rest}]
	if !ok {
		op, ok = prefixRoute(r.Method, rest)
	}
	if !ok {
		return h.notFound(w, r)
	}
	return h.local(w, r, op.name, id, op.fn(h, id, rest))
}

func (h *handler) authorized(r *http.Request) bool {
	if h.opts.Token == "" {
		return true
	}
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	return ok && constantTimeEqual(tok, h.opts.Token)
}

func constantTimeEqual(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	var v byte
	for i := 0; i < len(a); i++ {
		v |= a[i] ^ b[i]
	}
	return v == 0
}

// splitID splits "/{id}/rest" (id may be URL-escaped).
func splitID(path string) (id, rest string, ok bool) {
	p := strings.TrimPrefix(path, "/")
	id, rest, ok = strings.Cut(p, "/")
	if !ok || id == "" || rest == "" {
		return "", "", false
	}
	if u, err := url.PathUnescape(id); err == nil {
		id = u
	}
	return id, rest, true
}

// local serves a processor route here, or forwards it to the node holding
// the model, or answers 404/503.
func (h *handler) local(w http.ResponseWriter, r *http.Request, name, id string, fn func(http.ResponseWriter, *http.Request)) string {
	if id == "" {
		id = h.b.ID()
	}
	route, err := h.b.Route(id)
	switch {
	case errors.Is(err, ErrUnknownProcessor):
		h.fail(w, http.StatusNotFound, "PROCESSOR_NOT_FOUND", fmt.Sprintf("no instance or model named %q", id))
		return name
	case errors.Is(err, ErrNoHolder):
		h.failNoHolder(w, id)
		return name
	case err != nil:
		h.fail(w, http.StatusServiceUnavailable, "UNAVAILABLE", err.Error())
		return name
	}
	if !route.Local {
		if r.Header.Get(ForwardedHeader) != "" {
			// Forwarded already: the sender's view was stale. One hop only.
			w.Header().Set("Retry-After", strconv.Itoa(h.opts.RetryAfter))
			h.fail(w, http.StatusServiceUnavailable, "NOT_HOLDER", fmt.Sprintf("this node does not hold model %q (forwarded by %s)", id, r.Header.Get(ForwardedHeader)))
			return name
		}
		// Read the body here: an oversized one is this node's 413, and a
		// forward that fails can be sent again.
		body, err := readBody(r)
		if err != nil {
			h.failErr(w, err)
			return name
		}
		h.forward(w, r, id, route, body, fn)
		return name
	}
	w.Header().Set(ServedByHeader, h.b.ID())
	fn(w, r)
	return name
}

// failNoHolder answers 503 with Retry-After: nobody holds the model now.
func (h *handler) failNoHolder(w http.ResponseWriter, model string) {
	w.Header().Set("Retry-After", strconv.Itoa(h.opts.RetryAfter))
	h.fail(w, http.StatusServiceUnavailable, "NO_HOLDER", fmt.Sprintf("no node holds model %q right now; retry", model))
}

func (h *handler) notFound(w http.ResponseWriter, r *http.Request) string {
	h.fail(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no route %s %s", r.Method, r.URL.Path))
	return "not_found"
}

// readyBody is the answer of /readyz: the D6 shape when not ready, and the
// state of the mailbox receiver either way.
type readyBody struct {
	Status    string `json:"status"`
	Message   string `json:"message,omitempty"`
	ErrorCode string `json:"error_code,omitempty"`
	Mailbox   string `json:"mailbox"`
}

// errorBody is the D6 error shape.
type errorBody struct {
	Status    string `json:"status"`
	Message   string `json:"message"`
	ErrorCode string `json:"error_code"`
}

func (h *handler) fail(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, errorBody{Status: "error", Message: msg, ErrorCode: errCode})
}

// failErr maps an error from the processor or the backend to D6.
func (h *handler) failErr(w http.ResponseWriter, err error) {
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		h.fail(w, http.StatusRequestEntityTooLarge, "BODY_TOO_LARGE", fmt.Sprintf("request body over %d bytes", mbe.Limit))
	case errors.Is(err, errBodyIncomplete):
		h.fail(w, http.StatusBadRequest, "BODY_INCOMPLETE", err.Error())
	case errors.Is(err, processor.ErrInvalid):
		h.fail(w, http.StatusBadRequest, processor.ErrorCode(err), err.Error())
	case errors.Is(err, processor.ErrNotFound):
		h.fail(w, http.StatusNotFound, processor.ErrorCode(err), err.Error())
	case errors.Is(err, processor.ErrTooLarge):
		h.fail(w, http.StatusRequestEntityTooLarge, processor.ErrorCode(err), err.Error())
	case errors.Is(err, ErrOutcomeUnknown):
		w.Header().Set("Retry-After", strconv.Itoa(h.opts.RetryAfter))
		h.fail(w, http.StatusServiceUnavailable, "OUTCOME_UNKNOWN", err.Error())
	case errors.Is(err, ErrUnavailable):
		w.Header().Set("Retry-After", strconv.Itoa(h.opts.RetryAfter))
		h.fail(w, http.StatusServiceUnavailable, "UNAVAILABLE", err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		h.fail(w, http.StatusServiceUnavailable, "TIMEOUT", err.Error())
	default:
		h.lg.Error("request failed", zap.Error(err))
		h.fail(w, http.StatusInternalServerError, "INTERNAL", err.Error())
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		code = http.StatusInternalServerError
		b, _ = json.Marshal(errorBody{Status: "error", Message: "cannot encode the answer: " + err.Error(), ErrorCode: "INTERNAL"})
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}

// errBodyIncomplete: the client sent less than it announced, or the
// connection broke while the body was read (400, no stack).
var errBodyIncomplete = errors.New("api: request body cut short")

// readBody reads a request body within the size limit.
func readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(r.Body)
	var mbe *http.MaxBytesError
	if err != nil && !errors.As(err, &mbe) {
		return nil, fmt.Errorf("%w: %v", errBodyIncomplete, err)
	}
	return b, err
}

// bodyShape is what decodeBody tells a client whose body does not decode.
type bodyShape struct {
	code   string // error code of the 400
	usage  string // what the body must be; the decoder's error follows
	strict bool   // fields the value does not have are refused
}

// decodeBody reads r's body within the size limit and decodes it, one JSON
// value, into v. When it cannot, it answers (413, 400 BODY_INCOMPLETE, or
// 400 shape.code) and returns false. It returns the body read.
func (h *handler) decodeBody(w http.ResponseWriter, r *http.Request, v any, shape bodyShape) ([]byte, bool) {
	body, err := readBody(r)
	if err != nil {
		h.failErr(w, err)
		return nil, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if shape.strict {
		dec.DisallowUnknownFields()
	}
	err = dec.Decode(v)
	if err == nil {
		if _, terr := dec.Token(); terr != io.EOF {
			err = errors.New("data after the JSON value")
		}
	}
	if err != nil {
		h.fail(w, http.StatusBadRequest, shape.code, shape.usage+": "+err.Error())
		return nil, false
	}
	return body, true
}

func now() processor.PyFloat {
	return processor.PyFloat(float64(time.Now().UnixMicro()) / 1e6)
}
