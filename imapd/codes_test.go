package imapd_test

import (
	"strings"
	"testing"

	"github.com/roost-mail/roost/imapd"
	"github.com/roost-mail/roost/maildir"
)

// TestResponseCodes runs mailbox commands that fail, over a socket, and
// checks the RFC 5530 code of each answer (docs/imap.md lists Dovecot's
// answers to the same script). The store allows three folders besides
// INBOX and the special-use ones (imap.max_mailboxes).
func TestResponseCodes(t *testing.T) {
	ts := newTestServer(t, func(o *imapd.Options) {
		o.Store = maildir.New(maildir.Options{MaxMailboxes: 3})
	})
	ts.deliver(t, "alice", "", "Subject: one\n\nbody\n")
	r := ts.raw(t)
	r.login("alice", alicePass)
	for _, tc := range []struct{ cmd, want string }{
		{`CREATE INBOX`, "NO [ALREADYEXISTS]"},
		{`CREATE a`, "OK"},
		{`CREATE a`, "NO [ALREADYEXISTS]"},
		{`CREATE a/b/`, "OK"},
		{`DELETE a`, "NO [HASCHILDREN]"},
		{`RENAME a a/b/c`, "NO [CANNOT] A mailbox cannot be moved below itself"},
		{`RENAME a Sent`, "NO [ALREADYEXISTS]"},
		{`RENAME a INBOX`, "NO [ALREADYEXISTS]"},
		{`RENAME nosuch x`, "NO [NONEXISTENT]"},
		{`DELETE nosuch`, "NO [NONEXISTENT]"},
		{`DELETE INBOX`, "NO [CANNOT]"},
		{`SELECT nosuch`, "NO [NONEXISTENT]"},
		{`EXAMINE nosuch`, "NO [NONEXISTENT]"},
		{`STATUS nosuch (MESSAGES)`, "NO [NONEXISTENT]"},
		{`CREATE ""`, "NO [CANNOT] Mailbox name is empty"},
		{`CREATE /x`, "NO [CANNOT] Mailbox names cannot begin with /"},
		{`CREATE x//y`, "NO [CANNOT] Mailbox names cannot have empty levels"},
		{`CREATE "x*y"`, "NO [CANNOT]"},
		{`CREATE ../x`, "NO [CANNOT]"},
		{`SUBSCRIBE nosuch`, "NO [NONEXISTENT]"},
		{`SUBSCRIBE a/b`, "OK"},
		{`SUBSCRIBE inbox`, "OK"},
		{`UNSUBSCRIBE nosuch`, "OK"},
		{`CREATE c`, "OK"},
		{`CREATE d`, "NO [LIMIT] Too many mailboxes"},
		{`CREATE e/f`, "NO [LIMIT]"},
		{`CREATE Sent/x`, "NO [LIMIT]"},
		{`RENAME c d`, "OK"},
		{`RENAME a/b e/f`, "OK"}, // e stays a \Noselect name, not a folder
		{`DELETE d`, "OK"},
		{`CREATE d`, "OK"},
		{`RENAME INBOX Old`, "NO [LIMIT]"}, // makes a folder of INBOX's messages
		{`SELECT INBOX`, "OK"},
		{`COPY 1 nosuch`, "NO [TRYCREATE]"},
		{`MOVE 1 nosuch`, "NO [TRYCREATE]"},
		{`COPY 2 a`, "BAD [CLIENTBUG]"},
		{"APPEND nosuch {1+}\r\nx", "NO [TRYCREATE]"},
		{`STORE 1 +FLAGS (\Recent \Foo \Seen)`, "OK"}, // unsettable flags are ignored
		{`EXAMINE INBOX`, "OK [READ-ONLY]"},
		{`STORE 1 +FLAGS (\Deleted)`, "NO [READ-ONLY]"},
		{`EXPUNGE`, "NO [READ-ONLY]"},
		{`MOVE 1 Trash`, "NO [READ-ONLY]"},
		{`COPY 1 Trash`, "OK [COPYUID"},
		{`CLOSE`, "OK"},
		{`LIST "" "*"`, "OK"},
	} {
		got := last(r.cmd(tc.cmd))
		if i := strings.IndexByte(got, ' '); i < 0 || !strings.HasPrefix(got[i+1:], tc.want) {
			t.Errorf("%s: got %q, want %q", tc.cmd, got, tc.want)
		}
	}
}
