package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/internal/testenv"
	"github.com/roost-mail/roost/maildir"
)

// The end-to-end test: a private Postfix (deploy/postfix snippets) delivers
// through the real lmtpd binary into Maildirs that the test then reads
// through the store, as imapd and pop3d would.

// roost is the Roost side of the test: binaries, config, mail root.
type roost struct {
	t        *testing.T
	bin      string // directory with lmtpd and roostctl
	config   string
	mailRoot string
	logFile  string
	lmtpd    *exec.Cmd
	socket   string
}

const e2eUsers = `alice@example.edu:{PLAIN}pw
carol@example.edu:{PLAIN}pw
full@example.edu:{PLAIN}pw::::::userdb_quota_rule=*:bytes=5000
bulk@example.edu:{PLAIN}pw
crash@example.edu:{PLAIN}pw
bob@example.edu:{PLAIN}pw
nobody:{PLAIN}pw
lda@example.edu:{PLAIN}pw
ldafull@example.edu:{PLAIN}pw::::::userdb_quota_rule=*:bytes=1000
`

func newRoost(t *testing.T, pf *testenv.Postfix) *roost {
	t.Helper()
	// Binaries under pf.Dir (0755), so pipe(8) can run roostctl as nobody.
	r := &roost{t: t, bin: filepath.Join(pf.Dir, "bin"), mailRoot: filepath.Join(pf.Dir, "vmail"),
		socket: filepath.Join(pf.Spool, "roost", "lmtp"), logFile: filepath.Join(pf.Dir, "lmtpd.log")}
	// The socket directory the roost package makes in Postfix's queue.
	if err := os.MkdirAll(filepath.Dir(r.socket), 0o750); err != nil {
		t.Fatal(err)
	}
	mustRun(t, "chgrp", "postfix", filepath.Dir(r.socket))
	mustRun(t, "chmod", "2750", filepath.Dir(r.socket))
	for _, b := range []struct{ out, pkg string }{{"lmtpd", "."}, {"roostctl", "../roostctl"}} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(r.bin, b.out), b.pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", b.pkg, err, out)
		}
	}
	if err := os.MkdirAll(r.mailRoot, 0o755); err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(pf.Dir, "users")
	if err := os.WriteFile(users, []byte(e2eUsers), 0o600); err != nil {
		t.Fatal(err)
	}
	r.config = filepath.Join(pf.Dir, "roost.yaml")
	cfg := fmt.Sprintf(`mail:
  root: %s
  fsync: true
auth:
  backend: file
  file:
    path: %s
lmtp:
  listen: ["unix:%s"]
  hostname: mx.example.test
  local_domains: [mx.example.test]
security:
  allow_root: true
log:
  level: info
`, r.mailRoot, users, r.socket)
	if err := os.WriteFile(r.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		r.stopLmtpd()
		if t.Failed() {
			if b, err := os.ReadFile(r.logFile); err == nil {
				t.Logf("lmtpd log (last 4 KB):\n%s", tail(string(b), 4096))
			}
		}
	})
	return r
}

// startLmtpd starts the real binary and waits until its socket answers.
func (r *roost) startLmtpd() {
	r.t.Helper()
	logf, err := os.OpenFile(r.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		r.t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(r.bin, "lmtpd"), "--config", r.config)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		r.t.Fatal(err)
	}
	r.lmtpd = cmd
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("unix", r.socket, time.Second); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	r.t.Fatalf("lmtpd did not listen on %s", r.socket)
}

func (r *roost) stopLmtpd() {
	if r.lmtpd == nil {
		return
	}
	r.lmtpd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { r.lmtpd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		r.lmtpd.Process.Kill()
		<-done
	}
	r.lmtpd = nil
}

func (r *roost) killLmtpd() {
	r.lmtpd.Process.Kill()
	r.lmtpd.Wait()
	r.lmtpd = nil
}

