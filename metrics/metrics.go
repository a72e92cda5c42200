// Package metrics holds the Prometheus collectors of one KATO node. Every node
// builds its own Metrics on its own prometheus.Registry: nothing is registered
// globally.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promauto"
)

// Metrics are the collectors of one node (DESIGN.md §8).
type Metrics struct {
	Info          *prometheus.GaugeVec // kato_node_info{id,name,model,version} 1
	State         *prometheus.GaugeVec // kato_node_state{state} 1 for the current state
	Registered    prometheus.Gauge
	SessionLosses prometheus.Counter

	LockHeld         prometheus.Gauge
	LockWait         prometheus.Histogram
	LockAcquisitions prometheus.Counter
	LockLosses       prometheus.Counter

	MessagesSent     *prometheus.CounterVec // by kind
	MessagesReceived *prometheus.CounterVec // by kind
	MessagesExpired  prometheus.Counter     // received after their expiry time
	MessageLatency   prometheus.Histogram   // send → handler
	MailboxReceiving prometheus.Gauge       // 1 while the receiver runs
	MailboxRestarts  prometheus.Counter     // receiver restarts after an error

	Observe     prometheus.Histogram
	Predict     prometheus.Histogram
	Learn       prometheus.Histogram
	Patterns    prometheus.Gauge
	STMLength   prometheus.Gauge
	LearnBatch  prometheus.Histogram // learns per group-committed transaction
	Forwarded   *prometheus.CounterVec
	EtcdRequest *prometheus.HistogramVec // by operation

	HTTPRequests *prometheus.CounterVec // by route and code
}

// States a node reports in kato_node_state.
var States = []string{"starting", "standby", "running", "draining", "lost"}

// New builds the collectors and registers them, with the Go and process
// collectors, on reg.
func New(reg prometheus.Registerer) *Metrics {
	f := promauto.With(reg)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	fast := prometheus.ExponentialBuckets(0.0001, 4, 10) // 100 µs .. 26 s
	m := &Metrics{
		Info: f.NewGaugeVec(prometheus.GaugeOpts{Name: "kato_node_info",
			Help: "Static facts about the node; always 1."}, []string{"id", "name", "model", "version"}),
		State: f.NewGaugeVec(prometheus.GaugeOpts{Name: "kato_node_state",
			Help: "1 for the node's current lifecycle state, 0 for the others."}, []string{"state"}),
		Registered: f.NewGauge(prometheus.GaugeOpts{Name: "kato_node_registered",
			Help: "1 while the node's record is in the registry."}),
		SessionLosses: f.NewCounter(prometheus.CounterOpts{Name: "kato_session_losses_total",
			Help: "Times the node's etcd session lease was lost."}),

		LockHeld: f.NewGauge(prometheus.GaugeOpts{Name: "kato_lock_held",
			Help: "1 while the node holds its model lock."}),
		LockWait: f.NewHistogram(prometheus.HistogramOpts{Name: "kato_lock_wait_seconds",
			Help: "Time from asking for the model lock to holding it.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}),
		LockAcquisitions: f.NewCounter(prometheus.CounterOpts{Name: "kato_lock_acquisitions_total",
			Help: "Times the node acquired its model lock."}),
		LockLosses: f.NewCounter(prometheus.CounterOpts{Name: "kato_lock_losses_total",
			Help: "Times the node lost its model lock without releasing it."}),

		MessagesSent: f.NewCounterVec(prometheus.CounterOpts{Name: "kato_messages_sent_total",
			Help: "Messages sent by this node."}, []string{"kind"}),
		MessagesReceived: f.NewCounterVec(prometheus.CounterOpts{Name: "kato_messages_received_total",
			Help: "Messages handled by this node."}, []string{"kind"}),
		MessagesExpired: f.NewCounter(prometheus.CounterOpts{Name: "kato_messages_expired_total",
			Help: "Messages received after their TTL had passed."}),
		MessageLatency: f.NewHistogram(prometheus.HistogramOpts{Name: "kato_message_delivery_seconds",
			Help: "Time from a message's send to its handler.", Buckets: fast}),
		MailboxReceiving: f.NewGauge(prometheus.GaugeOpts{Name: "kato_mailbox_receiving",
			Help: "1 while the node's mailbox receiver runs (0 while it restarts after an error, or between sessions)."}),
		MailboxRestarts: f.NewCounter(prometheus.CounterOpts{Name: "kato_mailbox_receiver_restarts_total",
			Help: "Times the mailbox receiver ended with an error and was started again."}),

		Observe: f.NewHistogram(prometheus.HistogramOpts{Name: "kato_observe_duration_seconds",
			Help: "Time to handle an observation, predictions included.", Buckets: fast}),
		Predict: f.NewHistogram(prometheus.HistogramOpts{Name: "kato_predict_duration_seconds",
			Help: "Time to compute predictions.", Buckets: fast}),
		Learn: f.NewHistogram(prometheus.HistogramOpts{Name: "kato_learn_duration_seconds",
			Help: "Time to learn a pattern, until etcd accepted it.", Buckets: fast}),
		Patterns: f.NewGauge(prometheus.GaugeOpts{Name: "kato_model_patterns",
			Help: "Patterns in the node's model."}),
		STMLength: f.NewGauge(prometheus.GaugeOpts{Name: "kato_stm_length",
			Help: "Events in the short-term memory."}),
		LearnBatch: f.NewHistogram(prometheus.HistogramOpts{Name: "kato_learn_batch_size",
			Help: "Model changes per group-committed etcd transaction.", Buckets: prometheus.ExponentialBuckets(1, 2, 8)}),
		Forwarded: f.NewCounterVec(prometheus.CounterOpts{Name: "kato_requests_forwarded_total",
			Help: "API requests forwarded to the node holding the model, by result."}, []string{"result"}),
		EtcdRequest: f.NewHistogramVec(prometheus.HistogramOpts{Name: "kato_etcd_request_duration_seconds",
			Help: "Duration of etcd requests made by the node, by operation.", Buckets: fast}, []string{"op"}),

		HTTPRequests: f.NewCounterVec(prometheus.CounterOpts{Name: "kato_http_requests_total",
			Help: "HTTP requests served, by route and status code."}, []string{"route", "code"}),
	}
	return m
}

// SetState makes state the node's current one in kato_node_state.
func (m *Metrics) SetState(state string) {
	for _, s := range States {
		v := 0.0
		if s == state {
			v = 1
		}
		m.State.WithLabelValues(s).Set(v)
	}
}
