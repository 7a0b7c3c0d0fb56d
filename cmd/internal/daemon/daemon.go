// Package daemon is the wiring every Roost daemon (imapd, pop3d, lmtpd)
// shares, so that their main packages stay a few lines long:
//
//	env, err := daemon.Open(ctx, configPath, "pop3d", stderr)
//	if err != nil { return err }
//	defer env.Close()
//	lns, err := env.Listen(env.Config.POP3.Listen, false)      // + STLS
//	tlsLns, err := env.Listen(env.Config.POP3.ListenTLS, true) // implicit TLS
//	srv, err := pop3d.New(pop3d.Options{TLSConfig: env.TLS.Config(), Throttle: env.Penalty, ...})
//	return env.Run(ctx, func(ctx context.Context) error { ...serve lns... }, srv.Shutdown)
//
// A server that does the TLS handshake itself (imapd.ServeTLS) takes its
// implicit-TLS listeners from ListenTLSRaw instead.
//
// Open loads the configuration (cmd/internal/config), builds the logger,
// the Authenticator (passwd-file or LDAP, with site defaults and the
// optional cache), the Maildir store, the TLS certificate holder, the
// Prometheus registry and metrics, and the auth penalty. Listen opens
// guarded listeners (netguard: connection limits, PROXY protocol) and
// refuses to run as root unless mail.layout is "system" or
// security.allow_root is set. Run handles signals (SIGTERM/SIGINT: graceful
// shutdown; SIGHUP: reload) and serves metrics. docs/platform.md describes
// all of it for admins.
//
// Front ends must not import this package (it is cmd/internal); what they
// need about connections is in netguard.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/auth/penalty"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/cmd/internal/config"
	"github.com/roost-mail/roost/metrics"
	"github.com/roost-mail/roost/netguard"
)

// DefaultShutdownTimeout is how long Run lets connections drain after
// SIGTERM before it gives up on them.
const DefaultShutdownTimeout = 10 * time.Second

// Env is everything a daemon's main package needs, built from the config.
// Its fields are set by Open and not changed afterwards, except
// ShutdownTimeout, which a caller may set before Run.
type Env struct {
	// Name is the daemon's name: "imapd", "pop3d", "lmtpd" (also the key
	// of metrics.listen and the "daemon" attribute of every log line).
	Name   string
	Config *config.Config
	Logger *slog.Logger
	// Auth has the site defaults (mail root, quota) applied, and the
	// cache when auth.cache.ttl > 0.
	Auth  auth.Authenticator
	Store backend.Store
	// TLS is never nil; TLS.Config() is nil when no certificate is set.
	TLS *TLS
	// Registry holds Metrics plus Go and process collectors; front ends
	// may register more.
	Registry *prometheus.Registry
	Metrics  *metrics.Metrics
	// Penalty delays logins after failures (security.auth_penalty_max,
	// security.trusted_networks exempt).
	Penalty *penalty.Penalty
	// Trusted is security.trusted_networks, parsed.
	Trusted []netip.Prefix
	// ProxyFrom is security.proxy_protocol_from, parsed.
	ProxyFrom []netip.Prefix
	// ShutdownTimeout bounds graceful shutdown in Run
	// (DefaultShutdownTimeout when 0).
	ShutdownTimeout time.Duration

	refused     *prometheus.CounterVec
	closers     []io.Closer
	limitsOnce  sync.Once
	connLimits  *netguard.Limits
	metricsAddr atomic.Pointer[net.Addr]
}

// Open loads the config file at configPath ("" = defaults and environment
// only) and builds the Env of daemon name. Log lines go to stderr. The
// error says what to fix.
func Open(ctx context.Context, configPath, name string, stderr io.Writer) (*Env, error) {
	cfg, err := config.Load(configPath)
	if err != nil {
		return nil, err
	}
	e, err := newEnv(cfg, name, stderr)
	if err != nil {
		return nil, err
	}
	if e.Auth, err = e.openAuth(); err != nil {
		e.Close()
		return nil, err
	}
	e.Store = e.openStore()
	return e, nil
}

