package deb

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/deploy/internal/opstest"
)

// The private Postfix shares its directory and lock with the one of
// cmd/lmtpd's end-to-end test: the system's /etc/postfix/main.cf must list
// the directory in alternate_config_directories, and the lock keeps the
// two tests from using it at once.
const pfDir = "/tmp/roost-postfix-e2e"

// postfixDeliver starts a private Postfix on loopback configured from
// deploy/postfix/lmtp-virtual.main.cf, with virtual_transport pointing at
// socket (the installed package's lmtpd), sends one message for
// alice@example.edu over SMTP and waits until Postfix says status=sent.
func postfixDeliver(t *testing.T, socket, subject string) {
	t.Helper()
	lock, err := os.OpenFile(pfDir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	etc := pfDir + "/etc"
	stop := func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		exec.CommandContext(ctx, "postfix", "-c", etc, "stop").Run()
	}
	stop() // a run killed hard may have left it running
	if err := os.RemoveAll(pfDir); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{etc, pfDir + "/spool", pfDir + "/data"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "chown", "postfix", pfDir+"/data")
	allowAlternateConfig(t, etc)

	snippet, err := os.ReadFile("../postfix/lmtp-virtual.main.cf")
	if err != nil {
		t.Fatal(err)
	}
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.example.test
mydestination =
mynetworks = 127.0.0.0/8
maillog_file = %[1]s/maillog
maillog_file_prefixes = /tmp
alias_maps =
alias_database =
biff = no
smtputf8_enable = no
%[2]s`, pfDir, snippet)
	if err := os.WriteFile(etc+"/main.cf", []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	// The package's socket, absolute because this instance's queue is not
	// /var/spool/postfix (the guide's lmtp:unix:roost/lmtp is relative to it).
	run(t, "postconf", "-c", etc, "-e", "virtual_transport = lmtp:unix:"+socket)
	port := opstest.FreePort(t)
	writeMasterCf(t, etc+"/master.cf", port)
	run(t, "postfix", "-c", etc, "set-permissions")
	run(t, "postfix", "-c", etc, "start")
	defer func() {
		stop()
		if t.Failed() {
			if b, err := os.ReadFile(pfDir + "/maillog"); err == nil {
				t.Logf("Postfix maillog:\n%s", b)
			}
		}
	}()
	opstest.WaitFor(t, "Postfix smtpd", func() bool { return opstest.Listening(port) })

	send := fmt.Sprintf(`import smtplib; smtplib.SMTP("127.0.0.1", %d).sendmail("bob@example.org", ["alice@example.edu"], "Subject: %s\n\nhello from Postfix\n")`, port, subject)
	run(t, python, "-c", send)
	sent := regexp.MustCompile(`postfix/lmtp\[\d+\]: \w+: to=<alice@example.edu>.* status=sent`)
	opstest.WaitFor(t, "Postfix's delivery to lmtpd (status=sent)", func() bool {
		b, _ := os.ReadFile(pfDir + "/maillog")
		if sent.Match(b) {
			return true
		}
		exec.Command("postqueue", "-c", etc, "-f").Run()
		return false
	})
}

// allowAlternateConfig makes /etc/postfix/main.cf list dir in
// alternate_config_directories (postfix -c refuses otherwise), leaving
// every other setting of the system's Postfix alone.
func allowAlternateConfig(t *testing.T, dir string) {
	t.Helper()
	out, _ := exec.Command("postconf", "-h", "alternate_config_directories").Output()
	cur := strings.TrimSpace(string(out))
	for _, d := range strings.FieldsFunc(cur, func(r rune) bool { return r == ',' || r == ' ' }) {
		if d == dir {
			return
		}
	}
	if cur != "" {
		dir = cur + ", " + dir
	}
	if _, err := os.Stat("/etc/postfix/main.cf"); err != nil {
		if err := os.WriteFile("/etc/postfix/main.cf", nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(t, "postconf", "-e", "alternate_config_directories = "+dir)
}

// writeMasterCf copies the system's master.cf with chroot off for every
// service and smtpd on 127.0.0.1:port.
func writeMasterCf(t *testing.T, path string, port int) {
	t.Helper()
	src, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		t.Fatal(err)
	}
	service := regexp.MustCompile(`^(\S+)\s+(inet|unix|unix-dgram|fifo|pass)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.*)$`)
	var b strings.Builder
	for _, line := range strings.Split(string(src), "\n") {
		if m := service.FindStringSubmatch(line); m != nil {
			name := m[1]
			if name == "smtp" && m[2] == "inet" {
				name = "127.0.0.1:" + strconv.Itoa(port)
			}
			line = fmt.Sprintf("%s %s %s %s n %s", name, m[2], m[3], m[4], m[6])
		}
		b.WriteString(line + "\n")
	}
	if err := os.WriteFile(filepath.Clean(path), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}
