package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/roost-mail/roost/internal/testenv"
)

func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// TestRun starts imapd from a config file with a plaintext and an
// implicit-TLS listener, reads a message Postfix-style delivery left in
// the Maildir over both, and stops it by cancelling.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "vmail")
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:{PLAIN}wonderland::::::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, key := writeCert(t, dir)
	addr, tlsAddr := fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t)), fmt.Sprintf("127.0.0.1:%d", testenv.FreePort(t))
	conf := filepath.Join(dir, "roost.yaml")
	yaml := "mail:\n  root: " + root + "\n  fsync: false\n" +
		"auth:\n  file:\n    path: " + users + "\n" +
		"imap:\n  listen: [\"" + addr + "\"]\n  listen_tls: [\"" + tlsAddr + "\"]\n  delimiter: \".\"\n  max_mailboxes: 2\n" +
		"tls:\n  cert_file: " + cert + "\n  key_file: " + key + "\n" +
		"security:\n  allow_plaintext_auth: true\n  allow_root: true\n"
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(root, "alice", "Maildir")
	for _, sub := range []string{"new", "cur", "tmp"} {
		os.MkdirAll(filepath.Join(md, sub), 0o700)
	}
	os.WriteFile(filepath.Join(md, "new", "1700000000.V1I1M1.test"), []byte("Subject: hi\n\nbody\n"), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	logs := &testenv.LogBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--config", conf}, os.Stdout, logs) }()

	var c *imapclient.Client
	var err error
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err = imapclient.DialInsecure(addr, nil); err == nil || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		cancel()
		t.Fatalf("imapd never listened: %v\n%v\n%s", err, <-done, logs)
	}
	defer c.Close()
	check := func(c *imapclient.Client) {
		t.Helper()
		if err := c.Login("alice", "wonderland").Wait(); err != nil {
			t.Fatal(err)
		}
		list, err := c.List("", "*", nil).Collect()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, l := range list {
			names = append(names, l.Mailbox)
			if l.Delim != '.' {
				t.Errorf("delimiter %q", l.Delim)
			}
		}
		if !strings.Contains(strings.Join(names, " "), "Sent") {
			t.Errorf("mailboxes: %v", names)
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{Peek: true}}}).Collect()
		if err != nil || len(msgs) != 1 || string(msgs[0].FindBodySection(&imap.FetchItemBodySection{})) != "Subject: hi\r\n\r\nbody\r\n" {
			t.Fatalf("fetch: %v %v", msgs, err)
		}
	}
	check(c)
	// imap.max_mailboxes reaches the store: the third folder is refused.
	for i, name := range []string{"a", "b", "c"} {
		err := c.Create(name, nil).Wait()
		var ie *imap.Error
		if limited := errors.As(err, &ie) && ie.Code == imap.ResponseCodeLimit; limited != (i == 2) {
			t.Errorf("CREATE %s: %v", name, err)
		}
	}
	tc, err := imapclient.DialTLS(tlsAddr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	check(tc)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("imapd did not stop")
	}
	for _, want := range []string{"msg=login", "result=ok", "tls=true", "msg=logout"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, logs)
		}
	}
}

func TestUsage(t *testing.T) {
	if err := run(context.Background(), []string{"extra"}, os.Stdout, &testenv.LogBuffer{}); err == nil {
		t.Fatal("extra arguments accepted")
	}
	if err := run(context.Background(), []string{"--config", "/nonexistent/roost.yaml"}, os.Stdout, &testenv.LogBuffer{}); err == nil {
		t.Fatal("missing config accepted")
	}
}
