package imapd_test

import (
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/roost-mail/roost/imapd"
)

func TestMailboxCommands(t *testing.T) {
	ts := newTestServer(t, nil)
	r := ts.raw(t)
	r.login("alice", alicePass)
	steps := []struct{ cmd, want string }{
		{`CREATE Work/Projects/Roost`, "OK"},
		{`CREATE Work/`, "NO [ALREADYEXISTS]"},
		{`CREATE inbox`, "NO [ALREADYEXISTS]"},
		{`CREATE "Entwürfe"`, "OK"},
		{`CREATE Later (USE (\Archive))`, "OK"},
		{`DELETE INBOX`, "NO"},
		{`DELETE Work`, "NO [HASCHILDREN]"},
		{`DELETE NoSuch`, "NO [NONEXISTENT]"},
		{`RENAME Work Jobs`, "OK"},
		{`RENAME NoSuch Other`, "NO [NONEXISTENT]"},
		{`RENAME Jobs Sent`, "NO [ALREADYEXISTS]"},
		{`SUBSCRIBE Jobs/Projects`, "OK"},
		{`UNSUBSCRIBE Jobs/Projects`, "OK"},
		{`SUBSCRIBE Jobs/Projects/Roost`, "OK"},
		{`STATUS NoSuch (MESSAGES)`, "NO [NONEXISTENT]"},
	}
	for _, s := range steps {
		if l := last(r.cmd(s.cmd)); !strings.Contains(l, s.want) {
			t.Errorf("%s: %s (want %s)", s.cmd, l, s.want)
		}
	}
	list := strings.Join(r.cmd(`LIST "" *`), "\n")
	for _, want := range []string{
		`* LIST (\HasChildren) "/" "Jobs"`, `* LIST (\HasNoChildren) "/" "Jobs/Projects/Roost"`,
		`"Entw&APw-rfe"`, `* LIST (\HasNoChildren \Archive) "/" "Later"`, `\Sent) "/" "Sent"`,
	} {
		if !strings.Contains(list, want) {
			t.Errorf("LIST lacks %q:\n%s", want, list)
		}
	}
	if strings.Contains(list, "Work") {
		t.Errorf("renamed mailbox still listed:\n%s", list)
	}
	for _, tc := range []struct{ cmd, want, not string }{
		{`LIST "" %`, `"/" "Jobs"`, "Jobs/Projects"},
		{`LIST Jobs/ %`, "Jobs/Projects", "Roost"},
		{`LIST "" inbox`, "INBOX", "Sent"},
		{`LIST "" ""`, `* LIST (\Noselect) "/" ""`, "INBOX"},
		{`LSUB "" *`, `* LSUB (\HasNoChildren \Subscribed) "/" "Jobs/Projects/Roost"`, `"Jobs/Projects"`},
		{`LIST (SUBSCRIBED) "" *`, `\Subscribed) "/" "Jobs/Projects/Roost"`, "Later"},
		{`LIST (SUBSCRIBED) "" *`, `\Subscribed \Trash) "/" "Trash"`, "Entw"}, // special-use: subscribed when created
		{`LIST (SUBSCRIBED RECURSIVEMATCH) "" %`, `"Jobs" (CHILDINFO ("SUBSCRIBED"))`, "Later"},
		{`LIST (SPECIAL-USE) "" *`, `\Trash`, "Jobs"},
		{`LIST "" * RETURN (STATUS (MESSAGES UIDNEXT SIZE))`, `* STATUS "Later" (MESSAGES 0 UIDNEXT 1 SIZE 0)`, "NONEXISTENT"},
		{`LIST "" (INBOX Later)`, "Later", "Sent"},
		{`NAMESPACE`, `* NAMESPACE (("" "/")) NIL NIL`, "NO"},
		{`STATUS INBOX (MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE APPENDLIMIT)`, "MESSAGES 0", "NO"},
	} {
		out := strings.Join(r.cmd(tc.cmd), "\r\n") + "\r\n"
		if !strings.Contains(out, tc.want) || strings.Contains(out, tc.not) {
			t.Errorf("%s: want %q, not %q, got\n%s", tc.cmd, tc.want, tc.not, out)
		}
	}
}

func TestStatusCounts(t *testing.T) {
	ts := newTestServer(t, nil)
	ts.deliver(t, "alice", "", "Subject: a\n\nA\n")
	ts.deliver(t, "alice", "", "Subject: b\n\nBB\n")
	c := ts.login(t, "alice")
	st, err := c.Status("INBOX", &imap.StatusOptions{NumMessages: true, NumUnseen: true, Size: true, UIDNext: true, NumDeleted: true}).Wait()
	if err != nil {
		t.Fatal(err)
	}
	if *st.NumMessages != 2 || *st.NumUnseen != 2 || *st.Size != int64(len("Subject: a\r\n\r\nA\r\n")+len("Subject: b\r\n\r\nBB\r\n")) || st.UIDNext != 3 || *st.NumDeleted != 0 {
		t.Fatalf("status: messages %d unseen %d size %d uidnext %d", *st.NumMessages, *st.NumUnseen, *st.Size, st.UIDNext)
	}
}

