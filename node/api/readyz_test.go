package api_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/kato-coord/kato/metrics"
	"github.com/kato-coord/kato/node/api"
)

// loadingBackend is a node that is not ready while its model loads; only
// what /readyz uses is implemented.
type loadingBackend struct {
	api.Backend
	m       *metrics.Metrics
	loading string
}

func (b loadingBackend) Ready() bool               { return false }
func (b loadingBackend) Loading() string           { return b.loading }
func (b loadingBackend) MailboxState() string      { return "receiving" }
func (b loadingBackend) Metrics() *metrics.Metrics { return b.m }

// While the model loads, /readyz says how far it is.
func TestReadyzShowsLoadProgress(t *testing.T) {
	m := metrics.New(prometheus.NewRegistry())
	for _, tc := range []struct{ loading, want string }{
		{"reading model m: 12345 records for 3.0s", "not holding the model lock; reading model m: 12345 records for 3.0s"},
		{"", "not holding the model lock"},
	} {
		h := api.New(loadingBackend{m: m, loading: tc.loading}, api.Options{})
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		var body struct {
			Message   string `json:"message"`
			ErrorCode string `json:"error_code"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if rec.Code != http.StatusServiceUnavailable || body.ErrorCode != "NOT_READY" || !strings.HasSuffix(body.Message, tc.want) {
			t.Errorf("/readyz while loading %q: %d %s", tc.loading, rec.Code, rec.Body)
		}
	}
}
