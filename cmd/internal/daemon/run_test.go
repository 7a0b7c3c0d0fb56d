package daemon

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/cmd/internal/config"
)

// These tests send real signals to the test process. Run registers for
// them before it calls serve, so a test signals only from inside serve or
// after serve has said it started; they must not run in parallel.

func TestRunSignals(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "before-hup")
	e, logs := testEnv(t, "imapd", func(c *config.Config) {
		c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
		c.Metrics.Listen = map[string]string{"imapd": "127.0.0.1:0", "pop3d": "127.0.0.1:1"}
	})
	lns, err := e.Listen([]string{"127.0.0.1:0"}, true)
	if err != nil {
		t.Fatal(err)
	}
	addr := lns[0].Addr().String()

	started := make(chan string)
	shutdownCalled := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- e.Run(context.Background(), func(ctx context.Context) error {
			serveTLS(lns)
			started <- e.MetricsAddr().String()
			<-ctx.Done() // cancelled after shutdown
			return lns[0].Close()
		}, func(ctx context.Context) error {
			close(shutdownCalled)
			return nil
		})
	}()
	metricsAddr := <-started

	// Metrics are served.
	e.Metrics.ConnOpened()
	e.Penalty.Fail(netip.MustParseAddr("203.0.113.7"), "mallory")
	body := get(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{
		`roost_connections_total{daemon="imapd"} 1`,
		`roost_tls_certificate_not_after_seconds{daemon="imapd"}`,
		`roost_auth_penalty_entries{daemon="imapd",table="addresses"} 1`,
		`roost_auth_penalty_entries{daemon="imapd",table="users"} 1`,
		"go_goroutines",
		"process_open_fds",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// SIGHUP reloads the certificate.
	writeCert(t, dir, "after-hup")
	syscall.Kill(syscall.Getpid(), syscall.SIGHUP)
	waitFor(t, func() bool {
		cn, err := handshake(t, addr, nil)
		return err == nil && cn == "after-hup"
	})

	// SIGTERM shuts down gracefully.
	syscall.Kill(syscall.Getpid(), syscall.SIGTERM)
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	select {
	case <-shutdownCalled:
	default:
		t.Error("shutdown not called")
	}
	if e.MetricsAddr() != nil {
		t.Error("metrics endpoint still registered after Run")
	}
	if _, err := http.Get("http://" + metricsAddr + "/metrics"); err == nil {
		t.Error("metrics endpoint still serving after Run")
	}
	for _, want := range []string{"signal=hangup", "TLS certificate reloaded", "shutting down", "signal=terminated", "msg=stopped"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	return string(b)
}

func TestRunServeFails(t *testing.T) {
	e, _ := testEnv(t, "pop3d", nil)
	boom := errors.New("boom")
	err := e.Run(context.Background(), func(context.Context) error { return boom }, nil)
	if !errors.Is(err, boom) {
		t.Errorf("Run = %v, want serve's error", err)
	}
}

func TestRunContextCancelled(t *testing.T) {
	e, logs := testEnv(t, "lmtpd", nil)
	ctx, cancel := context.WithCancel(context.Background())
	var order []string
	err := e.Run(ctx, func(ctx context.Context) error {
		cancel()
		<-ctx.Done()
		order = append(order, "serve returned")
		return ctx.Err()
	}, func(context.Context) error {
		order = append(order, "shutdown")
		return nil
	})
	if err != nil {
		t.Errorf("Run = %v", err)
	}
	if strings.Join(order, ", ") != "shutdown, serve returned" {
		t.Errorf("order: %v", order)
	}
	if strings.Contains(logs.String(), "during shutdown") {
		t.Errorf("context.Canceled from serve logged as an error:\n%s", logs)
	}
}

// A server that does not stop is given up on after ShutdownTimeout.
func TestRunShutdownTimeout(t *testing.T) {
	e, logs := testEnv(t, "imapd", nil)
	e.ShutdownTimeout = 10 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	stuck := make(chan struct{})
	defer close(stuck)
	err := e.Run(ctx, func(context.Context) error {
		cancel()
		<-stuck
		return nil
	}, func(ctx context.Context) error {
		<-ctx.Done()
		return ctx.Err()
	})
	if err != nil {
		t.Errorf("Run = %v", err)
	}
	for _, want := range []string{"graceful shutdown incomplete", "did not stop in time"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %q:\n%s", want, logs)
		}
	}
}

// A second SIGINT during a slow shutdown stops at once.
func TestRunSecondSignal(t *testing.T) {
	e, logs := testEnv(t, "imapd", nil)
	e.ShutdownTimeout = time.Hour
	inShutdown := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- e.Run(context.Background(), func(ctx context.Context) error {
			syscall.Kill(syscall.Getpid(), syscall.SIGINT)
			<-ctx.Done()
			return nil
		}, func(ctx context.Context) error {
			close(inShutdown)
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	<-inShutdown
	syscall.Kill(syscall.Getpid(), syscall.SIGINT)
	if err := <-done; err != nil {
		t.Errorf("Run = %v", err)
	}
	if !strings.Contains(logs.String(), "second signal") {
		t.Errorf("logs:\n%s", logs)
	}
}

func TestRunMetricsAddressInUse(t *testing.T) {
	e, _ := testEnv(t, "imapd", func(c *config.Config) {
		c.Metrics.Listen = map[string]string{"imapd": "127.0.0.1:0"}
	})
	first := make(chan string)
	release := make(chan struct{})
	finished := make(chan error)
	go func() {
		finished <- e.Run(context.Background(), func(context.Context) error {
			first <- e.MetricsAddr().String()
			<-release
			return nil
		}, nil)
	}()
	addr := <-first
	defer func() {
		close(release)
		<-finished
	}()
	e2, _ := testEnv(t, "imapd", func(c *config.Config) {
		c.Metrics.Listen = map[string]string{"imapd": addr}
	})
	err := e2.Run(context.Background(), func(context.Context) error { return nil }, nil)
	if err == nil || !strings.Contains(err.Error(), "metrics.listen.imapd") {
		t.Errorf("metrics port in use: %v", err)
	}
}
