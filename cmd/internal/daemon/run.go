package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Run runs the daemon until ctx is done or SIGTERM or SIGINT arrives:
//
//   - It serves metrics on metrics.listen.<Name> at /metrics, if set, and
//     then calls serve(ctx) in a goroutine; serve should block until its
//     listeners are closed. If serve returns first, Run returns its error.
//   - SIGHUP calls Reload (TLS certificate) and goes on serving.
//   - On SIGTERM, SIGINT or ctx done, Run calls shutdown with a deadline of
//     ShutdownTimeout: it should stop accepting and let sessions end. Then
//     serve's ctx is cancelled and Run waits (within the same deadline)
//     for serve to return. A second signal cancels at once. shutdown may
//     be nil, leaving only the cancellation of serve's ctx.
//
// A shutdown that ends this way returns nil; one that ran out of time is
// logged and returns nil too, since the daemon did stop.
func (e *Env) Run(ctx context.Context, serve func(ctx context.Context) error, shutdown func(ctx context.Context) error) error {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)

	stopMetrics, err := e.serveMetrics()
	if err != nil {
		return err
	}
	defer stopMetrics()

	serveCtx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- serve(serveCtx) }()
	e.Logger.Info("started", "pid", os.Getpid())

wait:
	for {
		select {
		case err := <-served:
			if err != nil {
				return fmt.Errorf("%s: %w", e.Name, err)
			}
			return nil
		case s := <-sigs:
			if s == syscall.SIGHUP {
				e.Logger.Info("reloading", "signal", s.String())
				e.Reload()
				continue
			}
			e.Logger.Info("shutting down", "signal", s.String(), "timeout", e.shutdownTimeout())
			break wait
		case <-ctx.Done():
			e.Logger.Info("shutting down", "reason", context.Cause(ctx).Error(), "timeout", e.shutdownTimeout())
			break wait
		}
	}

	deadline, stop := context.WithTimeout(context.Background(), e.shutdownTimeout())
	defer stop()
	go func() {
		// A second SIGTERM or SIGINT means "now".
		for {
			select {
			case s := <-sigs:
				if s == syscall.SIGHUP {
					continue
				}
				e.Logger.Warn("second signal: stopping at once", "signal", s.String())
				stop()
			case <-deadline.Done():
			}
			return
		}
	}()
	if shutdown != nil {
		if err := shutdown(deadline); err != nil {
			e.Logger.Warn("graceful shutdown incomplete; remaining connections are cut", "err", err)
		}
	}
	cancel()
	select {
	case err := <-served:
		if err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, context.Canceled) {
			e.Logger.Warn("server ended with an error during shutdown", "err", err)
		}
	case <-deadline.Done():
		e.Logger.Warn("server did not stop in time", "timeout", e.shutdownTimeout())
	}
	e.Logger.Info("stopped")
	return nil
}

func (e *Env) shutdownTimeout() time.Duration {
	if e.ShutdownTimeout > 0 {
		return e.ShutdownTimeout
	}
	return DefaultShutdownTimeout
}

// Reload re-reads what can change without a restart: the TLS certificate.
// (The passwd-file reloads itself when it changes.) A failed reload keeps
// the old state and is logged.
func (e *Env) Reload() {
	e.TLS.Reload()
}

// MetricsAddr returns the address the metrics endpoint listens on, or nil
// before Run has opened it (it is open before serve is called) or when
// metrics.listen has no entry for this daemon.
func (e *Env) MetricsAddr() net.Addr {
	if p := e.metricsAddr.Load(); p != nil {
		return *p
	}
	return nil
}

// serveMetrics starts the Prometheus endpoint, if configured, and returns
// a function that stops it.
func (e *Env) serveMetrics() (stop func(), err error) {
	addr := e.Config.Metrics.Listen[e.Name]
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics.listen.%s: %w", e.Name, err)
	}
	a := ln.Addr()
	e.metricsAddr.Store(&a)
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(e.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: time.Minute}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			e.Logger.Error("metrics endpoint failed", "addr", a.String(), "err", err)
		}
	}()
	e.Logger.Info("serving metrics", "addr", a.String(), "path", "/metrics")
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(ctx) != nil {
			srv.Close()
		}
		<-done
		e.metricsAddr.Store(nil)
	}, nil
}
