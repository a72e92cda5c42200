package console

// This file is the console's HTTP side: the embedded page, its JSON API, the
// Server-Sent Events stream, and the admin actions.

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/kato-coord/kato/coord"
)

//go:embed assets
var assets embed.FS

// Paths below /ui/.
const (
	// APIPrefix is where the data and action routes live; the node's API
	// handler asks for the token there (and not for the page itself, which
	// asks the user for it).
	APIPrefix = "/ui/api/"
	// keepAlive is how often an idle stream gets a comment line, so that
	// proxies and the page can tell a live stream from a dead one.
	keepAlive = 15 * time.Second
	// maxActionBody bounds an action's JSON body.
	maxActionBody = 128 << 10
	// actionTimeout bounds the etcd work of one action.
	actionTimeout = 10 * time.Second
)

// csp allows the page its own script and style only: nothing inline, nothing
// from elsewhere.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// ServeHTTP serves the page (/ui/, /ui/app.js, /ui/app.css), the event
// stream (GET /ui/api/events) and the actions (POST /ui/api/...). The caller
// checks the API token for APIPrefix.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if rest, ok := strings.CutPrefix(path, APIPrefix); ok {
		c.serveAPI(w, r, rest)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", csp)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		fail(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "the console's pages are read with GET")
		return
	}
	name := ""
	switch path {
	case "/ui":
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
		return
	case "/ui/":
		name = "index.html"
	case "/ui/app.js", "/ui/app.css":
		name = strings.TrimPrefix(path, "/ui/")
	default:
		fail(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no console page %s", path))
		return
	}
	sub, _ := fs.Sub(assets, "assets")
	http.ServeFileFS(w, r, sub, name)
}

func (c *Console) serveAPI(w http.ResponseWriter, r *http.Request, rest string) {
	w.Header().Set("Cache-Control", "no-store")
	if rest == "events" {
		if r.Method != http.MethodGet {
			fail(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "the event stream is read with GET")
			return
		}
		c.events(w, r)
		return
	}
	act, ok := actions[rest]
	if !ok {
		fail(w, http.StatusNotFound, "NOT_FOUND", fmt.Sprintf("no console route %s", r.URL.Path))
		return
	}
	if r.Method != http.MethodPost {
		fail(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "actions are sent with POST")
		return
	}
	if ct, _, _ := strings.Cut(r.Header.Get("Content-Type"), ";"); strings.TrimSpace(ct) != "application/json" {
		fail(w, http.StatusUnsupportedMediaType, "BAD_CONTENT_TYPE", "actions take a JSON body (Content-Type: application/json)")
		return
	}
	var req actionRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxActionBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		fail(w, http.StatusBadRequest, "BAD_REQUEST", fmt.Sprintf("the action's body does not decode: %v", err))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), actionTimeout)
	defer cancel()
	msg, err := act(c, ctx, req)
	if err != nil {
		code, ecode := http.StatusBadRequest, "ACTION_FAILED"
		switch {
		case errors.Is(err, coord.ErrNotLocked), errors.Is(err, errNoInstance):
			code, ecode = http.StatusNotFound, "NOT_FOUND"
		case errors.Is(err, coord.ErrInboxInUse):
			code, ecode = http.StatusConflict, "INBOX_IN_USE"
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
			code, ecode = http.StatusServiceUnavailable, "TIMEOUT"
		}
		c.lg.Info("console action failed", zap.String("action", rest), zap.Error(err))
		fail(w, code, ecode, err.Error())
		return
	}
	c.lg.Info("console action", zap.String("action", rest), zap.String("result", msg))
	c.poke()
	writeJSON(w, http.StatusOK, map[string]string{"status": "okay", "message": msg})
}

// events streams the sections as Server-Sent Events: each section when it
// changes, the whole state first.
func (c *Console) events(w http.ResponseWriter, r *http.Request) {
	rc := http.NewResponseController(w)
	// A stream is long by design: no write deadline (errors: the server sets none).
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	if c.viewers.Add(1) == 1 {
		c.poke() // the first viewer: read what the watches do not give, now
	}
	defer c.viewers.Add(-1)
	fmt.Fprintf(w, "retry: 2000\n\n")
	sent := map[string]uint64{}
	ping := time.NewTicker(keepAlive)
	defer ping.Stop()
	for {
		evs, changed := c.b.since(sent)
		for _, ev := range evs {
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", ev.name, ev.msg)
		}
		if err := rc.Flush(); err != nil {
			return
		}
		select {
		case <-changed:
		case <-ping.C:
			if _, err := io.WriteString(w, ": ping\n\n"); err != nil {
				return
			}
		case <-r.Context().Done():
			return
		case <-c.closed:
			return
		}
	}
}

