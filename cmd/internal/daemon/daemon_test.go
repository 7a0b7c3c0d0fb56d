package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
)

// writeConfig writes a YAML config file with a passwd-file user alice,
// authExtra added to the auth section and extra at the end, and returns its
// path and the mail root.
func writeConfig(t *testing.T, authExtra, extra string) (path, root string) {
	t.Helper()
	dir := t.TempDir()
	root = filepath.Join(dir, "vmail")
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:{PLAIN}wonderland::::::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(dir, "roost.yaml")
	yaml := "mail:\n  root: " + root + "\n  fsync: false\n" +
		"auth:\n  file:\n    path: " + users + "\n" + authExtra + extra
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, root
}

func TestOpenPasswdFile(t *testing.T) {
	path, root := writeConfig(t, "", "log:\n  format: json\n  level: debug\nsecurity:\n  allow_root: true\n")
	var logs syncBuf
	ctx := context.Background()
	e, err := Open(ctx, path, "imapd", &logs)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()

	id, err := e.Auth.Authenticate(ctx, " Alice ", "wonderland")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(root, "alice", "Maildir"); id.Maildir != want || id.QuotaBytes != 250<<20 {
		t.Errorf("identity %+v: want Maildir %s and the 250M default quota", id, want)
	}
	if _, err := e.Auth.Authenticate(ctx, "alice", "wrong"); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Errorf("wrong password: %v", err)
	}
	u, err := e.Store.Open(ctx, backend.Account{Name: id.User, Maildir: id.Maildir, QuotaBytes: id.QuotaBytes, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	boxes, err := u.ListMailboxes(ctx)
	if err != nil || len(boxes) < 2 {
		t.Fatalf("mailboxes %v, %v; want INBOX and the special-use folders", boxes, err)
	}
	if e.TLS.Config() != nil || e.Penalty == nil || e.Metrics == nil {
		t.Errorf("Env incomplete: %+v", e)
	}

	// JSON log lines carry the daemon's name.
	e.Logger.Debug("probe")
	var line map[string]any
	last := strings.TrimSpace(logs.String())
	last = last[strings.LastIndex(last, "\n")+1:]
	if err := json.Unmarshal([]byte(last), &line); err != nil || line["daemon"] != "imapd" || line["msg"] != "probe" {
		t.Errorf("log line %q: %v", last, err)
	}
}

func TestOpenCache(t *testing.T) {
	path, _ := writeConfig(t, "  cache:\n    ttl: 1m\n    negative_ttl: 10s\n", "")
	e, err := Open(context.Background(), path, "pop3d", &syncBuf{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if _, err := e.Auth.Authenticate(context.Background(), "alice", "wonderland"); err != nil {
		t.Fatal(err)
	}
}

func TestOpenLDAPWiring(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "ldap.secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	path, _ := writeConfig(t, "  backend: ldap\n  ldap:\n    urls: [ldap://127.0.0.1:1]\n"+
		"    base_dn: ou=people,dc=example,dc=edu\n    bind_dn: cn=roost,dc=example,dc=edu\n"+
		"    bind_password_file: "+secret+"\n    timeout: 1s\n", "")
	e, err := Open(context.Background(), path, "lmtpd", &syncBuf{})
	if err != nil {
		t.Fatal(err)
	}
	// Nothing listens on port 1: "could not check", never "wrong password".
	_, err = e.Auth.Authenticate(context.Background(), "alice", "x")
	if !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("LDAP down: %v, want ErrUnavailable", err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}

	os.Remove(secret)
	if _, err := Open(context.Background(), path, "lmtpd", &syncBuf{}); err == nil || !strings.Contains(err.Error(), "bind_password_file") {
		t.Errorf("missing password file: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	for _, tc := range []struct {
		name, extra, want string
	}{
		{"unknown key", "imap:\n  lisen: [x]\n", "lisen"},
		{"missing certificate", "tls:\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n", "/nonexistent/cert.pem"},
		{"half a certificate", "tls:\n  cert_file: /nonexistent/cert.pem\n", "tls.key_file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, _ := writeConfig(t, "", tc.extra)
			_, err := Open(context.Background(), path, "imapd", &syncBuf{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
	path, _ := writeConfig(t, "", "")
	b, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), "/users\n", "/missing-users\n", 1)), 0o600)
	if _, err := Open(context.Background(), path, "imapd", &syncBuf{}); err == nil || !strings.Contains(err.Error(), "missing-users") {
		t.Errorf("missing passwd-file: %v", err)
	}
}
