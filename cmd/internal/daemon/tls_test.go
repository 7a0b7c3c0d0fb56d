package daemon

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/cmd/internal/config"
)

// handshake connects to addr and returns the common name the server's
// certificate carries.
func handshake(t *testing.T, addr string, conf *tls.Config) (string, error) {
	t.Helper()
	if conf == nil {
		conf = &tls.Config{}
	}
	conf.InsecureSkipVerify = true
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", addr, conf)
	if err != nil {
		return "", err
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0].Subject.CommonName, nil
}

// serveTLS accepts and handshakes on lns until they are closed.
func serveTLS(lns []net.Listener) {
	for _, ln := range lns {
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					c.SetDeadline(time.Now().Add(5 * time.Second))
					c.(*tls.Conn).Handshake()
					io.Copy(io.Discard, c)
				}()
			}
		}()
	}
}

func TestTLSReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "old.example.edu")
	e, logs := testEnv(t, "imapd", func(c *config.Config) {
		c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
	})
	lns, err := e.Listen([]string{"127.0.0.1:0"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer lns[0].Close()
	serveTLS(lns)
	addr := lns[0].Addr().String()
	if cn, err := handshake(t, addr, nil); err != nil || cn != "old.example.edu" {
		t.Fatalf("first handshake: %q, %v", cn, err)
	}

	writeCert(t, dir, "new.example.edu")
	if err := e.TLS.Reload(); err != nil {
		t.Fatal(err)
	}
	if cn, err := handshake(t, addr, nil); err != nil || cn != "new.example.edu" {
		t.Fatalf("after reload: %q, %v", cn, err)
	}
	if !strings.Contains(logs.String(), "TLS certificate reloaded") {
		t.Errorf("reload not logged: %s", logs)
	}

	// A broken renewal keeps the working certificate.
	if err := os.WriteFile(keyFile, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := e.TLS.Reload(); err == nil {
		t.Fatal("Reload accepted a broken key")
	}
	if cn, err := handshake(t, addr, nil); err != nil || cn != "new.example.edu" {
		t.Fatalf("after a failed reload: %q, %v", cn, err)
	}
	if !strings.Contains(logs.String(), "still serving the previous certificate") {
		t.Errorf("failed reload not logged: %s", logs)
	}
	// A key that does not match the certificate is refused too.
	otherDir := t.TempDir()
	_, otherKey := writeCert(t, otherDir, "other")
	b, _ := os.ReadFile(otherKey)
	replace(t, keyFile, b)
	if err := e.TLS.Reload(); err == nil {
		t.Fatal("Reload accepted a key that does not match the certificate")
	}
	if cn, _ := handshake(t, addr, nil); cn != "new.example.edu" {
		t.Errorf("after a mismatched key: %q", cn)
	}
}

func TestTLSPolicy(t *testing.T) {
	certFile, keyFile := writeCert(t, t.TempDir(), "mail.example.edu")
	e, _ := testEnv(t, "pop3d", func(c *config.Config) {
		c.TLS.CertFile, c.TLS.KeyFile = certFile, keyFile
	})
	lns, err := e.Listen([]string{"127.0.0.1:0"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer lns[0].Close()
	serveTLS(lns)
	addr := lns[0].Addr().String()
	for _, tc := range []struct {
		name string
		conf *tls.Config
		ok   bool
	}{
		{"default client", &tls.Config{}, true},
		{"TLS 1.2 AEAD", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}}, true},
		{"TLS 1.2 CBC only", &tls.Config{MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}}, false},
		{"TLS 1.1", &tls.Config{MaxVersion: tls.VersionTLS11}, false},
	} {
		_, err := handshake(t, addr, tc.conf)
		if (err == nil) != tc.ok {
			t.Errorf("%s: handshake error %v, want success %v", tc.name, err, tc.ok)
		}
	}
}

func TestNewTLS(t *testing.T) {
	tl, err := NewTLS("", "", nil)
	if err != nil || tl.Config() != nil || tl.Reload() != nil {
		t.Errorf("no certificate: %v, Config %v", err, tl.Config())
	}
	if _, err := NewTLS("/nonexistent/cert.pem", "", nil); err == nil || !strings.Contains(err.Error(), "tls.key_file") {
		t.Errorf("half a pair: %v", err)
	}
	_, err = NewTLS("/nonexistent/cert.pem", "/nonexistent/key.pem", nil)
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/cert.pem") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing files: %v", err)
	}
}
