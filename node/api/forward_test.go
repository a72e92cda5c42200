// Tests of forwarding: a read sent again to a new holder that is not ready yet.
package api_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kato-coord/kato/metrics"
	"github.com/kato-coord/kato/node/api"
)

// standbyBackend is a node that does not hold model m: Route names the
// holder the test sets; only what forwarding uses is implemented.
type standbyBackend struct {
	api.Backend
	m      *metrics.Metrics
	mu     sync.Mutex
	holder api.Route
}

func (b *standbyBackend) ID() string                { return "c" }
func (b *standbyBackend) Ready() bool               { return false }
func (b *standbyBackend) Metrics() *metrics.Metrics { return b.m }
func (b *standbyBackend) Route(string) (api.Route, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.holder, nil
}
func (b *standbyBackend) setHolder(r api.Route) {
	b.mu.Lock()
	b.holder = r
	b.mu.Unlock()
}

// holders starts a holder "a" that never answers (a stopped process) and
// a new holder "b" that answers 503 NO_HOLDER to its first notReady
// requests (it took the lock and is catching up) and 200 after; the
// standby's route moves to b once a has the request.
func holders(t *testing.T, notReady int64) (h http.Handler, b *standbyBackend, served *atomic.Int64) {
	t.Helper()
	stop := make(chan struct{})
	b = &standbyBackend{m: metrics.New(prometheus.NewRegistry())}
	var newHolder *httptest.Server
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.setHolder(api.Route{Forward: newHolder.URL, ID: "b"})
		select {
		case <-stop:
		case <-r.Context().Done():
		}
	}))
	served = &atomic.Int64{}
	newHolder = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1) <= notReady {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"status":"error","error_code":"NO_HOLDER","message":"no node holds model \"m\" right now; retry"}`)
			return
		}
		w.Header().Set(api.ServedByHeader, "b")
		io.WriteString(w, `{"status":"okay"}`)
	}))
	t.Cleanup(func() { close(stop); a.Close(); newHolder.Close() })
	b.setHolder(api.Route{Forward: a.URL, ID: "a"})
	return api.New(b, api.Options{ForwardTimeout: time.Second}), b, served
}

func get(h http.Handler, path string) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec
}

// A read whose holder stopped answering is sent to the new holder, which
// answers 503 until it is ready: the client gets the ready holder's answer,
// not the 503 (it got the 503 before, under load).
func TestReadResendWaitsForNewHolderReady(t *testing.T) {
	h, _, served := holders(t, 3)
	rec := get(h, "/m/working-memory")
	if rec.Code != http.StatusOK || rec.Header().Get(api.ServedByHeader) != "b" {
		t.Fatalf("read resent to a new holder not ready yet: %d %s (served by %q), want 200 from b", rec.Code, rec.Body, rec.Header().Get(api.ServedByHeader))
	}
	if n := served.Load(); n != 4 {
		t.Fatalf("the new holder got %d sends, want 4 (3 while not ready, then 1)", n)
	}
}

// A new holder that stays not ready past the forward timeout: the wait is
// bounded and its last 503 is passed on.
func TestReadResendToHolderNeverReadyIsBounded(t *testing.T) {
	h, _, served := holders(t, 1<<40)
	start := time.Now()
	rec := get(h, "/m/working-memory")
	took := time.Since(start)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "NO_HOLDER") {
		t.Fatalf("read resent to a holder never ready: %d %s, want its 503 NO_HOLDER", rec.Code, rec.Body)
	}
	// A bound for the test, not a speed goal: a timeout for a and up to
	// another for b, with room for a loaded machine.
	if took > 10*time.Second || served.Load() < 2 {
		t.Fatalf("read resent to a holder never ready: answered after %v and %d sends", took, served.Load())
	}
}

// A write is not sent again: the stopped holder may have applied it.
func TestWriteToStoppedHolderIsNotResent(t *testing.T) {
	h, _, served := holders(t, 0)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/m/observe", strings.NewReader(`{"strings":["x"],"vectors":[],"emotives":{}}`)))
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "OUTCOME_UNKNOWN") || served.Load() != 0 {
		t.Fatalf("write to a stopped holder: %d %s, %d sends to the new holder; want 503 OUTCOME_UNKNOWN and none", rec.Code, rec.Body, served.Load())
	}
}
