package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Sessions are the collectors of KATO 3 sessions, counted by the node that
// holds the model (so a cluster-wide sum counts each session once).
type Sessions struct {
	Active  *prometheus.GaugeVec   // by model
	Created *prometheus.CounterVec // by model
	Expired *prometheus.CounterVec // by model: the lease ran out or was revoked (katoctl sessions rm)
	Deleted *prometheus.CounterVec // by model: DELETE /sessions/{sid}
	// Refreshes counts lease refreshes (sliding TTL; at most one a second
	// per session).
	Refreshes *prometheus.CounterVec // by model
}

// NewSessions builds the session collectors and registers them on reg.
func NewSessions(reg prometheus.Registerer) *Sessions {
	f := promauto.With(reg)
	return &Sessions{
		Active: f.NewGaugeVec(prometheus.GaugeOpts{Name: "kato_sessions_active",
			Help: "KATO 3 sessions of the model this node holds."}, []string{"model"}),
		Created: f.NewCounterVec(prometheus.CounterOpts{Name: "kato_sessions_created_total",
			Help: "KATO 3 sessions created on this node."}, []string{"model"}),
		Expired: f.NewCounterVec(prometheus.CounterOpts{Name: "kato_sessions_expired_total",
			Help: "KATO 3 sessions whose lease ran out, or was revoked (katoctl sessions rm), while this node held their model."}, []string{"model"}),
		Deleted: f.NewCounterVec(prometheus.CounterOpts{Name: "kato_sessions_deleted_total",
			Help: "KATO 3 sessions deleted through the API while this node held their model."}, []string{"model"}),
		Refreshes: f.NewCounterVec(prometheus.CounterOpts{Name: "kato_sessions_lease_refreshes_total",
			Help: "Lease refreshes of KATO 3 sessions (each use extends the TTL; at most one refresh a second per session)."}, []string{"model"}),
	}
}
