package auth_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/roost-mail/roost/auth"
)

func TestWithDefaults(t *testing.T) {
	fa, _ := newFileBackend(t, `alice:{PLAIN}pw::::/home/alice::userdb_quota_rule=*:storage=1M
bob@example.edu:{PLAIN}pw::::::userdb_mail=maildir:/srv/mail/bob userdb_quota_rule=*:messages=7
carol:{PLAIN}pw
dan@example.edu:{PLAIN}pw
`)
	a := auth.WithDefaults(fa, auth.Defaults{MailRoot: "/var/vmail", QuotaBytes: 250 << 20, QuotaMessages: 0})
	ctx := context.Background()
	for _, c := range []struct {
		login, maildir string
		bytes, msgs    int64
	}{
		{"alice", "/home/alice/Maildir", 1 << 20, 0},
		{"Bob@Example.EDU", "/srv/mail/bob", 250 << 20, 7},
		{" carol", "/var/vmail/carol/Maildir", 250 << 20, 0},
		{"dan@example.edu", "/var/vmail/example.edu/dan/Maildir", 250 << 20, 0},
	} {
		for _, lookup := range []bool{false, true} {
			var id *auth.Identity
			var err error
			if lookup {
				id, err = a.Lookup(ctx, c.login)
			} else {
				id, err = a.Authenticate(ctx, c.login, "pw")
			}
			if err != nil || id.Maildir != c.maildir || id.QuotaBytes != c.bytes || id.QuotaMessages != c.msgs {
				t.Errorf("%s (lookup %v) = %+v, %v; want Maildir %s quota %d/%d", c.login, lookup, id, err, c.maildir, c.bytes, c.msgs)
			}
		}
	}
	for _, bad := range []string{"../etc", "a/b", "a\x00b", "a\nb", "a\x7fb", "a@b@c", "@example.edu", "x@", ".", "x@.", "..", "a\\b", ""} {
		if _, err := a.Authenticate(ctx, bad, "pw"); !errors.Is(err, auth.ErrInvalidCredentials) {
			t.Errorf("Authenticate(%q) = %v; want ErrInvalidCredentials", bad, err)
		}
		if _, err := a.Lookup(ctx, bad); !errors.Is(err, auth.ErrNoSuchUser) {
			t.Errorf("Lookup(%q) = %v; want ErrNoSuchUser", bad, err)
		}
	}
	if _, err := auth.MailRootPath("", "carol"); err == nil {
		t.Error("MailRootPath without a root succeeded")
	}
	// Without a mail root, a user with no home and no Maildir has no
	// safe place for mail: refused, not sent to a relative path.
	noRoot := auth.WithDefaults(fa, auth.Defaults{})
	if _, err := noRoot.Authenticate(ctx, "carol", "pw"); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Errorf("Authenticate without a mail root = %v", err)
	}
	if _, err := noRoot.Lookup(ctx, "carol"); !errors.Is(err, auth.ErrNoSuchUser) {
		t.Errorf("Lookup without a mail root = %v", err)
	}
	if id, err := noRoot.Lookup(ctx, "alice"); err != nil || id.Maildir != "/home/alice/Maildir" {
		t.Errorf("Lookup(alice) without a mail root = %+v, %v", id, err)
	}
	// Errors from the backend pass through unchanged.
	if _, err := a.Authenticate(ctx, "alice", "wrong"); !errors.Is(err, auth.ErrInvalidCredentials) {
		t.Errorf("wrong password = %v", err)
	}
	if _, err := a.Lookup(ctx, "nobody"); !errors.Is(err, auth.ErrNoSuchUser) {
		t.Errorf("Lookup(nobody) = %v", err)
	}
	// A backend that cannot list gives a wrapper that cannot either.
	hidden := struct{ auth.Authenticator }{fa}
	for _, w := range []auth.Authenticator{auth.WithDefaults(hidden, auth.Defaults{MailRoot: "/m"}), auth.NewCache(hidden, time.Second, 0)} {
		if _, ok := w.(auth.Lister); ok {
			t.Errorf("%T claims to list users its backend cannot", w)
		}
	}
}

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		unit int64
		want int64
		ok   bool
	}{
		{"250M", 1, 262144000, true},
		{"250MB", 1, 262144000, true},
		{"250mb", 1, 262144000, true},
		{"1G", 1, 1 << 30, true},
		{"1t", 1, 1 << 40, true},
		{"100", 1, 100, true},
		{"100", 1024, 102400, true},
		{"100B", 1024, 100, true},
		{"2k", 1024, 2048, true},
		{" 7 ", 1, 7, true},
		{"0", 1, 0, true},
		{"", 1, 0, false},
		{"M", 1, 0, false},
		{"-1", 1, 0, false},
		{"+5M", 1, 0, false},
		{"10%", 1, 0, false},
		{"1.5G", 1, 0, false},
		{"99999999999G", 1, 0, false},
	} {
		got, err := auth.ParseSize(c.in, c.unit)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseSize(%q, %d) = %d, %v; want %d ok=%v", c.in, c.unit, got, err, c.want, c.ok)
		}
	}
}
