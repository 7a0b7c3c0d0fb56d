package imapd_test

import (
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/imapd"
)

// After ENABLE IMAP4rev2 (RFC 9051) searches answer with ESEARCH and no
// RECENT responses are sent.
func TestEnableIMAP4rev2(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.deliver(t, "alice", "", "Subject: a\n\nA\n")
	r := ts.raw(t)
	r.login("alice", alicePass)
	if out := strings.Join(r.cmd("ENABLE IMAP4rev2"), "\n"); !strings.Contains(out, "* ENABLED IMAP4rev2") {
		t.Fatalf("ENABLE: %s", out)
	}
	if out := strings.Join(r.cmd("SELECT INBOX"), "\n"); strings.Contains(out, "RECENT") {
		t.Errorf("RECENT after ENABLE IMAP4rev2:\n%s", out)
	}
	if out := strings.Join(r.cmd("SEARCH ALL"), "\n"); !strings.Contains(out, "* ESEARCH (TAG \"t4\") ALL 1") {
		t.Errorf("SEARCH after ENABLE IMAP4rev2:\n%s", out)
	}
}

// With UTF8=ACCEPT enabled (RFC 6855) mailbox names travel as UTF-8.
func TestUTF8Accept(t *testing.T) {
	ts := newTestServer(t, nil)
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("ENABLE UTF8=ACCEPT")
	if l := last(r.cmd(`CREATE "Überweisungen"`)); !strings.Contains(l, "OK") {
		t.Fatal(l)
	}
	if out := strings.Join(r.cmd(`LIST "" "Ü*"`), "\n"); !strings.Contains(out, `"Überweisungen"`) {
		t.Errorf("LIST:\n%s", out)
	}
	r2 := ts.raw(t)
	r2.login("alice", alicePass)
	if out := strings.Join(r2.cmd(`LIST "" *`), "\n"); !strings.Contains(out, `"&ANw-berweisungen"`) {
		t.Errorf("LIST without UTF8=ACCEPT:\n%s", out)
	}
}

func TestIdleTimeout(t *testing.T) {
	ts := newTestServer(t, func(o *imapd.Options) { o.IdleTimeout = 300 * time.Millisecond })
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	r.send("i IDLE\r\n")
	r.expectWithin(5*time.Second, "* BYE")
}

// EXAMINE does not take \Recent away from a session that selects later.
func TestExamineLeavesRecent(t *testing.T) {
	ts := newTestServer(t, nil)
	a := ts.raw(t)
	a.login("alice", alicePass)
	a.cmd("EXAMINE INBOX")
	ts.deliver(t, "alice", "", "Subject: new\n\nx\n")
	waitFor(t, func() bool { return strings.Contains(strings.Join(a.cmd("NOOP"), "\n"), "* 1 EXISTS") })
	if out := strings.Join(a.cmd("SEARCH RECENT"), "\n"); strings.Contains(out, "* SEARCH 1") {
		t.Errorf("EXAMINE session got \\Recent:\n%s", out)
	}
	b := ts.raw(t)
	b.login("alice", alicePass)
	b.cmd("SELECT INBOX")
	if out := strings.Join(b.cmd("FETCH 1 FLAGS"), "\n"); !strings.Contains(out, `\Recent`) {
		t.Errorf("SELECT after EXAMINE:\n%s", out)
	}
}

// A namespace prefix that is not INBOX shows as a \Noselect parent.
func TestNamespacePrefixParent(t *testing.T) {
	ts := newTestServer(t, func(o *imapd.Options) { o.NamespacePrefix = "Mail/" })
	r := ts.raw(t)
	r.login("alice", alicePass)
	out := strings.Join(r.cmd(`LIST "" %`), "\n")
	if !strings.Contains(out, `(\Noselect \HasChildren) "/" "Mail"`) || !strings.Contains(out, "INBOX") || strings.Contains(out, "Mail/Sent") {
		t.Errorf("LIST %%:\n%s", out)
	}
	if out := strings.Join(r.cmd(`LIST "" Mail/%`), "\n"); !strings.Contains(out, `"Mail/Sent"`) {
		t.Errorf("LIST Mail/%%:\n%s", out)
	}
	if l := last(r.cmd("SELECT Mail/Sent")); !strings.Contains(l, "OK") {
		t.Error(l)
	}
	if l := last(r.cmd("SELECT Sent")); !strings.Contains(l, "NO [NONEXISTENT]") {
		t.Error(l)
	}
}
