package daemon

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"
)

// TLS holds the server certificate (tls.cert_file, tls.key_file) and
// re-reads it on Reload (SIGHUP), so a renewed certificate is served
// without a restart. It is safe for concurrent use.
type TLS struct {
	certFile, keyFile string // immutable; "" = no TLS
	logger            *slog.Logger
	cert              atomic.Pointer[tls.Certificate]
}

// NewTLS loads the key pair; with both paths empty it returns a TLS whose
// Config is nil. A missing or broken pair is an error: a daemon must not
// start without the certificate its config names.
func NewTLS(certFile, keyFile string, logger *slog.Logger) (*TLS, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	t := &TLS{certFile: certFile, keyFile: keyFile, logger: logger}
	if certFile == "" && keyFile == "" {
		return t, nil
	}
	if certFile == "" || keyFile == "" {
		return nil, fmt.Errorf("tls: set both tls.cert_file and tls.key_file (got cert %q, key %q)", certFile, keyFile)
	}
	c, err := t.load()
	if err != nil {
		return nil, err
	}
	t.cert.Store(c)
	return t, nil
}

func (t *TLS) load() (*tls.Certificate, error) {
	c, err := tls.LoadX509KeyPair(t.certFile, t.keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w (check that both files exist, are readable by the daemon's user, and are a matching PEM certificate and key)", t.certFile, t.keyFile, err)
	}
	if c.Leaf != nil {
		if left := time.Until(c.Leaf.NotAfter); left < 14*24*time.Hour {
			t.logger.Warn("TLS certificate expires soon or has expired: renew it and send SIGHUP",
				"cert_file", t.certFile, "not_after", c.Leaf.NotAfter)
		}
	}
	return &c, nil
}

// Config returns a server tls.Config serving the current certificate, or
// nil when no certificate is configured. TLS 1.2 is the minimum; TLS 1.2
// cipher suites are limited to ECDHE with AEAD ciphers (TLS 1.3 suites are
// all modern). Each call returns a new Config the caller may modify.
func (t *TLS) Config() *tls.Config {
	if t == nil || t.cert.Load() == nil {
		return nil
	}
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return t.cert.Load(), nil
		},
	}
}

// Reload re-reads the certificate files. On failure the current
// certificate stays in use, and the error (also logged) says why.
func (t *TLS) Reload() error {
	if t == nil || t.cert.Load() == nil {
		return nil
	}
	c, err := t.load()
	if err != nil {
		t.logger.Error("TLS reload failed; still serving the previous certificate", "err", err)
		return err
	}
	t.cert.Store(c)
	attrs := []any{"cert_file", t.certFile}
	if c.Leaf != nil {
		attrs = append(attrs, "subject", c.Leaf.Subject.String(), "not_after", c.Leaf.NotAfter)
	}
	t.logger.Info("TLS certificate reloaded", attrs...)
	return nil
}

// notAfter returns the current certificate's expiry, or the zero time.
func (t *TLS) notAfter() time.Time {
	if c := t.cert.Load(); c != nil && c.Leaf != nil {
		return c.Leaf.NotAfter
	}
	return time.Time{}
}
