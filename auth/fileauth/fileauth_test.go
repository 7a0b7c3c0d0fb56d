package fileauth

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/roost-mail/roost/auth"
)

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newTestAuth(t *testing.T, content string) (*Authenticator, string, *logBuf) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	lb := &logBuf{}
	a, err := New(Options{Path: path, Logger: slog.New(slog.NewTextHandler(lb, nil)), CheckInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	return a, path, lb
}

// replaceFile writes a new version atomically, as admins are told to.
func replaceFile(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".new"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

const usersFile = `# Roost test users
alice:{PLAIN}alice-pw:1001:1001:Alice:/home/alice:/bin/sh:userdb_quota_rule=*:storage=250M
Bob@Example.EDU:{SHA512-CRYPT}$6$YB4KuWCOTCCbNqPs$UpyH3Eib88Q4a3YO0OaugKsyH2o2YhNo9WL8chAjubDU92jHGL.udKSu7cSd8PGNt8IZZoXO5iuSPutY3c5mC0::::::userdb_mail=maildir:/var/vmail/%d/%n userdb_quota_rule=*:bytes=1000:messages=50
carol:{PLAIN}carol-pw:::::: userdb_home=/srv/carol userdb_mail=maildir:~/Mail:INDEX=/idx/%u userdb_uid=2000 userdb_gid=3000
this line is malformed
dave:{PLAIN}dave-pw:notanumber
erin:{NOSUCHSCHEME}xyz
frank:{PLAIN}frank-pw::::::nologin reason=moved
grace:{PLAIN}grace-pw::::::userdb_quota_rule=*:storage=lots
alice:{PLAIN}second-alice
heidi:
ivan:{PLAIN}ivan-pw::::::allow_nets=10.0.0.0/8
`

func TestFileUsers(t *testing.T) {
	a, _, logs := newTestAuth(t, usersFile)
	ctx := context.Background()
	cases := []struct {
		user, pw string
		want     *auth.Identity // nil: ErrInvalidCredentials
	}{
		{"alice", "alice-pw", &auth.Identity{User: "alice", Home: "/home/alice", QuotaBytes: 250 << 20, QuotaMessages: -1, UID: 1001, GID: 1001, Backend: "file"}},
		{" ALICE ", "alice-pw", &auth.Identity{User: "alice", Home: "/home/alice", QuotaBytes: 250 << 20, QuotaMessages: -1, UID: 1001, GID: 1001, Backend: "file"}},
		{"alice", "second-alice", nil}, // the duplicate line is skipped
		{"alice", "Alice-pw", nil},
		{"alice", "", nil},
		{"bob@example.edu", "pässwörd 1", &auth.Identity{User: "bob@example.edu", Maildir: "/var/vmail/example.edu/bob", QuotaBytes: 1000, QuotaMessages: 50, UID: -1, GID: -1, Backend: "file"}},
		{"bob", "pässwörd 1", nil}, // user and user@domain are different users
		{"carol", "carol-pw", &auth.Identity{User: "carol", Home: "/srv/carol", Maildir: "/srv/carol/Mail", QuotaBytes: -1, QuotaMessages: -1, UID: 2000, GID: 3000, Backend: "file"}},
		{"dave", "dave-pw", nil},
		{"erin", "xyz", nil},
		{"frank", "frank-pw", nil},
		{"grace", "grace-pw", &auth.Identity{User: "grace", QuotaBytes: -1, QuotaMessages: -1, UID: -1, GID: -1, Backend: "file"}},
		{"heidi", "", nil},
		{"heidi", "x", nil},
		{"ivan", "ivan-pw", nil},
		{"nobody", "x", nil},
	}
	for _, c := range cases {
		id, err := a.Authenticate(ctx, c.user, c.pw)
		if c.want == nil {
			if !errors.Is(err, auth.ErrInvalidCredentials) || errors.Is(err, auth.ErrUnavailable) {
				t.Errorf("Authenticate(%q, %q) = %v, %v; want ErrInvalidCredentials", c.user, c.pw, id, err)
			}
			continue
		}
		if err != nil || *id != *c.want {
			t.Errorf("Authenticate(%q) = %+v, %v; want %+v", c.user, id, err, c.want)
		}
	}
	// Lookup finds users who cannot log in: mail to them must not bounce.
	for _, u := range []string{"frank", "erin", "heidi", "ivan", "grace"} {
		if _, err := a.Lookup(ctx, u); err != nil {
			t.Errorf("Lookup(%s): %v", u, err)
		}
	}
	for _, u := range []string{"dave", "nobody", "bob", "this line is malformed"} {
		if _, err := a.Lookup(ctx, u); !errors.Is(err, auth.ErrNoSuchUser) {
			t.Errorf("Lookup(%s) = %v; want ErrNoSuchUser", u, err)
		}
	}
	names, err := a.ListUsers(ctx)
	want := "alice bob@example.edu carol erin frank grace heidi ivan"
	if err != nil || strings.Join(names, " ") != want {
		t.Errorf("ListUsers = %v, %v; want %s", names, err, want)
	}
	out := logs.String()
	for _, w := range []string{"line=5", "line=6", "line=7", "line=9", "line=10", "line=12", "first_line=2"} {
		if !strings.Contains(out, w) {
			t.Errorf("log lacks %q:\n%s", w, out)
		}
	}
	for _, secret := range []string{"alice-pw", "second-alice", "UpyH3Eib88", "pässwörd", "Alice-pw", "xyz"} {
		if strings.Contains(out, secret) {
			t.Errorf("log contains secret %q:\n%s", secret, out)
		}
	}
}

func TestReloadOnChange(t *testing.T) {
	a, path, _ := newTestAuth(t, "alice:{PLAIN}old\n")
	ctx := context.Background()
	if _, err := a.Authenticate(ctx, "alice", "old"); err != nil {
		t.Fatal(err)
	}
	// Same size, new content: the inode (and mtime) tell the change.
	replaceFile(t, path, "alice:{PLAIN}new\n")
	time.Sleep(5 * time.Millisecond)
	if _, err := a.Authenticate(ctx, "alice", "old"); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Errorf("old password after reload: %v", err)
	}
	if _, err := a.Authenticate(ctx, "alice", "new"); err != nil {
		t.Errorf("new password after reload: %v", err)
	}
	// In-place append, as `echo >>` does.
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("bob:{PLAIN}bob-pw\n")
	f.Close()
	time.Sleep(5 * time.Millisecond)
	if _, err := a.Lookup(ctx, "bob"); err != nil {
		t.Errorf("appended user: %v", err)
	}
}

func TestUnreadableFile(t *testing.T) {
	a, path, logs := newTestAuth(t, "alice:{PLAIN}pw\n")
	ctx := context.Background()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	for range 2 {
		if _, err := a.Authenticate(ctx, "alice", "pw"); !errors.Is(err, auth.ErrUnavailable) || errors.Is(err, auth.ErrInvalidCredentials) {
			t.Errorf("Authenticate with the file gone = %v; want ErrUnavailable only", err)
		}
		if _, err := a.Lookup(ctx, "alice"); !errors.Is(err, auth.ErrUnavailable) {
			t.Errorf("Lookup with the file gone = %v; want ErrUnavailable", err)
		}
	}
	if _, err := a.ListUsers(ctx); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("ListUsers = %v", err)
	}
	if n := strings.Count(logs.String(), "unreadable"); n != 1 {
		t.Errorf("unreadable logged %d times, want once", n)
	}
	replaceFile(t, path, "alice:{PLAIN}pw\n")
	time.Sleep(5 * time.Millisecond)
	if _, err := a.Authenticate(ctx, "alice", "pw"); err != nil {
		t.Errorf("after the file came back: %v", err)
	}
	if _, err := New(Options{Path: filepath.Join(t.TempDir(), "missing")}); !errors.Is(err, auth.ErrUnavailable) {
		t.Errorf("New on a missing file = %v", err)
	}
	if _, err := New(Options{}); err == nil {
		t.Error("New without a path succeeded")
	}
}

