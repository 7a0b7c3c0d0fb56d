// Package deb tests the Debian package that `make deb` builds
// (deploy/deb/build): it installs it with dpkg on this machine, checks the
// files, the vmail user and the units, upgrades it keeping a changed
// conffile, and purges it, checking that everything Roost created is gone
// except mail. It needs root; in CI (CI=true) a missing dpkg-deb is a
// failure, elsewhere a skip.
package deb

import (
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/deploy/internal/opstest"
	"github.com/roost-mail/roost/internal/testenv"
)

// python is Debian's, which the postfix user can run (unlike a private
// install under /root).
const python = "/usr/bin/python3"

var installed = []string{
	"/usr/sbin/roost-imapd",
	"/usr/sbin/roost-pop3d",
	"/usr/sbin/roost-lmtpd",
	"/usr/bin/roostctl",
	"/lib/systemd/system/roost-imapd.service",
	"/lib/systemd/system/roost-pop3d.service",
	"/lib/systemd/system/roost-lmtpd.service",
	"/etc/roost/roost.yaml",
	"/usr/share/doc/roost/copyright",
	"/usr/share/doc/roost/examples/fail2ban/filter.d/roost.conf",
}

// run runs a command, retrying while another dpkg or apt holds the lock
// (other work on this machine may be installing packages).
func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err == nil {
			return string(out)
		}
		if strings.Contains(string(out), "lock") && time.Now().Before(deadline) {
			time.Sleep(time.Second)
			continue
		}
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func build(t *testing.T, root, bin, out, version string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(root, "deploy/deb/build"))
	cmd.Env = append(os.Environ(), "BIN="+bin, "OUT="+out, "VERSION="+version)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("deploy/deb/build: %v\n%s", err, b)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return lines[len(lines)-1]
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

func installedVersion(t *testing.T) string {
	out, err := exec.Command("dpkg-query", "-W", "-f", "${Status} ${Version}", "roost").Output()
	if err != nil {
		return ""
	}
	f := strings.Fields(string(out))
	if len(f) != 4 || f[2] != "installed" {
		return ""
	}
	return f[3]
}

