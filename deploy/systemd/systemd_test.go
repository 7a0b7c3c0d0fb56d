// Package systemd tests the unit files in deploy/systemd with systemd's own
// checker (systemd-analyze verify and security), and holds them to the
// hardening docs/admin.md promises.
package systemd

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/roost-mail/roost/internal/testenv"
)

var daemons = []string{"imapd", "pop3d", "lmtpd"}

// install writes the unit for daemon into dir with ExecStart pointing at
// an executable stub there, since systemd-analyze verify insists that the
// program exists and the test must not need the package installed.
func install(t *testing.T, dir, daemon, dropIn string) string {
	t.Helper()
	unit, err := os.ReadFile("roost-" + daemon + ".service")
	if err != nil {
		t.Fatal(err)
	}
	stub := filepath.Join(dir, "roost-"+daemon)
	if err := os.WriteFile(stub, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	text := strings.ReplaceAll(string(unit), "/usr/sbin/roost-"+daemon, stub)
	if dropIn != "" {
		// A drop-in's sections simply continue the unit's.
		text += "\n" + dropIn
	}
	path := filepath.Join(dir, "roost-"+daemon+".service")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// verify runs systemd-analyze verify; any output (unknown keys, bad values)
// is a failure, since verify exits 0 on many of them.
func verify(t *testing.T, unit string) {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput()
	if err != nil || len(strings.TrimSpace(string(out))) > 0 {
		t.Errorf("systemd-analyze verify %s: %v\n%s", filepath.Base(unit), err, out)
	}
}

func TestUnitsVerify(t *testing.T) {
	testenv.Require(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	for _, d := range daemons {
		verify(t, install(t, dir, d, ""))
	}
}

func TestSystemLayoutDropInVerifies(t *testing.T) {
	testenv.Require(t, "systemd-analyze", "systemd")
	dropIn, err := os.ReadFile("roost-system-layout.conf")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range daemons {
		verify(t, install(t, dir, d, string(dropIn)))
	}
}

// TestUnitsExposure runs systemd's own sandboxing score; 10 is an
// unconfined service, and the units must stay at or below 2.0 ("OK").
func TestUnitsExposure(t *testing.T) {
	testenv.Require(t, "systemd-analyze", "systemd")
	dir := t.TempDir()
	score := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+)`)
	for _, d := range daemons {
		unit := install(t, dir, d, "")
		out, err := exec.Command("systemd-analyze", "security", "--offline=true", "--threshold=20", "--no-pager", unit).CombinedOutput()
		m := score.FindSubmatch(out)
		if m == nil {
			t.Fatalf("systemd-analyze security %s printed no score: %v\n%s", d, err, out)
		}
		t.Logf("roost-%s.service exposure %s", d, m[1])
		if err != nil {
			t.Errorf("roost-%s.service exposure %s is above 2.0: %v", d, m[1], err)
		}
	}
}

// TestUnitsHardening pins the settings docs/admin.md describes, so that a
// later edit cannot drop one silently.
func TestUnitsHardening(t *testing.T) {
	want := []string{
		"User=vmail",
		"Group=vmail",
		"AmbientCapabilities=CAP_NET_BIND_SERVICE",
		"CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
		"ExecReload=/bin/kill -HUP $MAINPID",
		"NoNewPrivileges=yes",
		"ProtectSystem=strict",
		"ProtectHome=yes",
		"PrivateTmp=yes",
		"UMask=0077",
		"Restart=on-failure",
	}
	for _, d := range daemons {
		data, err := os.ReadFile("roost-" + d + ".service")
		if err != nil {
			t.Fatal(err)
		}
		lines := map[string]bool{}
		var rw []string
		for _, l := range strings.Split(string(data), "\n") {
			l = strings.TrimSpace(l)
			lines[l] = true
			if v, ok := strings.CutPrefix(l, "ReadWritePaths="); ok {
				rw = append(rw, strings.Fields(v)...)
			}
		}
		for _, w := range want {
			if !lines[w] {
				t.Errorf("roost-%s.service lacks %s", d, w)
			}
		}
		if !lines["ExecStart=/usr/sbin/roost-"+d+" --config /etc/roost/roost.yaml"] {
			t.Errorf("roost-%s.service does not start /usr/sbin/roost-%s --config /etc/roost/roost.yaml", d, d)
		}
		// The mail root is the only place the daemon may write, plus
		// lmtpd's socket directory in Postfix's queue.
		allowed := map[string]bool{"/var/vmail": true}
		if d == "lmtpd" {
			allowed["-/var/spool/postfix/roost"] = true
		}
		if len(rw) == 0 || rw[0] != "/var/vmail" {
			t.Errorf("roost-%s.service: ReadWritePaths=%v, want /var/vmail first", d, rw)
		}
		for _, p := range rw {
			if !allowed[p] {
				t.Errorf("roost-%s.service may write to %s", d, p)
			}
		}
	}
}