// A site that ran Courier keeps "INBOX." folder names and the "."
// delimiter; the store still uses "/".
func TestCourierNamespace(t *testing.T) {
	ts := newTestServer(t, func(o *imapd.Options) {
		o.Delimiter = '.'
		o.NamespacePrefix = "INBOX."
	})
	r := ts.raw(t)
	r.login("alice", alicePass)
	for _, s := range []struct{ cmd, want string }{
		{`CREATE INBOX.Lists.Go`, "OK"},
		{`CREATE Lists`, "NO [NONEXISTENT]"},
		{`CREATE "INBOX.a/b"`, "NO [CANNOT]"},
		{`SELECT INBOX.Lists.Go`, "OK"},
		{`SELECT inbox.Sent`, "OK"},
		{`SUBSCRIBE INBOX.Lists.Go`, "OK"},
		{`SUBSCRIBE inbox.Lists`, "OK"},
		{`SUBSCRIBE INBOX`, "OK"},
		{`SUBSCRIBE INBOX.Nosuch`, "NO [NONEXISTENT]"},
	} {
		if l := last(r.cmd(s.cmd)); !strings.Contains(l, s.want) {
			t.Errorf("%s: %s (want %s)", s.cmd, l, s.want)
		}
	}
	out := strings.Join(r.cmd(`LIST "" *`), "\n")
	for _, want := range []string{`* LIST (\HasChildren) "." "INBOX.Lists"`, `"." "INBOX.Lists.Go"`, `\Sent) "." "INBOX.Sent"`, `(\HasChildren) "." INBOX`} {
		if !strings.Contains(out, want) {
			t.Errorf("LIST lacks %q:\n%s", want, out)
		}
	}
	out = strings.Join(r.cmd(`LIST "" INBOX.%`), "\n")
	if !strings.Contains(out, `"." "INBOX.Lists"`) || strings.Contains(out, "INBOX.Lists.Go") {
		t.Errorf("LIST INBOX.%%:\n%s", out)
	}
	if ns := r.cmd("NAMESPACE")[0]; ns != `* NAMESPACE (("INBOX." ".")) NIL NIL` {
		t.Errorf("namespace: %s", ns)
	}
	// The store's folder is .Lists.Go on disk, as Courier and Dovecot name it.
	if _, err := osStat(ts.maildir("alice") + "/.Lists.Go/cur"); err != nil {
		t.Error(err)
	}
}

// A subscription outlives its mailbox (RFC 3501 6.3.6): LSUB and LIST
// (SUBSCRIBED) show it as \NonExistent, as Dovecot does; plain LIST does
// not show it.
func TestSubscriptionOfDeletedMailbox(t *testing.T) {
	ts := newTestServer(t, nil)
	r := ts.raw(t)
	r.login("alice", alicePass)
	for _, c := range []string{`CREATE gone/child`, `SUBSCRIBE gone/child`, `DELETE gone/child`} {
		if l := last(r.cmd(c)); !strings.Contains(l, "OK") {
			t.Fatalf("%s: %s", c, l)
		}
	}
	want := `(\Subscribed \NonExistent) "/" "gone/child"`
	for _, c := range []string{`LSUB "" *`, `LIST (SUBSCRIBED) "" *`, `LIST (SUBSCRIBED RECURSIVEMATCH) "" gone/*`} {
		if out := strings.Join(r.cmd(c), "\n"); !strings.Contains(out, want) {
			t.Errorf("%s: want %s, got\n%s", c, want, out)
		}
	}
	if out := strings.Join(r.cmd(`LIST (SUBSCRIBED RECURSIVEMATCH) "" %`), "\n"); !strings.Contains(out, `"gone" (CHILDINFO ("SUBSCRIBED"))`) {
		t.Errorf("LIST (SUBSCRIBED RECURSIVEMATCH) %%: the parent of a subscribed name lacks CHILDINFO:\n%s", out)
	}
	if out := strings.Join(r.cmd(`LIST "" *`), "\n"); strings.Contains(out, "gone/child") {
		t.Errorf("LIST shows a deleted mailbox:\n%s", out)
	}
	if l := last(r.cmd(`UNSUBSCRIBE gone/child`)); !strings.Contains(l, "OK") {
		t.Fatal(l)
	}
	if out := strings.Join(r.cmd(`LSUB "" *`), "\n"); strings.Contains(out, "gone/child") {
		t.Errorf("LSUB after UNSUBSCRIBE:\n%s", out)
	}
}