// cannotRun ends a test this machine cannot host: a failure in CI, which
// runs as root on a clean machine, and a skip elsewhere.
func cannotRun(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

func TestPackageInstallUpgradePurge(t *testing.T) {
	// Everything the test needs is checked here: a skip further in would
	// leave the package installed until the cleanup purges it.
	testenv.Require(t, "dpkg-deb", "dpkg")
	testenv.Require(t, "adduser", "adduser")
	testenv.Require(t, "setpriv", "util-linux")
	testenv.Require(t, "openssl", "openssl")
	testenv.Require(t, "postfix", "postfix")
	curl := testenv.Require(t, "curl", "curl")
	if !exists(python) {
		cannotRun(t, python+" is missing: apt-get install python3")
	}
	if os.Geteuid() != 0 {
		cannotRun(t, "installing a package needs root")
	}
	if v := installedVersion(t); v != "" {
		cannotRun(t, "roost "+v+" is installed on this machine; the test will not touch it")
	}
	const socketDir = "/var/spool/postfix/roost"
	if exists("/var/vmail") || exists("/etc/roost") || exists(socketDir) {
		cannotRun(t, "/var/vmail, /etc/roost or "+socketDir+" exists; the test will not touch them")
	}
	_, err := user.LookupGroup("postfix")
	postfix := err == nil && exists("/var/spool/postfix")
	_, err = user.Lookup("vmail")
	hadVmail := err == nil

	root := opstest.Root(t)
	bin, out := opstest.Build(t, "imapd", "pop3d", "lmtpd", "roostctl"), t.TempDir()
	v1 := build(t, root, bin, out, "0.0.1~test")
	v2 := build(t, root, bin, out, "0.0.2~test")
	t.Cleanup(func() {
		if installedVersion(t) != "" {
			exec.Command("dpkg", "--purge", "roost").Run()
		}
	})

	// The package's own metadata.
	info := run(t, "dpkg-deb", "--info", v1)
	for _, want := range []string{"Package: roost", "Version: 0.0.1~test", "Depends: adduser", "conffiles"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb --info lacks %q:\n%s", want, info)
		}
	}

	// Install.
	run(t, "dpkg", "-i", v1)
	if v := installedVersion(t); v != "0.0.1~test" {
		t.Fatalf("installed version %q, want 0.0.1~test", v)
	}
	for _, p := range installed {
		if !exists(p) {
			t.Errorf("%s not installed", p)
		}
	}
	u, err := user.Lookup("vmail")
	if err != nil {
		t.Fatalf("postinst did not create the vmail user: %v", err)
	}
	st, err := os.Stat("/var/vmail")
	if err != nil {
		t.Fatalf("postinst did not create /var/vmail: %v", err)
	}
	if sys := st.Sys().(*syscall.Stat_t); st.Mode().Perm() != 0o700 || u.Uid != strconv.FormatUint(uint64(sys.Uid), 10) {
		t.Errorf("/var/vmail is %v owned by %d, want 0700 owned by vmail (%s)", st.Mode().Perm(), sys.Uid, u.Uid)
	}
	if st, err := os.Stat("/etc/roost/users"); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("/etc/roost/users: %v; want an empty 0640 file", err)
	}
	// lmtpd's socket directory, where Postfix can reach it.
	if postfix {
		st, err := os.Stat(socketDir)
		if err != nil || st.Mode()&os.ModeSetgid == 0 || st.Mode().Perm() != 0o750 {
			t.Errorf("%s: %v; want a setgid 0750 directory", socketDir, err)
		} else if g, _ := user.LookupGroupId(strconv.FormatUint(uint64(st.Sys().(*syscall.Stat_t).Gid), 10)); g == nil || g.Name != "postfix" {
			t.Errorf("%s does not belong to group postfix", socketDir)
		}
	}
	// The installed config is valid for the installed roostctl, and the
	// installed units pass systemd's checker with the real binaries.
	run(t, "/usr/bin/roostctl", "--config", "/etc/roost/roost.yaml", "config", "check")
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		for _, d := range []string{"imapd", "pop3d", "lmtpd"} {
			if out := run(t, "systemd-analyze", "verify", "/lib/systemd/system/roost-"+d+".service"); strings.TrimSpace(out) != "" {
				t.Errorf("installed roost-%s.service: %s", d, out)
			}
		}
	}

	if postfix {
		adminGuideDelivery(t, socketDir, curl)
	}

	// Upgrade keeps an admin's change to the conffile.
	f, err := os.OpenFile("/etc/roost/roost.yaml", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("# changed by the admin\n")
	f.Close()
	run(t, "dpkg", "--force-confold", "-i", v2)
	if v := installedVersion(t); v != "0.0.2~test" {
		t.Fatalf("after upgrade the version is %q, want 0.0.2~test", v)
	}
	if b, _ := os.ReadFile("/etc/roost/roost.yaml"); !strings.Contains(string(b), "# changed by the admin") {
		t.Error("upgrade overwrote the admin's /etc/roost/roost.yaml")
	}

	// Purge with mail present: Roost's files go, the mail and its owner stay.
	mail := "/var/vmail/alice/Maildir/new/1.test"
	if err := os.MkdirAll(filepath.Dir(mail), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mail, []byte("Subject: keep me\n\nhello\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "--purge", "roost")
	for _, p := range append(installed, "/etc/roost/users", "/etc/roost", socketDir) {
		if exists(p) {
			t.Errorf("%s left after purge", p)
		}
	}
	if !exists(mail) {
		t.Fatal("purge deleted mail in /var/vmail")
	}
	if _, err := user.Lookup("vmail"); err != nil {
		t.Error("purge removed the vmail user although it still owns mail")
	}

	// Without mail, purge leaves nothing behind (not even the user it made).
	if err := os.RemoveAll("/var/vmail/alice"); err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "-i", v2)
	run(t, "dpkg", "--purge", "roost")
	for _, p := range []string{"/var/vmail", "/etc/roost", "/var/lib/roost"} {
		if exists(p) {
			t.Errorf("%s left after purge", p)
		}
	}
	if _, err := user.Lookup("vmail"); (err == nil) != hadVmail {
		t.Errorf("vmail user exists after purge: %v; it existed before the test: %v", err == nil, hadVmail)
	}
}

// adminGuideDelivery follows docs/admin.md on the installed package: the
// daemons run as vmail (as the units start them), lmtpd makes its socket in
// the package's directory inside Postfix's queue, the postfix user and then
// a real Postfix deliver through it, and the messages are read over IMAP
// and POP3 with TLS.
func adminGuideDelivery(t *testing.T, socketDir, curl string) {
	t.Helper()
	// Everything made here goes before the function returns, so that the
	// purge that follows finds only what the package made.
	cfg, tlsDir := "/etc/roost/test.yaml", "/etc/roost/tls"
	defer func() {
		os.Remove(cfg)
		os.RemoveAll(tlsDir)
		os.RemoveAll("/var/vmail/alice")
	}()
	if err := os.WriteFile("/etc/roost/users", []byte("alice:{PLAIN}alice-secret::::::\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(tlsDir, 0o750); err != nil {
		t.Fatal(err)
	}
	run(t, "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
		"-days", "2", "-subj", "/CN=localhost", "-keyout", tlsDir+"/key.pem", "-out", tlsDir+"/cert.pem")
	run(t, "chgrp", "-R", "vmail", tlsDir)
	run(t, "chmod", "0640", tlsDir+"/key.pem", tlsDir+"/cert.pem")
	imaps, pop3s := testenv.FreePort(t), testenv.FreePort(t)
	socket := socketDir + "/lmtp"
	conf := fmt.Sprintf(`mail: {root: /var/vmail}
imap: {listen: [], listen_tls: ["127.0.0.1:%d"]}
pop3: {listen: [], listen_tls: ["127.0.0.1:%d"]}
lmtp: {listen: ["unix:%s"], local_domains: [example.edu]}
tls: {cert_file: %s/cert.pem, key_file: %s/key.pem}
`, imaps, pop3s, socket, tlsDir, tlsDir)
	if err := os.WriteFile(cfg, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	var logs opstest.Buffer
	for _, d := range []string{"lmtpd", "imapd", "pop3d"} {
		cmd := exec.Command("setpriv", "--reuid=vmail", "--regid=vmail", "--init-groups",
			"/usr/sbin/roost-"+d, "--config", cfg)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer func() {
			cmd.Process.Signal(syscall.SIGTERM)
			cmd.Wait()
		}()
	}
	defer func() {
		if t.Failed() {
			t.Logf("daemon logs:\n%s", logs.String())
		}
	}()
	opstest.WaitFor(t, "lmtpd's socket "+socket, func() bool {
		st, err := os.Stat(socket)
		return err == nil && st.Mode()&os.ModeSocket != 0
	})
	opstest.WaitFor(t, "imapd and pop3d", func() bool { return opstest.Listening(imaps) && opstest.Listening(pop3s) })

	// Postfix's lmtp client runs as user postfix.
	send := `import smtplib; smtplib.LMTP("` + socket + `").sendmail("bob@example.org", ["alice@example.edu"], "Subject: via lmtp\n\nhello alice\n")`
	run(t, "setpriv", "--reuid=postfix", "--regid=postfix", "--init-groups", python, "-c", send)

	news, _ := filepath.Glob("/var/vmail/alice/Maildir/new/*")
	if len(news) != 1 {
		t.Fatalf("after delivery new/ holds %v, want one message", news)
	}
	if st, err := os.Stat(news[0]); err != nil || st.Sys().(*syscall.Stat_t).Uid == 0 {
		t.Errorf("delivered file %s belongs to root, want vmail", news[0])
	}

	// And through a real Postfix configured from deploy/postfix.
	postfixDeliver(t, socket, "via postfix")

	for n, subject := range []string{"via lmtp", "via postfix"} {
		for _, url := range []string{
			fmt.Sprintf("imaps://localhost:%d/INBOX;UID=%d", imaps, n+1),
			fmt.Sprintf("pop3s://localhost:%d/%d", pop3s, n+1),
		} {
			out := run(t, curl, "-sS", "--cacert", tlsDir+"/cert.pem", "--user", "alice:alice-secret", url)
			if !strings.Contains(out, "Subject: "+subject) {
				t.Errorf("%s did not return the message sent %s:\n%s", url, subject, out)
			}
		}
	}
}
