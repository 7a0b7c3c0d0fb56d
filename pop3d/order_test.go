package pop3d_test

import (
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// migratedMaildir writes alice's INBOX as courier-dovecot-migrate.pl
// leaves it: a dovecot-uidlist whose records carry the old server's UIDL
// (P) and the message's place in its POP3 listing (O), for some messages;
// UIDs 3 and 5 arrived after the migration and have neither. It returns
// the messages' bodies by UID.
func migratedMaildir(t *testing.T, e *env) map[int]string {
	t.Helper()
	md := e.maildir("alice")
	e.deliver("alice") // the directories
	bodies := map[int]string{}
	var uidlist strings.Builder
	uidlist.WriteString("3 V1795628282 N7 G38460b21fa1c076bab65000083ecc375\n")
	for uid, fields := range []string{1: "O3 PUID9-1795628372", 2: "O1 PUID7-1795628372", 3: "", 4: "O2 PUID8-1795628372", 5: "", 6: "O2 PUID10-1795628372"} {
		if uid == 0 {
			continue
		}
		body := fmt.Sprintf("Subject: UID %d\n\n%s\n", uid, strings.Repeat("x", uid))
		bodies[uid] = body
		name := fmt.Sprintf("17956282%02d.M%dP1.vm,S=%d,W=%d", uid, uid, len(body), len(body)+strings.Count(body, "\n"))
		if err := os.WriteFile(filepath.Join(md, "cur", name+":2,S"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&uidlist, "%s :%s\n", strings.TrimSpace(fmt.Sprint(uid, " ", fields)), name)
	}
	if err := os.WriteFile(filepath.Join(md, "dovecot-uidlist"), []byte(uidlist.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return bodies
}

// TestPOP3Order: messages with a POP3 order (the O field) come first, by
// that order (a tie by UID), then the rest by UID, as in Dovecot; so
// LIST, UIDL, RETR and DELE numbers are the old server's.
func TestPOP3Order(t *testing.T) {
	e := newEnv(t, nil)
	bodies := migratedMaildir(t, e)
	order := []int{2, 4, 6, 1, 3, 5} // UIDs by POP3 message number
	size := func(uid int) int { return len(crlf(bodies[uid])) }
	list := fmt.Sprintf("+OK 6 messages (%d octets)\n", size(1)+size(2)+size(3)+size(4)+size(5)+size(6))
	for n, uid := range order {
		list += fmt.Sprintf("S: %d %d\n", n+1, size(uid))
	}
	c := e.login("alice", "secret")
	c.run(`
		C: LIST
		S: ` + list + `S: .
		C: UIDL
		S: +OK
		S: 1 UID7-1795628372
		S: 2 UID8-1795628372
		S: 3 UID10-1795628372
		S: 4 UID9-1795628372
		S: 5 000000036b071cfa
		S: 6 000000056b071cfa
		S: .
		C: LIST 3
		S: +OK 3 ` + fmt.Sprint(size(6)) + `
		C: UIDL 4
		S: +OK 4 UID9-1795628372
		C: RETR 1
		S: +OK ` + fmt.Sprint(size(2)) + ` octets
		S: Subject: UID 2
		S:
		S: xx
		S: .
		C: TOP 5 0
		S: +OK
		S: Subject: UID 3
		S:
		S: .
		C: DELE 1
		S: +OK Message 1 deleted
		C: DELE 6
		S: +OK Message 6 deleted
		C: QUIT
		S: +OK...`)
	// DELE 1 and 6 removed UIDs 2 and 5, and nothing else.
	var left []uint32
	for _, m := range e.inbox("alice").Messages() {
		left = append(left, uint32(m.UID))
	}
	if !slices.Equal(left, []uint32{1, 3, 4, 6}) {
		t.Errorf("UIDs left after DELE 1, DELE 6: %v, want [1 3 4 6]", left)
	}
	// The order survives: the next session numbers the rest the same way.
	e.waitLogin("alice", "secret").run(`
		C: UIDL
		S: +OK
		S: 1 UID8-1795628372
		S: 2 UID10-1795628372
		S: 3 UID9-1795628372
		S: 4 000000036b071cfa
		S: .
		C: QUIT
		S: +OK...`)
}

// TestPOP3OrderAsDovecot: Debian's Dovecot pop3 and Roost number the
// migrated Maildir's messages identically, and a larger one whose O
// values are random (repeated, missing, Dovecot's maximum) too.
func TestPOP3OrderAsDovecot(t *testing.T) {
	e := newEnv(t, nil)
	migratedMaildir(t, e)
	if roost, dovecot := e.roostUIDL("alice", "secret"), e.dovecotUIDL("alice"); !slices.Equal(roost, dovecot) {
		t.Errorf("UIDL listings differ\nRoost   %q\nDovecot %q", roost, dovecot)
	}

	md := e.maildir("bob")
	e.deliver("bob") // the directories
	r := rand.New(rand.NewPCG(5, 6))
	var uidlist strings.Builder
	uidlist.WriteString("3 V1795628282 N301 G38460b21fa1c076bab65000083ecc375\n")
	for uid := 1; uid <= 300; uid++ {
		body := fmt.Sprintf("Subject: %d\n\nx\n", uid)
		name := fmt.Sprintf("17956283%02d.M%dP1.vm,S=%d,W=%d", uid%100, uid, len(body), len(body)+3)
		if err := os.WriteFile(filepath.Join(md, "cur", name+":2,S"), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		fields := ""
		switch r.IntN(5) {
		case 0: // none
		case 1:
			fields = " O4294967295"
		default:
			fields = fmt.Sprintf(" O%d", 1+r.IntN(200))
		}
		fmt.Fprintf(&uidlist, "%d%s :%s\n", uid, fields, name)
	}
	if err := os.WriteFile(filepath.Join(md, "dovecot-uidlist"), []byte(uidlist.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	roost, dovecot := e.roostUIDL("bob", "hunter2"), e.dovecotUIDL("bob")
	if !slices.Equal(roost, dovecot) {
		t.Errorf("random O fields: UIDL listings differ\nRoost   %q\nDovecot %q", roost, dovecot)
	}
	if len(roost) != 300 {
		t.Errorf("%d UIDLs, want 300", len(roost))
	}
}
