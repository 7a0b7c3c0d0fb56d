package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
)

// The private Postfix lives in a fixed directory because the system's
// /etc/postfix/main.cf must name it in alternate_config_directories;
// a lock file keeps two test runs from sharing it.
const pfDir = "/tmp/roost-postfix-e2e"

// postfix is a private Postfix instance on loopback, configured from the
// snippets in deploy/postfix.
type postfix struct {
	t       *testing.T
	dir     string
	etc     string
	spool   string
	maillog string
	port    int
	// paths maps the install paths in the snippets (/usr/bin/roostctl,
	// /etc/roost/roost.yaml) to the test's; nil leaves them.
	paths *strings.Replacer
}

// startPostfix prepares and starts the instance with main.cf made of the
// base settings, the named deploy/postfix snippets, and overrides (later
// lines win in main.cf).
func startPostfix(t *testing.T, snippets []string, overrides string) *postfix {
	t.Helper()
	testenv.Require(t, "postfix", "postfix")
	testenv.Require(t, "python3", "python3")
	if os.Geteuid() != 0 {
		msg := "the Postfix end-to-end test must run as root (postfix start needs it)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	lock, err := os.OpenFile(pfDir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })

	p := &postfix{t: t, dir: pfDir, etc: pfDir + "/etc", spool: pfDir + "/spool", maillog: pfDir + "/maillog", port: freePort(t)}
	// A previous run killed hard may have left the instance running.
	p.stop()
	if err := os.RemoveAll(pfDir); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{p.etc, p.spool, pfDir + "/data"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	mustRun(t, "chown", "postfix", pfDir+"/data")
	allowAlternateConfig(t, p.etc)
	p.writeMainCf(snippets, overrides)
	p.writeMasterCf("")
	mustRun(t, "postfix", "-c", p.etc, "set-permissions")
	mustRun(t, "postfix", "-c", p.etc, "start")
	t.Cleanup(func() {
		p.stop()
		if !t.Failed() {
			os.RemoveAll(pfDir)
			return
		}
		if b, err := os.ReadFile(p.maillog); err == nil {
			t.Logf("Postfix maillog (last 4 KB; the instance is kept in %s):\n%s", pfDir, tail(string(b), 4096))
		}
	})
	p.waitPort()
	return p
}

// allowAlternateConfig makes sure /etc/postfix/main.cf lists dir in
// alternate_config_directories, creating the file if missing and leaving
// every other setting of a system Postfix alone.
func allowAlternateConfig(t *testing.T, dir string) {
	const main = "/etc/postfix/main.cf"
	b, err := os.ReadFile(main)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	cur := strings.TrimSpace(postconf(t, "", "alternate_config_directories"))
	for _, d := range strings.FieldsFunc(cur, func(r rune) bool { return r == ',' || r == ' ' }) {
		if d == dir {
			return
		}
	}
	if cur != "" {
		mustRun(t, "postconf", "-e", "alternate_config_directories = "+cur+", "+dir)
		return
	}
	if err := os.WriteFile(main, append(b, []byte("\nalternate_config_directories = "+dir+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}
}

func postconf(t *testing.T, confDir, param string) string {
	args := []string{"-h", param}
	if confDir != "" {
		args = append([]string{"-c", confDir}, args...)
	}
	out, err := exec.Command("postconf", args...).Output()
	if err != nil {
		return ""
	}
	return string(out)
}

func (p *postfix) writeMainCf(snippets []string, overrides string) {
	p.t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, `# private test instance
compatibility_level = 3.6
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
# Retry deferred mail quickly: the tests wait for redelivery.
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
`, p.dir)
	for _, s := range snippets {
		data, err := os.ReadFile(filepath.Join("..", "..", "deploy", "postfix", s))
		if err != nil {
			p.t.Fatal(err)
		}
		fmt.Fprintf(&b, "\n# ---- deploy/postfix/%s\n%s", s, p.localPaths(string(data)))
	}
	if err := os.WriteFile(filepath.Join(p.etc, "main.cf"), []byte(b.String()), 0o644); err != nil {
		p.t.Fatal(err)
	}
	// Site-specific values (paths) replace the snippet's in place: a
	// parameter defined twice makes every Postfix process warn, and
	// postlogd, logging its own warnings to itself, then deadlocks.
	for _, line := range strings.Split(strings.TrimSpace(overrides), "\n") {
		if strings.TrimSpace(line) != "" {
			mustRun(p.t, "postconf", "-c", p.etc, "-e", line)
		}
	}
}

// writeMasterCf copies the system master.cf with chroot off for every
// service and smtpd on the test port, plus extra lines.
func (p *postfix) writeMasterCf(extra string) {
	p.t.Helper()
	src, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		p.t.Fatal(err)
	}
	service := regexp.MustCompile(`^(\S+)\s+(inet|unix|unix-dgram|fifo|pass)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.*)$`)
	var b strings.Builder
	for _, line := range strings.Split(string(src), "\n") {
		if m := service.FindStringSubmatch(line); m != nil {
			name := m[1]
			if name == "smtp" && m[2] == "inet" {
				name = "127.0.0.1:" + strconv.Itoa(p.port)
			}
			line = fmt.Sprintf("%s %s %s %s n %s", name, m[2], m[3], m[4], m[6])
		}
		b.WriteString(line + "\n")
	}
	b.WriteString(p.localPaths(extra))
	if err := os.WriteFile(filepath.Join(p.etc, "master.cf"), []byte(b.String()), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func (p *postfix) localPaths(s string) string {
	if p.paths == nil {
		return s
	}
	return p.paths.Replace(s)
}

// reconfigure rewrites main.cf (and master.cf extras) and reloads.
func (p *postfix) reconfigure(snippets []string, overrides, masterExtra string) {
	p.t.Helper()
	p.writeMainCf(snippets, overrides)
	p.writeMasterCf(masterExtra)
	mustRun(p.t, "postfix", "-c", p.etc, "reload")
	time.Sleep(500 * time.Millisecond)
}

func (p *postfix) waitPort() {
	p.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", p.port), time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.t.Fatalf("Postfix smtpd did not come up on port %d", p.port)
}

// stop stops the instance, giving up after 30 seconds rather than hanging
// the test run.
func (p *postfix) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exec.CommandContext(ctx, "postfix", "-c", p.etc, "stop").Run()
}

// flush asks Postfix to retry deferred mail now.
func (p *postfix) flush() {
	exec.Command("postqueue", "-c", p.etc, "-f").Run()
}

// logEntry is what the maillog says about one message and recipient.
type logEntry struct {
	queueID, messageID, rcpt, status, reply string
}

var (
	reMsgID  = regexp.MustCompile(`postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=<([^>]*)>`)
	reStatus = regexp.MustCompile(`postfix/(?:lmtp|virtual|pipe|local)\[\d+\]: ([0-9A-F]+): to=<([^>]*)>.* status=(\w+) \((.*)\)$`)
)

// deliveries parses the maillog: the final (latest) status line of every
// queue ID and recipient, plus all status lines in order.
func (p *postfix) deliveries() (last map[string]logEntry, all []logEntry) {
	f, err := os.Open(p.maillog)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	ids := map[string]string{}
	last = map[string]logEntry{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := reMsgID.FindStringSubmatch(line); m != nil {
			ids[m[1]] = m[2]
			continue
		}
		if m := reStatus.FindStringSubmatch(line); m != nil {
			e := logEntry{queueID: m[1], messageID: ids[m[1]], rcpt: m[2], status: m[3], reply: m[4]}
			last[m[1]+" "+m[2]] = e
			all = append(all, e)
		}
	}
	return last, all
}

// waitFinal waits until every message ID in want has a final status line
// (sent or bounced) and returns the final entries by message ID. While
// waiting it flushes the queue now and then.
func (p *postfix) waitFinal(want []string, timeout time.Duration) map[string]logEntry {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	lastFlush := time.Now()
	for {
		last, _ := p.deliveries()
		byID := map[string]logEntry{}
		for _, e := range last {
			if e.status == "sent" || e.status == "bounced" {
				byID[e.messageID] = e
			}
		}
		missing := 0
		for _, id := range want {
			if _, ok := byID[id]; !ok {
				missing++
			}
		}
		if missing == 0 {
			return byID
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%d of %d messages have no final delivery status after %v", missing, len(want), timeout)
		}
		if time.Since(lastFlush) > 3*time.Second {
			p.flush()
			lastFlush = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitStatus waits for a status line of the given kind for message ID id.
func (p *postfix) waitStatus(id, status string, timeout time.Duration) logEntry {
	p.t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		_, all := p.deliveries()
		for _, e := range all {
			if e.messageID == id && e.status == status {
				return e
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	p.t.Fatalf("no status=%s for <%s> within %v", status, id, timeout)
	return logEntry{}
}

// outMsg is one message for the Python sender.
type outMsg struct {
	From string   `json:"from"`
	To   []string `json:"to"`
	ID   string   `json:"id"`
	Body int      `json:"body"` // body size in bytes
}

// sendSMTP sends msgs to Postfix with Python's smtplib over `clients`
// concurrent connections and fails the test if any is refused.
func (p *postfix) sendSMTP(clients int, msgs []outMsg) {
	p.t.Helper()
	script := filepath.Join(p.t.TempDir(), "send.py")
	if err := os.WriteFile(script, []byte(senderPy), 0o600); err != nil {
		p.t.Fatal(err)
	}
	in, _ := json.Marshal(map[string]any{"port": p.port, "clients": clients, "messages": msgs})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", script)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("python smtplib sender: %v\n%s", err, out)
	}
}

// senderPy sends the messages described on stdin; each body ends with an
// END marker line so truncation is visible.
const senderPy = `
import json, smtplib, sys, threading
job = json.load(sys.stdin)
msgs = job["messages"]
errors = []
def work(part):
    s = smtplib.SMTP("127.0.0.1", job["port"], timeout=60)
    for i, m in enumerate(part):
        body = ("x" * 75 + "\n") * (m["body"] // 76) + "END " + m["id"] + "\n"
        data = ("From: <%s>\nTo: <%s>\nSubject: test %s\nMessage-ID: <%s>\n\n" % (m["from"], m["to"][0], m["id"], m["id"])) + body
        try:
            refused = s.sendmail(m["from"], m["to"], data)
            if refused:
                errors.append("%s: refused %r" % (m["id"], refused))
        except Exception as e:
            errors.append("%s: %r" % (m["id"], e))
        if i % 100 == 99:
            s.quit()
            s = smtplib.SMTP("127.0.0.1", job["port"], timeout=60)
    s.quit()
n = job["clients"]
threads = [threading.Thread(target=work, args=(msgs[k::n],)) for k in range(n)]
for t in threads: t.start()
for t in threads: t.join()
if errors:
    print("\n".join(errors)); sys.exit(1)
`

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