// newEnv builds everything but the Authenticator and the Store.
func newEnv(cfg *config.Config, name string, stderr io.Writer) (*Env, error) {
	e := &Env{Name: name, Config: cfg, ShutdownTimeout: DefaultShutdownTimeout}
	e.Logger = newLogger(cfg.Log, stderr).With("daemon", name)
	var err error
	if e.Trusted, err = ParsePrefixes(cfg.Security.TrustedNetworks); err != nil {
		return nil, fmt.Errorf("security.trusted_networks: %w", err)
	}
	if e.ProxyFrom, err = ParsePrefixes(cfg.Security.ProxyProtocolFrom); err != nil {
		return nil, fmt.Errorf("security.proxy_protocol_from: %w", err)
	}
	if e.TLS, err = NewTLS(cfg.TLS.CertFile, cfg.TLS.KeyFile, e.Logger); err != nil {
		return nil, err
	}
	e.Penalty = penalty.New(penalty.Options{Max: cfg.Security.AuthPenaltyMax, Trusted: e.Trusted})
	e.registerMetrics()
	return e, nil
}

// Close releases what Open built (LDAP connections, file watchers). It does
// not close listeners; the server that serves them does.
func (e *Env) Close() error {
	var errs []error
	for i := len(e.closers) - 1; i >= 0; i-- {
		errs = append(errs, e.closers[i].Close())
	}
	e.closers = nil
	return errors.Join(errs...)
}

// closeLater registers v to be closed by Close if it is an io.Closer.
func (e *Env) closeLater(v any) {
	if c, ok := v.(io.Closer); ok {
		e.closers = append(e.closers, c)
	}
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	// config.Validate accepted only debug, info, warn and error.
	_ = level.UnmarshalText([]byte(c.Level))
	o := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o))
	}
	return slog.New(slog.NewTextHandler(w, o))
}

func (e *Env) registerMetrics() {
	e.Registry = prometheus.NewRegistry()
	e.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	e.Metrics = metrics.New(e.Registry, e.Name)
	labels := prometheus.Labels{"daemon": e.Name}
	e.refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "roost_connections_refused_total", ConstLabels: labels,
		Help: "Connections refused by a limit or a PROXY protocol problem, by reason."},
		[]string{"reason"})
	notAfter := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "roost_tls_certificate_not_after_seconds", ConstLabels: labels,
		Help: "Expiry of the served TLS certificate (Unix time; 0 without TLS)."},
		func() float64 {
			if t := e.TLS.notAfter(); !t.IsZero() {
				return float64(t.Unix())
			}
			return 0
		})
	penaltyEntries := func(table string) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "roost_auth_penalty_entries", ConstLabels: prometheus.Labels{"daemon": e.Name, "table": table},
			Help: "Addresses and user names with recent failed logins (auth penalty)."},
			func() float64 {
				addrs, users := e.Penalty.Len()
				if table == "addresses" {
					return float64(addrs)
				}
				return float64(users)
			})
	}
	e.Registry.MustRegister(e.refused, notAfter, penaltyEntries("addresses"), penaltyEntries("users"))
}

// ParsePrefixes parses addresses ("192.0.2.7", "2001:db8::1") and CIDR
// networks ("192.0.2.0/24") as the security.* network lists allow.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		s = strings.TrimSpace(s)
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, netip.PrefixFrom(p.Addr().Unmap(), unmappedBits(p)).Masked())
			continue
		}
		a, err := netip.ParseAddr(s)
		if err != nil || a.Zone() != "" {
			return nil, fmt.Errorf("%q is not an address or CIDR network", s)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	return out, nil
}

// unmappedBits converts the length of an IPv4-mapped IPv6 prefix
// (::ffff:10.0.0.0/104) to its IPv4 length, since addresses are compared
// unmapped.
func unmappedBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return max(p.Bits()-96, 0)
	}
	return p.Bits()
}
