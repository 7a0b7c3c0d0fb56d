package config

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Size
		ok   bool
	}{
		{"250M", 262144000, true},
		{"250MB", 262144000, true},
		{"1k", 1024, true},
		{"0", 0, true},
		{"2G", 2 << 30, true},
		{"12", 12, true},
		{"-1", 0, false},
		{"M", 0, false},
		{"ten", 0, false},
	} {
		got, err := ParseSize(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Quota.Default != 250<<20 || c.Mail.Root != "/var/vmail" || c.POP3.UIDLFormat != "%08Xu%08Xv" {
		t.Errorf("unexpected defaults: %+v", c)
	}
}

func TestFileEnvAndErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "roost.yaml")
	os.WriteFile(p, []byte("mail:\n  root: /srv/mail\nquota:\n  default: 1G\nimap:\n  listen: [\"127.0.0.1:1143\"]\n"), 0o600)
	t.Setenv("ROOST_QUOTA_DEFAULT", "10M")
	c, err := Load(p)
	if err != nil {
		t.Fatal(err)
	}
	if c.Mail.Root != "/srv/mail" || c.Quota.Default != 10<<20 || c.IMAP.Listen[0] != "127.0.0.1:1143" {
		t.Errorf("got %+v", c)
	}

	os.WriteFile(p, []byte("mail:\n  rot: /srv/mail\n"), 0o600)
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), "rot") {
		t.Errorf("unknown key: err = %v", err)
	}
	os.WriteFile(p, []byte("auth:\n  backend: kerberos\nlog:\n  level: loud\n"), 0o600)
	_, err = Load(p)
	if err == nil || !strings.Contains(err.Error(), "kerberos") || !strings.Contains(err.Error(), "loud") {
		t.Errorf("all problems at once: err = %v", err)
	}
}

// FuzzParseSize: a size either parses to a non-negative byte count that
// prints back to the same number of bytes, or is refused.
func FuzzParseSize(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if m, err := ParseSize(strconv.FormatInt(int64(n), 10)); err != nil || m != n {
			t.Fatalf("ParseSize(%q) = %d does not round-trip: %d, %v", s, n, m, err)
		}
	})
}
