package testenv

import (
	"bufio"
	"context"
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
)

// PostfixDir is where every private Postfix lives, in every package's
// tests: the system's /etc/postfix/main.cf must name PostfixDir/etc in
// alternate_config_directories, or `postfix -c` refuses to start, so the
// directory cannot vary. PostfixDir.lock serializes its users across test
// binaries (go test runs packages in parallel).
const PostfixDir = "/tmp/roost-postfix-e2e"

// postfixReadyTimeout bounds the wait for smtpd to accept connections.
const postfixReadyTimeout = 20 * time.Second

// PostfixOptions configures a private Postfix. The zero value is the base
// main.cf (loopback only, no local domains, maillog file, fast retries) and
// the system's master.cf with chroot off and smtpd on Postfix.Port.
type PostfixOptions struct {
	// MainSnippets are files (such as deploy/postfix/*.main.cf, relative to
	// the test's directory) appended to main.cf in order, after Paths.
	MainSnippets []string
	// Settings ("name = value") are applied last with postconf -e, which
	// replaces a snippet's value in place: a parameter defined twice makes
	// every Postfix process warn, and postlogd, logging its own warnings to
	// itself, then deadlocks.
	Settings []string
	// Master is appended to master.cf, after Paths.
	Master string
	// Paths rewrites install paths in MainSnippets and Master (say
	// /usr/bin/roostctl) to the test's; nil leaves them.
	Paths *strings.Replacer
}

// Postfix is a private Postfix instance on 127.0.0.1, running as the
// system's postfix user from PostfixDir.
type Postfix struct {
	Dir     string // PostfixDir; the test may keep its own files here
	Etc     string // config directory, for postfix/postsuper/postqueue -c
	Spool   string // queue_directory
	Maillog string // every Postfix process logs here (there is no syslog)
	Port    int    // smtpd listens on 127.0.0.1:Port

	t       testing.TB
	running bool
}

// StartPostfix takes the cross-package lock, recreates PostfixDir, makes
// the system's main.cf allow it (adding only alternate_config_directories,
// so a system Postfix keeps working), starts Postfix configured by opts and
// waits for smtpd. When the test ends Postfix stops and the lock is
// released; the directory is removed if the test passed and kept (with the
// maillog's end in the test log) if it failed. Without postfix, or not as
// root, the test is skipped, or fails with CI=true.
func StartPostfix(t testing.TB, opts PostfixOptions) *Postfix {
	t.Helper()
	Require(t, "postfix", "postfix")
	if os.Geteuid() != 0 {
		msg := "a private Postfix needs root (postfix start and set-permissions)"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	lock, err := os.OpenFile(PostfixDir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() }) // registered first, so it runs last

	p := &Postfix{Dir: PostfixDir, Etc: PostfixDir + "/etc", Spool: PostfixDir + "/spool",
		Maillog: PostfixDir + "/maillog", Port: FreePort(t), t: t}
	// A run killed hard may have left the instance running.
	p.running = true
	p.Stop()
	if err := os.RemoveAll(p.Dir); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{p.Etc, p.Spool, p.Dir + "/data"} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// data_directory must belong to postfix; set-permissions does the queue.
	postfixRun(t, "chown", "postfix", p.Dir+"/data")
	allowAlternateConfig(t, p.Etc)
	p.configure(opts)
	postfixRun(t, "postfix", "-c", p.Etc, "set-permissions")
	t.Cleanup(func() {
		p.Stop()
		if !t.Failed() {
			os.RemoveAll(p.Dir)
			return
		}
		if b, err := os.ReadFile(p.Maillog); err == nil {
			t.Logf("Postfix maillog (end; the instance is kept in %s):\n%s", p.Dir, tail(b, 8<<10))
		}
	})
	postfixRun(t, "postfix", "-c", p.Etc, "start")
	p.running = true
	p.waitSMTP()
	return p
}

