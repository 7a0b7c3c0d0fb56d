// Package fail2ban tests the fail2ban filter in deploy/fail2ban against
// the log lines Roost's daemons write: checked-in samples (including user
// names crafted to make fail2ban ban someone else) and the live output of
// imapd and pop3d after failed logins by a real client.
package fail2ban

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/roost-mail/roost/internal/testenv"
)

// banned runs fail2ban-regex over logFile and returns the address of each
// matched line, in order.
func banned(t *testing.T, logFile string) []string {
	t.Helper()
	testenv.Require(t, "fail2ban-regex", "fail2ban")
	filter, err := filepath.Abs("filter.d/roost.conf")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("fail2ban-regex", "-o", "ip", logFile, filter).CombinedOutput()
	if err != nil {
		t.Fatalf("fail2ban-regex %s: %v\n%s", logFile, err, out)
	}
	return strings.Fields(string(out))
}

var textRemote = regexp.MustCompile(` remote=(\S+)`)

// remoteOf returns the real client address of a sample line: the first
// remote attribute (slog writes the connection's attributes before the
// user's), or the JSON field.
func remoteOf(t *testing.T, line string) string {
	t.Helper()
	if strings.HasPrefix(line, "{") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("sample %q: %v", line, err)
		}
		return m["remote"].(string)
	}
	m := textRemote.FindStringSubmatch(line)
	if m == nil {
		t.Fatalf("sample %q has no remote", line)
	}
	return m[1]
}

func TestFilterMatchesFailedLogins(t *testing.T) {
	data, err := os.ReadFile("testdata/match.log")
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		want = append(want, remoteOf(t, line))
	}
	got := banned(t, "testdata/match.log")
	if !slices.Equal(got, want) {
		t.Errorf("fail2ban found %v, want %v", got, want)
	}
	if slices.Contains(got, "203.0.113.9") {
		t.Error("a crafted user name made fail2ban ban 203.0.113.9")
	}
}

func TestFilterIgnoresOtherLines(t *testing.T) {
	if got := banned(t, "testdata/nomatch.log"); len(got) > 0 {
		t.Errorf("fail2ban matched lines that are not failed logins: %v", got)
	}
}

// TestJailLoads installs the filter and the jail into a copy of the
// system's fail2ban configuration (without Debian's sshd jail, which needs
// a log this machine may not have) and lets fail2ban check and dump it.
func TestJailLoads(t *testing.T) {
	client := testenv.Require(t, "fail2ban-client", "fail2ban")
	dir := t.TempDir()
	if out, err := exec.Command("cp", "-r", "/etc/fail2ban/.", dir).CombinedOutput(); err != nil {
		t.Fatalf("copy /etc/fail2ban: %v\n%s", err, out)
	}
	if err := os.RemoveAll(filepath.Join(dir, "jail.d")); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"filter.d/roost.conf", "jail.d/roost.conf"} {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Join(dir, filepath.Dir(f)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command(client, "-c", dir, "-t").CombinedOutput(); err != nil {
		t.Fatalf("fail2ban-client -t: %v\n%s", err, out)
	}
	dump, err := exec.Command(client, "-c", dir, "-d").Output()
	if err != nil {
		t.Fatalf("fail2ban-client -d: %v", err)
	}
	for _, want := range []string{
		"['add', 'roost', 'systemd']",
		"'_SYSTEMD_UNIT=roost-imapd.service', '+', '_SYSTEMD_UNIT=roost-pop3d.service'",
		"['set', 'roost', 'maxretry', 10]",
	} {
		if !strings.Contains(string(dump), want) {
			t.Errorf("fail2ban's view of the jail lacks %s", want)
		}
	}
}
