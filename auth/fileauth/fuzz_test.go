package fileauth

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/roost-mail/roost/auth"
)

// FuzzParseLine checks that no line makes the parser panic or yield an
// entry whose name or paths could escape the mail root.
func FuzzParseLine(f *testing.F) {
	f.Add("alice:{PLAIN}pw:1001:1001:Alice:/home/alice:/bin/sh:userdb_quota_rule=*:storage=250M")
	f.Add("u@d:{SHA512-CRYPT}$6$salt$hash::::::userdb_mail=maildir:/var/vmail/%d/%n:INDEX=/x")
	f.Fuzz(func(t *testing.T, line string) {
		e, _, err := parseLine(line)
		if err != nil || e == nil {
			return
		}
		if err := auth.ValidUsername(e.user); err != nil {
			t.Fatalf("entry with invalid user %q: %v", e.user, err)
		}
		if e.user != auth.Normalize(e.user) {
			t.Fatalf("user %q is not normalised", e.user)
		}
		if e.maildir != "" && (!filepath.IsAbs(e.maildir) || filepath.Clean(e.maildir) != e.maildir) {
			t.Fatalf("maildir %q is not a clean absolute path", e.maildir)
		}
		if e.home != "" && !filepath.IsAbs(e.home) {
			t.Fatalf("home %q is not absolute", e.home)
		}
		if e.uid < -1 || e.gid < -1 || e.quotaBytes < -1 || e.quotaMessages < -1 {
			t.Fatalf("negative ids or limits: %+v", e)
		}
		if e.scheme != strings.ToUpper(e.scheme) {
			t.Fatalf("scheme %q not upper case", e.scheme)
		}
	})
}
