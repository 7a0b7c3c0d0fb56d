package pop3d_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/maildir"
	"github.com/roost-mail/roost/pop3d"
)

// Store and configuration failures reach the client as RFC 3206 codes:
// [SYS/PERM] for what an admin must fix, [SYS/TEMP] for what may pass.
func TestMailboxErrors(t *testing.T) {
	e := newEnv(t, func(o *pop3d.Options) {
		o.Account = func(id *auth.Identity) (backend.Account, error) {
			switch id.User {
			case "alice":
				return backend.Account{}, errors.New("no Maildir configured")
			default: // a relative path the store refuses
				return backend.Account{Name: id.User, Maildir: "relative/Maildir", UID: -1, GID: -1}, nil
			}
		}
	})
	e.dial().run(`
		S: +OK...
		C: USER alice
		C: PASS secret
		S: +OK
		S: -ERR [SYS/PERM] Your mailbox is not configured; contact your administrator
		C: USER bob
		C: PASS hunter2
		S: +OK
		S: -ERR [SYS/TEMP] Cannot open your mailbox, try again later
		C: STAT
		S: -ERR STAT is not valid in the AUTHORIZATION state`)
}

// A message IMAP expunged after the POP3 snapshot was taken cannot be
// retrieved, and the session goes on; QUIT's DELE of it is harmless.
func TestMessageExpungedElsewhere(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1, msg2)
	c := e.login("alice", "secret")
	ctx := context.Background()
	st := maildir.New(maildir.Options{SpecialUse: map[string]string{}})
	defer st.Close() // last: its measurer may run after the mailbox is closed
	u, err := st.Open(ctx, backend.Account{Name: "alice", Maildir: e.maildir("alice"), UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	mb, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	defer mb.Close()
	snap, _ := mb.Sync(ctx)
	if _, err := mb.Expunge(ctx, []backend.UID{snap.Messages()[0].UID}); err != nil {
		t.Fatal(err)
	}
	c.run(`
		C: RETR 1
		S: -ERR Message 1 was removed by another session
		C: TOP 1 0
		S: -ERR Message 1 was removed by another session
		C: DELE 1
		S: +OK Message 1 deleted
		C: RETR 2
		S: +OK...
		S: From: b@example.edu
		S: Subject: two
		S:
		S: line 1
		S: line 2
		S: line 3
		S: .
		C: QUIT
		S: +OK Bye (0 messages removed)`)
	if n := len(e.inbox("alice").Messages()); n != 1 {
		t.Errorf("%d messages, want 1", n)
	}
}

func TestMarkSeenOff(t *testing.T) {
	e := newEnv(t, func(o *pop3d.Options) { o.MarkSeen = false })
	e.deliver("alice", msg2)
	e.login("alice", "secret").run(`
		C: RETR 1
		S: +OK...
		S: From: b@example.edu
		S: Subject: two
		S:
		S: line 1
		S: line 2
		S: line 3
		S: .
		C: QUIT
		S: +OK...`)
	if f := e.inbox("alice").Messages()[0].Flags; f&backend.FlagSeen != 0 {
		t.Errorf("flags %v: RETR set \\Seen with MarkSeen off", f)
	}
}

// Mail that arrives during a session is not in its snapshot: message
// numbers do not move, and QUIT leaves the new message alone.
func TestDeliveryDuringSession(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1)
	c := e.login("alice", "secret")
	e.deliver("alice", msg2)
	c.run(fmt.Sprintf(`
		C: STAT
		S: +OK 1 %d
		C: LIST 2
		S: -ERR no such message, only 1 messages in maildrop
		C: DELE 1
		S: +OK Message 1 deleted
		C: QUIT
		S: +OK Bye (1 messages removed)`, size(msg1)))
	e.login("alice", "secret").run(fmt.Sprintf(`
		C: LIST
		S: +OK 1 messages (%[1]d octets)
		S: 1 %[1]d
		S: .`, size(msg2)))
}
