// Package metrics holds the Prometheus metrics every Roost daemon exports
// (metrics.listen in the config). A nil *Metrics records nothing, so front
// ends and tests need no registry.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are one daemon's counters and histograms.
type Metrics struct {
	conns       prometheus.Gauge
	connsTotal  prometheus.Counter
	logins      *prometheus.CounterVec
	commands    *prometheus.HistogramVec
	deliveries  *prometheus.CounterVec
	quotaReject prometheus.Counter
	bytes       *prometheus.CounterVec
}

// New registers the metrics of daemon ("imapd", "pop3d", "lmtpd") with reg.
func New(reg prometheus.Registerer, daemon string) *Metrics {
	labels := prometheus.Labels{"daemon": daemon}
	m := &Metrics{
		conns: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "roost_connections", Help: "Open client connections.", ConstLabels: labels}),
		connsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_connections_total", Help: "Client connections accepted.", ConstLabels: labels}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_logins_total", Help: "Login attempts by result (ok, fail, tempfail).", ConstLabels: labels},
			[]string{"result"}),
		commands: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "roost_command_duration_seconds", Help: "Protocol commands by name.", ConstLabels: labels,
			Buckets: []float64{.0005, .001, .005, .01, .05, .1, .5, 1, 5, 30}},
			[]string{"command"}),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_deliveries_total", Help: "Messages stored by delivery or APPEND, by result.", ConstLabels: labels},
			[]string{"result"}),
		quotaReject: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "roost_quota_rejections_total", Help: "Messages refused because the user is over quota.", ConstLabels: labels}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "roost_bytes_total", Help: "Bytes received from (in) and sent to (out) clients.", ConstLabels: labels},
			[]string{"direction"}),
	}
	reg.MustRegister(m.conns, m.connsTotal, m.logins, m.commands, m.deliveries, m.quotaReject, m.bytes)
	return m
}

// ConnOpened records a new client connection.
func (m *Metrics) ConnOpened() {
	if m != nil {
		m.conns.Inc()
		m.connsTotal.Inc()
	}
}

// ConnClosed records the end of a client connection.
func (m *Metrics) ConnClosed() {
	if m != nil {
		m.conns.Dec()
	}
}

// Login records a login attempt; result is "ok", "fail" or "tempfail".
func (m *Metrics) Login(result string) {
	if m != nil {
		m.logins.WithLabelValues(result).Inc()
	}
}

// Command records one protocol command and how long it took.
func (m *Metrics) Command(name string, d time.Duration) {
	if m != nil {
		m.commands.WithLabelValues(name).Observe(d.Seconds())
	}
}

// Delivery records a stored (result "ok") or refused message.
func (m *Metrics) Delivery(result string) {
	if m != nil {
		m.deliveries.WithLabelValues(result).Inc()
	}
}

// QuotaRejection records a message refused for quota.
func (m *Metrics) QuotaRejection() {
	if m != nil {
		m.quotaReject.Inc()
	}
}

// Bytes records traffic: in from the client, out to it.
func (m *Metrics) Bytes(in, out int64) {
	if m != nil {
		m.bytes.WithLabelValues("in").Add(float64(in))
		m.bytes.WithLabelValues("out").Add(float64(out))
	}
}
