package auth_test

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mail/roost/auth"
)

// FuzzMailRootPath checks the path rule: a name ValidUsername accepts
// always maps below the mail root, two levels deep at most.
func FuzzMailRootPath(f *testing.F) {
	f.Add("alice")
	f.Add("Bob@Example.EDU")
	f.Fuzz(func(t *testing.T, name string) {
		u := auth.Normalize(name)
		p, err := auth.MailRootPath("/var/vmail", u)
		if err != nil {
			return
		}
		rel, err := filepath.Rel("/var/vmail", p)
		if err != nil || strings.HasPrefix(rel, "..") || filepath.Clean(p) != p {
			t.Fatalf("%q maps to %q, outside the mail root", name, p)
		}
		if n := strings.Count(rel, "/"); n < 1 || n > 2 || filepath.Base(p) != "Maildir" {
			t.Fatalf("%q maps to %q: wrong depth", name, p)
		}
	})
}

// FuzzParseSize checks that sizes are never negative and that a plain
// number round-trips.
func FuzzParseSize(f *testing.F) {
	f.Add("250M", int64(1))
	f.Add("100", int64(1024))
	f.Fuzz(func(t *testing.T, s string, unit int64) {
		n, err := auth.ParseSize(s, unit)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q, %d) = %d", s, unit, n)
		}
	})
}