// roostctl runs the real roostctl binary with the test config.
func (r *roost) roostctl(args ...string) (string, error) {
	cmd := exec.Command(filepath.Join(r.bin, "roostctl"), append([]string{"--config", r.config}, args...)...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// readMsg is a message as the store (and so imapd/pop3d) presents it.
type readMsg struct {
	uid  backend.UID
	size int64
	id   string
	body string
}

// mailbox returns user's INBOX through a fresh maildir store.
func (r *roost) mailbox(user string) []readMsg {
	r.t.Helper()
	ctx := context.Background()
	local, domain, _ := strings.Cut(user, "@")
	acct := backend.Account{Name: user, Maildir: filepath.Join(r.mailRoot, domain, local, "Maildir"), UID: -1, GID: -1}
	u, err := maildir.New(maildir.Options{}).Open(ctx, acct)
	if err != nil {
		r.t.Fatal(err)
	}
	defer u.Close()
	mb, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		r.t.Fatal(err)
	}
	defer mb.Close()
	snap, err := mb.Sync(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	out := make([]readMsg, 0, len(snap.Messages()))
	for _, m := range snap.Messages() {
		rc, err := mb.OpenMessage(ctx, m.UID)
		if err != nil {
			r.t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			r.t.Fatal(err)
		}
		size := m.Size
		if size < 0 { // a Postfix file the store has not measured yet
			if size, err = mb.MessageSize(ctx, m.UID); err != nil {
				r.t.Fatal(err)
			}
		}
		if int64(len(b)) != size {
			r.t.Errorf("%s UID %d: size %d, but %d octets read", user, m.UID, size, len(b))
		}
		h, _ := textproto.NewReader(bufio.NewReader(strings.NewReader(string(b)))).ReadMIMEHeader()
		out = append(out, readMsg{uid: m.UID, size: size, id: strings.Trim(h.Get("Message-Id"), "<>"), body: string(b)})
	}
	return out
}

// checkIntact fails unless every message ends with its END marker, and
// returns how many times each Message-ID occurs.
func checkIntact(t *testing.T, msgs []readMsg) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, m := range msgs {
		if !strings.HasSuffix(m.body, "END "+m.id+"\r\n") {
			t.Errorf("UID %d <%s> is truncated or damaged (ends %q)", m.uid, m.id, tail(m.body, 40))
		}
		seen[m.id]++
	}
	return seen
}

func noTmpLeftovers(t *testing.T, maildirPath string) {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(maildirPath, "tmp"))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) > 0 {
		t.Errorf("%d files left in %s/tmp", len(entries), maildirPath)
	}
}

func msgs(prefix, to string, n, body int) ([]outMsg, []string) {
	var out []outMsg
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%04d@test.example", prefix, i)
		out = append(out, outMsg{From: "sender@example.org", To: []string{to}, ID: id, Body: body})
		ids = append(ids, id)
	}
	return out, ids
}

// postfixSnippet is the path of a file in deploy/postfix (a main.cf or
// master.cf snippet, or the vmailbox map).
func postfixSnippet(name string) string {
	return filepath.Join("..", "..", "deploy", "postfix", name)
}

var reSaved = regexp.MustCompile(`Saved UID (\d+) in (\S+)`)

