package imapd_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/maildir"
)

// TestMain lets the test binary act as another process touching the same
// Maildir: Postfix delivering into new/, or pop3d expunging.
func TestMain(m *testing.M) {
	switch os.Getenv("IMAPD_TEST_HELPER") {
	case "":
		os.Exit(m.Run())
	case "expunge":
		if err := helperExpunge(os.Args[len(os.Args)-2], os.Args[len(os.Args)-1]); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
}

func helperExpunge(dir, uid string) error {
	n, err := strconv.Atoi(uid)
	if err != nil {
		return err
	}
	ctx := context.Background()
	u, err := maildir.New(maildir.Options{}).Open(ctx, backend.Account{Name: "alice", Maildir: dir, UID: -1, GID: -1})
	if err != nil {
		return err
	}
	defer u.Close()
	mb, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		return err
	}
	defer mb.Close()
	if _, err := mb.Sync(ctx); err != nil {
		return err
	}
	_, err = mb.Expunge(ctx, []backend.UID{backend.UID(n)})
	return err
}

func runHelper(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-test.run=^$"}, args...)...)
	cmd.Env = append(os.Environ(), "IMAPD_TEST_HELPER="+args[0])
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("helper %v: %v\n%s", args, err, out)
	}
}

// expectWithin reads lines until one contains want, failing after d.
func (r *raw) expectWithin(d time.Duration, want string) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		r.c.SetReadDeadline(deadline)
		l, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("no %q within %v: %v", want, d, err)
		}
		if strings.Contains(l, want) {
			return
		}
	}
}

// TestLiveUpdatesAcrossProcesses: while imapd serves, another process
// delivers into new/ and another expunges; IDLE sessions see both within
// two seconds, and a session that is not idling sees them at its next
// command.
func TestLiveUpdatesAcrossProcesses(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.deliver(t, "alice", "", "Subject: one\n\n1\n")
	ts.deliver(t, "alice", "", "Subject: two\n\n2\n")
	var idlers []*raw
	for i := 0; i < 2; i++ {
		r := ts.raw(t)
		r.login("alice", alicePass)
		r.cmd("SELECT INBOX")
		r.send("idle IDLE\r\n")
		if l := r.line(); !strings.HasPrefix(l, "+") {
			t.Fatal(l)
		}
		idlers = append(idlers, r)
	}
	busy := ts.raw(t)
	busy.login("alice", alicePass)
	busy.cmd("SELECT INBOX")

	ts.deliver(t, "alice", "", "Subject: three\n\n3\n") // as Postfix does, from outside imapd
	for _, r := range idlers {
		r.expectWithin(2*time.Second, "* 3 EXISTS")
	}
	runHelper(t, "expunge", ts.maildir("alice"), "1")
	for _, r := range idlers {
		r.expectWithin(2*time.Second, "* 1 EXPUNGE")
	}
	busy.cmd(`STORE 2 +FLAGS (\Flagged)`)
	for _, r := range idlers {
		r.expectWithin(2*time.Second, `FETCH (UID 2 FLAGS (\Flagged`)
	}
	out := strings.Join(busy.cmd("NOOP"), "\n")
	if !strings.Contains(out, "* 1 EXPUNGE") {
		t.Errorf("NOOP after changes:\n%s", out)
	}
	for _, r := range idlers {
		r.send("DONE\r\n")
		r.expectWithin(2*time.Second, "idle OK")
	}
	// A FETCH must not renumber: the expunge waits, flags do not.
	ts.deliver(t, "alice", "", "Subject: four\n\n4\n")
	runHelper(t, "expunge", ts.maildir("alice"), "2")
	time.Sleep(1100 * time.Millisecond) // past refreshAfter: the FETCH looks at the store
	r := idlers[0]
	out = strings.Join(r.cmd("FETCH 1:* UID"), "\n")
	if strings.Contains(out, "EXPUNGE") || strings.Contains(out, "EXISTS") {
		t.Errorf("FETCH sent EXPUNGE or EXISTS:\n%s", out)
	}
	out = strings.Join(r.cmd("NOOP"), "\n")
	if !strings.Contains(out, "* 1 EXPUNGE") || !strings.Contains(out, "* 2 EXISTS") {
		t.Errorf("NOOP after deferred changes:\n%s", out)
	}
}

// Two sessions of one process: \Recent goes to exactly one of them.
func TestRecentOncePerProcess(t *testing.T) {
	ts := newTestServer(t, nil)
	a := ts.raw(t)
	a.login("alice", alicePass)
	a.cmd("SELECT INBOX")
	b := ts.raw(t)
	b.login("alice", alicePass)
	b.cmd("SELECT INBOX")
	ts.deliver(t, "alice", "", "Subject: new\n\nx\n")
	for _, r := range []*raw{a, b} {
		waitFor(t, func() bool { return strings.Contains(strings.Join(r.cmd("NOOP"), "\n"), "* 1 EXISTS") })
	}
	recentA := strings.Contains(strings.Join(a.cmd("SEARCH RECENT"), "\n"), "* SEARCH 1")
	recentB := strings.Contains(strings.Join(b.cmd("SEARCH RECENT"), "\n"), "* SEARCH 1")
	if recentA == recentB {
		t.Fatalf("\\Recent in A %v, in B %v: want exactly one", recentA, recentB)
	}
}