// actionRequest is the body of every action; each uses the fields it needs.
type actionRequest struct {
	ID    string `json:"id,omitempty"`    // stop, inbox/remove
	Model string `json:"model,omitempty"` // break
	To    string `json:"to,omitempty"`    // send
	Kind  string `json:"kind,omitempty"`
	Body  string `json:"body,omitempty"`
	TTL   string `json:"ttl,omitempty"` // a Go duration, default coord.DefaultMessageTTL
}

var errNoInstance = errors.New("console: no such instance")

// actions are the same operations as the katoctl commands named beside them.
var actions = map[string]func(c *Console, ctx context.Context, req actionRequest) (string, error){
	// katoctl stop ID: a control message; the node drains and leaves.
	"stop": func(c *Console, ctx context.Context, req actionRequest) (string, error) {
		if err := coord.CheckID(req.ID); err != nil {
			return "", err
		}
		found := false
		for _, in := range c.cfg.Directory.Instances() {
			found = found || in.ID == req.ID
		}
		if !found {
			return "", fmt.Errorf("%w: %s is not registered", errNoInstance, req.ID)
		}
		if _, err := c.cfg.Send(ctx, req.ID, coord.Message{Kind: coord.KindControl, Body: coord.ControlStop}, time.Minute); err != nil {
			return "", fmt.Errorf("stop %s: %w", req.ID, err)
		}
		return fmt.Sprintf("asked %s to stop: it drains, releases its lock and leaves the registry", req.ID), nil
	},
	// katoctl locks break MODEL.
	"break": func(c *Console, ctx context.Context, req actionRequest) (string, error) {
		st, err := coord.BreakLock(ctx, c.cfg.Client.KV, req.Model)
		if err != nil {
			return "", err
		}
		next := "nobody waits: the model is free"
		if len(st.Waiters) > 0 {
			next = entryName(st.Waiters[0]) + " takes the lock next"
		}
		return fmt.Sprintf("broke the lock of model %s: removed the key of %s (fence %d); its fenced writes now fail; %s",
			req.Model, entryName(st.Holder), st.Holder.Rev, next), nil
	},
	// katoctl msg send --to ID.
	"send": func(c *Console, ctx context.Context, req actionRequest) (string, error) {
		ttl := coord.DefaultMessageTTL
		if req.TTL != "" {
			d, err := time.ParseDuration(req.TTL)
			if err != nil {
				return "", fmt.Errorf("message TTL %q: use a duration such as 10m or 1h", req.TTL)
			}
			ttl = d
		}
		sent, err := c.cfg.Send(ctx, req.To, coord.Message{Kind: req.Kind, Body: req.Body}, ttl)
		if err != nil {
			return "", err
		}
		s := fmt.Sprintf("sent message %s to %s; it waits until read or until %s", sent.ID, sent.To, sent.ExpiresAt.UTC().Format(time.RFC3339))
		if !sent.Registered {
			s += fmt.Sprintf(" (no instance %s is registered now)", sent.To)
		}
		return s, nil
	},
	// katoctl msg rm ID.
	"inbox/remove": func(c *Console, ctx context.Context, req actionRequest) (string, error) {
		n, err := coord.RemoveInbox(ctx, c.cfg.Client.KV, req.ID)
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("removed %d messages waiting for %s", n, req.ID), nil
	},
}

func entryName(e coord.LockEntry) string {
	switch {
	case e.ID != "" && e.Host != "":
		return e.ID + " on " + e.Host
	case e.ID != "":
		return e.ID
	}
	return "lease " + e.Lease
}

type errorBody struct {
	Status    string `json:"status"`
	Message   string `json:"message"`
	ErrorCode string `json:"error_code"`
}

func fail(w http.ResponseWriter, code int, errCode, msg string) {
	writeJSON(w, code, errorBody{Status: "error", Message: msg, ErrorCode: errCode})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	w.Write(append(b, '\n'))
}