func TestPostfixEndToEnd(t *testing.T) {
	testenv.Require(t, "python3", "python3")
	pf := testenv.StartPostfix(t, testenv.PostfixOptions{MainSnippets: []string{postfixSnippet("lmtp-virtual.main.cf")}})
	r := newRoost(t, pf)
	r.startLmtpd()
	// reconfigure loads one deploy/postfix snippet, with its install paths
	// pointing at the test's roostctl and config.
	paths := strings.NewReplacer("/usr/bin/roostctl", filepath.Join(r.bin, "roostctl"), "/etc/roost/roost.yaml", r.config)
	reconfigure := func(snippet, master string, settings ...string) {
		t.Helper()
		pf.Reconfigure(testenv.PostfixOptions{MainSnippets: []string{postfixSnippet(snippet)}, Settings: settings, Master: master, Paths: paths})
	}

	t.Run("delivered through lmtpd", func(t *testing.T) {
		out, ids := msgs("basic", "alice@example.edu", 3, 3000)
		out[2].To = []string{"alice@example.edu", "carol@example.edu"}
		sendSMTP(t, pf.Port, 1, out)
		pf.WaitFinal(ids, 60*time.Second)
		final := map[string]testenv.PostfixStatus{}
		last, _ := pf.Deliveries()
		for _, e := range last {
			if e.Rcpt == "alice@example.edu" {
				final[e.MessageID] = e
			}
		}
		inbox := r.mailbox("alice@example.edu")
		if len(inbox) != 3 {
			t.Fatalf("alice has %d messages, want 3", len(inbox))
		}
		checkIntact(t, inbox)
		for _, m := range inbox {
			e := final[m.id]
			sm := reSaved.FindStringSubmatch(e.Reply)
			if e.Status != "sent" || sm == nil {
				t.Errorf("<%s>: Postfix says %s (%s), want sent with a Saved UID reply", m.id, e.Status, e.Reply)
				continue
			}
			if uid, _ := strconv.Atoi(sm[1]); backend.UID(uid) != m.uid {
				t.Errorf("<%s>: lmtpd acknowledged UID %d, the store shows UID %d", m.id, uid, m.uid)
			}
			if !strings.Contains(m.body, "Delivered-To: alice@example.edu\r\n") || !strings.Contains(m.body, "Return-Path: <sender@example.org>\r\n") {
				t.Errorf("<%s>: no Delivered-To/Return-Path added", m.id)
			}
		}
		if got := r.mailbox("carol@example.edu"); len(got) != 1 || got[0].id != ids[2] {
			t.Errorf("carol: %d messages, want the one addressed to both", len(got))
		}
	})

	t.Run("seen by IMAP (UID, RFC822.SIZE, IDLE) and POP3", func(t *testing.T) {
		checkClients(t, r, pf, "alice@example.edu")
	})

	t.Run("over quota defers with 4.2.2 and writes nothing", func(t *testing.T) {
		first, ids := msgs("quota", "full@example.edu", 2, 2500)
		sendSMTP(t, pf.Port, 1, first[:1])
		pf.WaitFinal(ids[:1], 60*time.Second)
		sendSMTP(t, pf.Port, 1, first[1:])
		e := pf.WaitStatus(ids[1], "deferred", 60*time.Second)
		if !strings.Contains(e.Reply, "452 4.2.2") {
			t.Errorf("deferral reply %q, want 452 4.2.2", e.Reply)
		}
		if got := r.mailbox("full@example.edu"); len(got) != 1 {
			t.Errorf("full@ has %d messages, want 1 (the second deferred)", len(got))
		}
		mustRun(t, "postsuper", "-c", pf.Etc, "-d", e.QueueID)
	})

	t.Run("unknown recipient bounces with 5.1.1", func(t *testing.T) {
		out, ids := msgs("unknown", "nobody@example.edu", 1, 100)
		sendSMTP(t, pf.Port, 1, out)
		e := pf.WaitFinal(ids, 60*time.Second)[ids[0]]
		if e.Status != "bounced" || !strings.Contains(e.Reply, "550 5.1.1") {
			t.Errorf("unknown recipient: status=%s (%s), want bounced 550 5.1.1", e.Status, e.Reply)
		}
		if _, err := os.Stat(filepath.Join(r.mailRoot, "example.edu", "nobody")); !os.IsNotExist(err) {
			t.Errorf("something was written for the unknown user: %v", err)
		}
	})

	t.Run("1000 messages from 4 clients, each exactly once", func(t *testing.T) {
		out, ids := msgs("burst", "bulk@example.edu", 1000, 1500)
		start := time.Now()
		sendSMTP(t, pf.Port, 4, out)
		final := pf.WaitFinal(ids, 150*time.Second)
		t.Logf("1000 messages through Postfix and lmtpd in %v", time.Since(start).Round(time.Millisecond))
		for _, id := range ids {
			if final[id].Status != "sent" {
				t.Fatalf("<%s>: status=%s (%s)", id, final[id].Status, final[id].Reply)
			}
		}
		inbox := r.mailbox("bulk@example.edu")
		seen := checkIntact(t, inbox)
		for _, id := range ids {
			if seen[id] != 1 {
				t.Errorf("<%s> stored %d times, want 1", id, seen[id])
			}
		}
		if len(inbox) != 1000 {
			t.Errorf("%d messages stored, want 1000", len(inbox))
		}
		for i := 1; i < len(inbox); i++ {
			if inbox[i].uid <= inbox[i-1].uid {
				t.Fatalf("UIDs not strictly increasing: %d after %d", inbox[i].uid, inbox[i-1].uid)
			}
		}
		noTmpLeftovers(t, filepath.Join(r.mailRoot, "example.edu", "bulk", "Maildir"))
	})

	t.Run("lmtpd killed with SIGKILL during 200 deliveries", func(t *testing.T) {
		out, ids := msgs("crash", "crash@example.edu", 200, 20000)
		sent := make(chan struct{})
		go func() { sendSMTP(t, pf.Port, 4, out); close(sent) }()
		kills := 0
		deadline := time.Now().Add(60 * time.Second)
		for done := false; !done && time.Now().Before(deadline); {
			time.Sleep(time.Duration(150+rand.IntN(500)) * time.Millisecond)
			r.killLmtpd()
			kills++
			time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
			r.startLmtpd()
			pf.Flush()
			last, _ := pf.Deliveries()
			n := 0
			for _, e := range last {
				if e.Status == "sent" && strings.HasPrefix(e.MessageID, "crash-") {
					n++
				}
			}
			select {
			case <-sent:
				// Stop near the end, after enough kills to matter.
				done = n >= len(ids)-20 && kills >= 8
			default:
			}
		}
		<-sent
		final := pf.WaitFinal(ids, 120*time.Second)
		logData, _ := os.ReadFile(r.logFile)
		t.Logf("lmtpd killed %d times; %d retried deliveries were recognised as already stored", kills,
			strings.Count(string(logData), "interrupted delivery found stored")+strings.Count(string(logData), "duplicate delivery suppressed"))
		if kills < 3 {
			t.Errorf("only %d kills: the test did not exercise crashes", kills)
		}
		inbox := r.mailbox("crash@example.edu")
		seen := checkIntact(t, inbox)
		for _, id := range ids {
			if final[id].Status != "sent" {
				t.Errorf("<%s>: final status=%s (%s)", id, final[id].Status, final[id].Reply)
			}
			if seen[id] != 1 {
				t.Errorf("<%s>: acknowledged to Postfix, stored %d times", id, seen[id])
			}
		}
	})
	t.Run("local users via mailbox_transport", func(t *testing.T) {
		// local(8) delivers to the system user nobody, handing the mailbox
		// delivery to lmtpd as nobody@mx.example.test.
		reconfigure("lmtp-local.main.cf", "", "mydestination = mx.example.test")
		out, ids := msgs("local", "nobody@mx.example.test", 1, 500)
		sendSMTP(t, pf.Port, 1, out)
		e := pf.WaitFinal(ids, 60*time.Second)[ids[0]]
		if e.Status != "sent" || !strings.Contains(e.Reply, "Saved UID") {
			t.Fatalf("status=%s (%s), want sent by lmtpd", e.Status, e.Reply)
		}
		md := filepath.Join(r.mailRoot, "nobody", "Maildir")
		if _, err := os.Stat(md); err != nil {
			t.Fatalf("nobody's Maildir: %v", err)
		}
	})
	r.stopLmtpd()

	t.Run("Postfix virtual(8) writes the Maildir, Roost reads it", func(t *testing.T) {
		vmailbox := filepath.Join(pf.Etc, "vmailbox")
		data, err := os.ReadFile(postfixSnippet("vmailbox"))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vmailbox, data, 0o644); err != nil {
			t.Fatal(err)
		}
		// virtual(8) runs as the snippet's static:5000.
		for _, d := range []string{r.mailRoot, filepath.Join(r.mailRoot, "example.edu")} {
			if err := os.Chown(d, 5000, 5000); err != nil {
				t.Fatal(err)
			}
		}
		reconfigure("virtual-maildir.main.cf", "",
			"virtual_mailbox_base = "+r.mailRoot, "virtual_mailbox_maps = texthash:"+vmailbox)
		out, ids := msgs("virtual", "bob@example.edu", 2, 5000)
		sendSMTP(t, pf.Port, 1, out)
		final := pf.WaitFinal(ids, 60*time.Second)
		for _, id := range ids {
			if final[id].Status != "sent" {
				t.Fatalf("<%s>: status=%s (%s)", id, final[id].Status, final[id].Reply)
			}
		}
		md := filepath.Join(r.mailRoot, "example.edu", "bob", "Maildir")
		files, _ := filepath.Glob(filepath.Join(md, "new", "*"))
		postfixName := regexp.MustCompile(`^\d+\.V[0-9a-f]+I[0-9a-f]+M\d+\.`)
		var fileBytes int64
		for _, f := range files {
			if !postfixName.MatchString(filepath.Base(f)) {
				t.Errorf("%s: not a Postfix Maildir name", filepath.Base(f))
			}
			fi, _ := os.Stat(f)
			fileBytes += fi.Size()
		}
		if len(files) != 2 {
			t.Fatalf("virtual(8) wrote %d files, want 2", len(files))
		}
		inbox := r.mailbox("bob@example.edu")
		checkIntact(t, inbox)
		for _, m := range inbox {
			// Postfix writes LF; the store serves CRLF and counts it.
			lines := strings.Count(m.body, "\r\n")
			if m.size != int64(len(strings.ReplaceAll(m.body, "\r\n", "\n"))+lines) {
				t.Errorf("UID %d: size %d is not the CRLF size of the LF file", m.uid, m.size)
			}
		}
		if len(inbox) != 2 {
			t.Fatalf("the store sees %d messages, want 2", len(inbox))
		}
		if out, err := r.roostctl("quota", "recalc", "bob@example.edu"); err != nil {
			t.Fatalf("roostctl quota recalc: %v\n%s", err, out)
		}
		out2, err := r.roostctl("quota", "get", "bob@example.edu", "--json")
		if err != nil {
			t.Fatalf("roostctl quota get: %v\n%s", err, out2)
		}
		var q struct {
			UsedBytes int64 `json:"used_bytes"`
			Messages  int64 `json:"messages"`
		}
		if err := json.Unmarshal([]byte(out2), &q); err != nil {
			t.Fatalf("quota get --json: %v\n%s", err, out2)
		}
		if q.Messages != 2 || q.UsedBytes != fileBytes {
			t.Errorf("quota after recalc: %d messages, %d bytes; want 2 and %d (the files' sizes)", q.Messages, q.UsedBytes, fileBytes)
		}
	})

	t.Run("roostctl deliver as an LDA through pipe(8)", func(t *testing.T) {
		// The pipe runs as nobody: it must read the config and write Maildirs.
		for _, f := range []string{r.config, filepath.Join(pf.Dir, "users")} {
			if err := os.Chmod(f, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		for _, d := range []string{r.mailRoot, filepath.Join(r.mailRoot, "example.edu")} {
			if err := os.Chown(d, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
		master, err := os.ReadFile(postfixSnippet("lda.master.cf"))
		if err != nil {
			t.Fatal(err)
		}
		entry := strings.ReplaceAll(string(master), "user=vmail", "user=nobody")
		reconfigure("lmtp-virtual.main.cf", entry, "virtual_transport = roost-lda")

		out, ids := msgs("lda", "lda@example.edu", 2, 800)
		full, fullIDs := msgs("ldafull", "ldafull@example.edu", 1, 3000)
		unknown, unknownIDs := msgs("ldaunknown", "nosuchuser@example.edu", 1, 100)
		sendSMTP(t, pf.Port, 1, append(append(out, full...), unknown...))
		final := pf.WaitFinal(append(ids, unknownIDs...), 60*time.Second)
		for _, id := range ids {
			if final[id].Status != "sent" {
				t.Errorf("<%s>: status=%s (%s)", id, final[id].Status, final[id].Reply)
			}
		}
		if e := final[unknownIDs[0]]; e.Status != "bounced" {
			t.Errorf("unknown user via the LDA: status=%s (%s), want bounced", e.Status, e.Reply)
		}
		if e := pf.WaitStatus(fullIDs[0], "deferred", 60*time.Second); !strings.Contains(e.Reply, "4.2.2") {
			t.Errorf("over quota via the LDA: %q, want a deferral with 4.2.2", e.Reply)
		}
		inbox := r.mailbox("lda@example.edu")
		checkIntact(t, inbox)
		if len(inbox) != 2 {
			t.Fatalf("lda@ has %d messages, want 2", len(inbox))
		}
		for _, m := range inbox {
			if !strings.Contains(m.body, "Delivered-To: lda@example.edu\r\n") || !strings.Contains(m.body, "Return-Path: <sender@example.org>\r\n") {
				t.Errorf("UID %d: pipe(8) flags D and R did not add Delivered-To and Return-Path", m.uid)
			}
		}
		if got := r.mailbox("ldafull@example.edu"); len(got) != 0 {
			t.Errorf("ldafull@ has %d messages, want 0", len(got))
		}
	})

	t.Run("roostctl deliver as local(8)'s mailbox_command", func(t *testing.T) {
		// local(8) runs the command as the recipient, nobody.
		md := filepath.Join(r.mailRoot, "nobody")
		mustRun(t, "chown", "-R", "nobody", md)
		reconfigure("lda-local.main.cf", "", "mydestination = mx.example.test")
		out, ids := msgs("mboxcmd", "nobody@mx.example.test", 1, 700)
		sendSMTP(t, pf.Port, 1, out)
		if e := pf.WaitFinal(ids, 60*time.Second)[ids[0]]; e.Status != "sent" {
			t.Fatalf("status=%s (%s)", e.Status, e.Reply)
		}
		var found bool
		for _, m := range r.mailbox("nobody") {
			found = found || m.id == ids[0]
		}
		if !found {
			t.Errorf("the message delivered by mailbox_command is not in nobody's INBOX")
		}
	})
}