func TestLongLine(t *testing.T) {
	long := "mallory:{PLAIN}" + strings.Repeat("x", 100<<10) + "\n"
	a, _, logs := newTestAuth(t, "alice:{PLAIN}pw\n"+long+"bob:{PLAIN}pw")
	ctx := context.Background()
	for _, u := range []string{"alice", "bob"} {
		if _, err := a.Authenticate(ctx, u, "pw"); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	if _, err := a.Lookup(ctx, "mallory"); !errors.Is(err, auth.ErrNoSuchUser) {
		t.Errorf("over-long line was used: %v", err)
	}
	if !strings.Contains(logs.String(), "line=2") {
		t.Errorf("long line not reported: %s", logs.String())
	}
}

func TestParseLine(t *testing.T) {
	cases := []struct {
		line    string
		wantErr bool
		want    *entry
		warns   int
	}{
		{line: "", want: nil},
		{line: "   # comment", want: nil},
		{line: "u:{plain}pw", want: &entry{user: "u", scheme: "PLAIN", hash: "pw", uid: -1, gid: -1, quotaBytes: -1, quotaMessages: -1}},
		{line: "u:$6$salt$hash\r", want: &entry{user: "u", scheme: "CRYPT", hash: "$6$salt$hash", uid: -1, gid: -1, quotaBytes: -1, quotaMessages: -1}},
		{line: "u:{SSHA}x:1:2:g:/h:/bin/false:userdb_quota_rule=*:storage=100 userdb_quota_rule=*:messages=10",
			want: &entry{user: "u", scheme: "SSHA", hash: "x", uid: 1, gid: 2, home: "/h", quotaBytes: 100 << 10, quotaMessages: 10}},
		{line: "u:{SSHA}x::::::userdb_quota_rule=*:storage=1G:messages=1k",
			want: &entry{user: "u", scheme: "SSHA", hash: "x", uid: -1, gid: -1, quotaBytes: 1 << 30, quotaMessages: 1024}},
		{line: "u:{SSHA}x::::::userdb_quota_rule=*:storage=0", want: &entry{user: "u", scheme: "SSHA", hash: "x", uid: -1, gid: -1, quotaBytes: 0, quotaMessages: -1}},
		{line: "u:{SSHA}x::::::userdb_quota_rule=Trash:storage=+10M", warns: 1, want: &entry{user: "u", scheme: "SSHA", hash: "x", uid: -1, gid: -1, quotaBytes: -1, quotaMessages: -1}},
		{line: "u:{SSHA}x::::::userdb_quota_rule=*:storage=10%", warns: 1, want: &entry{user: "u", scheme: "SSHA", hash: "x", uid: -1, gid: -1, quotaBytes: -1, quotaMessages: -1}},
		{line: "u:{SSHA}x::::::userdb_mail=mbox:~/mail", warns: 1, want: &entry{user: "u", scheme: "SSHA", hash: "x", uid: -1, gid: -1, quotaBytes: -1, quotaMessages: -1}},
		{line: "u:{SSHA}x::::::userdb_mail=maildir:~/Maildir", warns: 1, want: &entry{user: "u", scheme: "SSHA", hash: "x", uid: -1, gid: -1, quotaBytes: -1, quotaMessages: -1}},
		{line: "u:{SSHA}x::::relative::", warns: 1, want: &entry{user: "u", scheme: "SSHA", hash: "x", uid: -1, gid: -1, quotaBytes: -1, quotaMessages: -1}},
		{line: "u@d.org:{SSHA}x:::::: userdb_home=/m/%d/%n userdb_mail=maildir:%h/Maildir:LAYOUT=fs",
			want: &entry{user: "u@d.org", scheme: "SSHA", hash: "x", uid: -1, gid: -1, home: "/m/d.org/u", maildir: "/m/d.org/u/Maildir", quotaBytes: -1, quotaMessages: -1}},
		{line: "u:{BOGUS}x", warns: 1, want: &entry{user: "u", scheme: "BOGUS", hash: "x", uid: -1, gid: -1, quotaBytes: -1, quotaMessages: -1}},
		{line: "nocolon", wantErr: true},
		{line: ":{PLAIN}x", wantErr: true},
		{line: "../etc:{PLAIN}x", wantErr: true},
		{line: "a/b:{PLAIN}x", wantErr: true},
		{line: "u:{PLAINx", wantErr: true},
		{line: "u:{}x", wantErr: true},
		{line: "u:x:-1", wantErr: true},
		{line: "u:x:1:g", wantErr: true},
		{line: "u:x::::::userdb_uid=root", wantErr: true},
	}
	for _, c := range cases {
		e, warns, err := parseLine(c.line)
		if (err != nil) != c.wantErr {
			t.Errorf("parseLine(%q) error = %v, want error %v", c.line, err, c.wantErr)
			continue
		}
		if err != nil {
			continue
		}
		if len(warns) != c.warns {
			t.Errorf("parseLine(%q) warnings = %q, want %d", c.line, warns, c.warns)
		}
		if (e == nil) != (c.want == nil) || (e != nil && *e != *c.want) {
			t.Errorf("parseLine(%q) = %+v, want %+v", c.line, e, c.want)
		}
	}
}

func TestExpand(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"/var/vmail/%d/%n", "/var/vmail/d.org/u"},
		{"/var/vmail/%Ld/%Ln", "/var/vmail/d.org/u"},
		{"/m/%{domain}/%{username}/%{user}", "/m/d.org/u/u@d.org"},
		{"%h/Maildir", "/home/u/Maildir"},
		{"%{home}/x", "/home/u/x"},
		{"%Ud", "D.ORG"},
		{"100%%", "100%"},
		{"%x %{nope} %", "%x %{nope} %"},
		{"%{unterminated", "%{unterminated"},
		{"%L", "%L"},
	} {
		if got := expand(c.in, "u@d.org", "/home/u"); got != c.want {
			t.Errorf("expand(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
