package api

// This file forwards a request to the node that holds its model: the one
// forward, the resend to a new holder when the first fails, and when a
// request may be sent again.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"go.uber.org/zap"
)

type forwardKey struct{}

// forwardAttempt is one forward of a request: where to, and why it failed.
type forwardAttempt struct {
	target      *url.URL
	holdBack503 bool // a 503 answer is not passed on (see resend)
	err         error
}

// forward sends r (with body) to the holder of route. When the holder does
// not answer within ForwardTimeout, or the forward fails before any answer,
// it waits (up to ForwardTimeout) for another node to hold the model and
// sends the request once more, there or here. A new holder takes the lock
// before it is ready (it catches up with the model first) and answers 503
// meanwhile: a read sent again is sent until it answers otherwise, within
// ForwardTimeout of the resend, and only the last 503 is passed on.
func (h *handler) forward(w http.ResponseWriter, r *http.Request, id string, route Route, body []byte, fn func(http.ResponseWriter, *http.Request)) {
	m := h.b.Metrics()
	err := h.send(w, r, route, body, fn, false)
	switch {
	case err == nil:
		return
	case errors.Is(err, errNoAddress):
		h.fail(w, http.StatusServiceUnavailable, "NO_HOLDER", fmt.Sprintf("model %q: %v", id, err))
		return
	}
	if r.Context().Err() == nil && !resendable(r.Method, err) {
		// The holder may have applied it before it stopped answering: a
		// second send could apply it twice. The client reads and decides.
		m.Forwarded.WithLabelValues("error").Inc()
		w.Header().Set("Retry-After", strconv.Itoa(h.opts.RetryAfter))
		h.fail(w, http.StatusServiceUnavailable, "OUTCOME_UNKNOWN",
			fmt.Sprintf("the node holding model %q did not answer (%v); the request may have been applied: read before you send it again", id, err))
		return
	}
	if r.Context().Err() == nil {
		if next, ok := h.newHolder(r.Context(), id, route.ID); ok {
			m.Forwarded.WithLabelValues("retried").Inc()
			h.lg.Info("forward failed; sending to the new holder", zap.String("model", id), zap.String("holder", next.ID), zap.Error(err))
			err = h.resend(w, r, id, next, body, fn)
			if err == nil {
				return
			}
		}
	}
	m.Forwarded.WithLabelValues("error").Inc()
	w.Header().Set("Retry-After", strconv.Itoa(h.opts.RetryAfter))
	h.fail(w, http.StatusServiceUnavailable, "HOLDER_UNREACHABLE",
		fmt.Sprintf("the node holding model %q did not answer: %v", id, err))
}

// resend sends r to the new holder route. A read answered 503 (the holder
// is not ready yet) is sent again every resendPause, to the model's holder
// then, until ForwardTimeout has passed; the last send passes any answer on.
func (h *handler) resend(w http.ResponseWriter, r *http.Request, id string, route Route, body []byte, fn func(http.ResponseWriter, *http.Request)) error {
	read := isRead(r.Method)
	deadline := time.Now().Add(h.opts.ForwardTimeout)
	pause := time.NewTimer(0)
	defer pause.Stop()
	for {
		err := h.send(w, r, route, body, fn, read && time.Now().Add(resendPause).Before(deadline))
		if !errors.Is(err, errNotReady) {
			return err
		}
		pause.Reset(resendPause)
		select {
		case <-r.Context().Done():
			return r.Context().Err()
		case <-pause.C:
		}
		if rt, err := h.b.Route(id); err == nil {
			route = rt
		}
	}
}

// resendPause is the pause between sends of a read to a holder that is not
// ready yet.
const resendPause = 100 * time.Millisecond

// errNotReady: the holder answered 503 to a send that asked for it to be
// held back (nothing was written to the client).
var errNotReady = errors.New("api: the holder answered 503")

// errNoAddress: the holder registered no API address this node can use.
var errNoAddress = errors.New("api: the holder has no usable API address")

// send serves r here (route.Local) or forwards it to route's holder and
// returns why the forward failed before anything was written to w.
// holdBack503 holds a 503 answer back (errNotReady) instead of passing it on.
func (h *handler) send(w http.ResponseWriter, r *http.Request, route Route, body []byte, fn func(http.ResponseWriter, *http.Request), holdBack503 bool) error {
	r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	if route.Local {
		w.Header().Set(ServedByHeader, h.b.ID())
		fn(w, r)
		return nil
	}
	target, err := url.Parse(route.Forward)
	if err != nil || route.Forward == "" {
		return fmt.Errorf("%w: holder %s, address %q", errNoAddress, route.ID, route.Forward)
	}
	h.b.Metrics().Forwarded.WithLabelValues("forwarded").Inc()
	at := &forwardAttempt{target: target, holdBack503: holdBack503}
	h.proxy.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), forwardKey{}, at)))
	return at.err
}

// resendable reports whether a request whose forward failed with err may be
// sent again: one that changes nothing, or one that never left this node
// (the connection to the holder could not be made).
func resendable(method string, err error) bool {
	if isRead(method) {
		return true
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// isRead reports whether a request of method changes nothing.
func isRead(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return true
	}
	return false
}

// newHolder waits up to ForwardTimeout for the model to be held by another
// node than old (or by this one).
func (h *handler) newHolder(ctx context.Context, id, old string) (Route, bool) {
	ctx, cancel := context.WithTimeout(ctx, h.opts.ForwardTimeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if rt, err := h.b.Route(id); err == nil && (rt.Local || rt.ID != old) {
			return rt, true
		}
		select {
		case <-ctx.Done():
			return Route{}, false
		case <-tick.C:
		}
	}
}