// allowAlternateConfig makes /etc/postfix/main.cf list dir in
// alternate_config_directories, creating the file if missing and changing
// no other setting of the system's Postfix.
func allowAlternateConfig(t testing.TB, dir string) {
	t.Helper()
	const main = "/etc/postfix/main.cf"
	out, _ := exec.Command("postconf", "-h", "alternate_config_directories").Output()
	cur := strings.TrimSpace(string(out))
	for _, d := range strings.FieldsFunc(cur, func(r rune) bool { return r == ',' || r == ' ' }) {
		if d == dir {
			return
		}
	}
	if cur != "" {
		postfixRun(t, "postconf", "-e", "alternate_config_directories = "+cur+", "+dir)
		return
	}
	f, err := os.OpenFile(main, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString("\nalternate_config_directories = " + dir + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// configure writes main.cf and master.cf from opts.
func (p *Postfix) configure(opts PostfixOptions) {
	p.t.Helper()
	paths := func(s string) string {
		if opts.Paths == nil {
			return s
		}
		return opts.Paths.Replace(s)
	}
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
# Retry deferred mail quickly: tests wait for redelivery.
minimal_backoff_time = 1s
maximal_backoff_time = 2s
queue_run_delay = 1s
`, p.Dir)
	for _, s := range opts.MainSnippets {
		data, err := os.ReadFile(s)
		if err != nil {
			p.t.Fatal(err)
		}
		fmt.Fprintf(&b, "\n# ---- %s\n%s", s, paths(string(data)))
	}
	if err := os.WriteFile(filepath.Join(p.Etc, "main.cf"), []byte(b.String()), 0o644); err != nil {
		p.t.Fatal(err)
	}
	for _, s := range opts.Settings {
		postfixRun(p.t, "postconf", "-c", p.Etc, "-e", s)
	}

	// The system's master.cf with chroot off for every service (the
	// private queue has no chroot set up) and smtpd on the test's port.
	src, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		p.t.Fatal(err)
	}
	service := regexp.MustCompile(`^(\S+)\s+(inet|unix|unix-dgram|fifo|pass)\s+(\S+)\s+(\S+)\s+(\S+)\s+(.*)$`)
	b.Reset()
	for _, line := range strings.Split(string(src), "\n") {
		if m := service.FindStringSubmatch(line); m != nil {
			name := m[1]
			if name == "smtp" && m[2] == "inet" {
				name = "127.0.0.1:" + strconv.Itoa(p.Port)
			}
			line = fmt.Sprintf("%s %s %s %s n %s", name, m[2], m[3], m[4], m[6])
		}
		b.WriteString(line + "\n")
	}
	b.WriteString(paths(opts.Master))
	if err := os.WriteFile(filepath.Join(p.Etc, "master.cf"), []byte(b.String()), 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// Reconfigure rewrites main.cf and master.cf from opts (nothing of the
// previous options is kept) and reloads Postfix.
func (p *Postfix) Reconfigure(opts PostfixOptions) {
	p.t.Helper()
	p.configure(opts)
	postfixRun(p.t, "postfix", "-c", p.Etc, "reload")
	// reload only signals master(8); give it time to restart the services.
	time.Sleep(500 * time.Millisecond)
	p.waitSMTP()
}

func (p *Postfix) waitSMTP() {
	p.t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(p.Port)
	for deadline := time.Now().Add(postfixReadyTimeout); ; time.Sleep(100 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("Postfix smtpd did not listen on %s within %v", addr, postfixReadyTimeout)
		}
	}
}

// Stop stops Postfix, giving up after 30 seconds rather than hanging the
// test run. Queued mail stays in Spool. Stopping twice does nothing.
func (p *Postfix) Stop() {
	if !p.running {
		return
	}
	p.running = false
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	exec.CommandContext(ctx, "postfix", "-c", p.Etc, "stop").Run()
}

// Flush asks Postfix to retry deferred mail now.
func (p *Postfix) Flush() {
	exec.Command("postqueue", "-c", p.Etc, "-f").Run()
}

// PostfixStatus is one delivery attempt as the maillog reports it.
type PostfixStatus struct {
	QueueID   string
	MessageID string // from the message's Message-ID header, without <>
	Rcpt      string
	Agent     string // delivery agent: lmtp, virtual, pipe, local, ...
	Status    string // sent, deferred, bounced, expired
	Reply     string // the text in parentheses: the remote reply or reason
}

var (
	reMaillogMsgID  = regexp.MustCompile(`postfix/cleanup\[\d+\]: ([0-9A-F]+): message-id=<([^>]*)>`)
	reMaillogStatus = regexp.MustCompile(`postfix/(lmtp|virtual|pipe|local|smtp|discard|error)\[\d+\]: ([0-9A-F]+): to=<([^>]*)>.* status=(\w+) \((.*)\)$`)
)

// Deliveries parses the maillog: the latest status of every queue ID and
// recipient (keyed "queueID rcpt"), and all status lines in order.
func (p *Postfix) Deliveries() (last map[string]PostfixStatus, all []PostfixStatus) {
	f, err := os.Open(p.Maillog)
	if err != nil {
		return nil, nil
	}
	defer f.Close()
	ids := map[string]string{}
	last = map[string]PostfixStatus{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := reMaillogMsgID.FindStringSubmatch(line); m != nil {
			ids[m[1]] = m[2]
			continue
		}
		if m := reMaillogStatus.FindStringSubmatch(line); m != nil {
			s := PostfixStatus{QueueID: m[2], MessageID: ids[m[2]], Rcpt: m[3], Agent: m[1], Status: m[4], Reply: m[5]}
			last[s.QueueID+" "+s.Rcpt] = s
			all = append(all, s)
		}
	}
	return last, all
}

// WaitFinal waits until every Message-ID in want has a final status (sent
// or bounced) and returns those by Message-ID, flushing the queue every
// few seconds; after timeout the test fails.
func (p *Postfix) WaitFinal(want []string, timeout time.Duration) map[string]PostfixStatus {
	p.t.Helper()
	deadline, lastFlush := time.Now().Add(timeout), time.Now()
	for {
		last, _ := p.Deliveries()
		byID := map[string]PostfixStatus{}
		for _, s := range last {
			if s.Status == "sent" || s.Status == "bounced" {
				byID[s.MessageID] = s
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
			p.Flush()
			lastFlush = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// WaitStatus waits for a status line of the given kind for Message-ID id
// and returns the first; after timeout the test fails.
func (p *Postfix) WaitStatus(id, status string, timeout time.Duration) PostfixStatus {
	p.t.Helper()
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		_, all := p.Deliveries()
		for _, s := range all {
			if s.MessageID == id && s.Status == status {
				return s
			}
		}
	}
	p.t.Fatalf("no status=%s for <%s> within %v", status, id, timeout)
	return PostfixStatus{}
}

func postfixRun(t testing.TB, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// tail is the last n bytes of b, for failure messages.
func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
