package torture

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// verifier checks a quiet Maildir after a round, and remembers what it
// saw to check that UIDVALIDITY and UIDs hold across rounds.
type verifier struct {
	t        *testing.T
	s        *site
	imapd    *daemon
	pop3d    *daemon // nil: POP3 UIDLs are not checked
	folders  []string
	validity map[string]uint32
	uidNext  map[string]imap.UID
	uidOwner map[string]map[imap.UID]string // folder -> UID -> Message-ID
	drifts   int
	tmpFiles int
}

func newVerifier(t *testing.T, s *site, imapd *daemon, folders []string) *verifier {
	return &verifier{t: t, s: s, imapd: imapd, folders: folders, validity: map[string]uint32{}, uidNext: map[string]imap.UID{},
		uidOwner: map[string]map[imap.UID]string{}}
}

// check reports problems with t.Errorf and returns false if there were any.
func (v *verifier) check(m *model, round int) bool {
	t := v.t
	t.Helper()
	ok := true
	fail := func(format string, a ...any) {
		ok = false
		t.Errorf("round %d: "+format, append([]any{round}, a...)...)
	}
	md := v.s.maildir("alice")
	view, err := scanMaildir(md)
	if err != nil {
		t.Fatal(err)
	}
	v.tmpFiles = view.tmpFiles
	for _, p := range view.problems {
		fail("%s", p)
	}
	for _, f := range view.files {
		if f.id == "" {
			fail("foreign file %s in %s", f.base, f.folder)
		}
	}
	seen := view.count()
	for _, bad := range m.check(seen) {
		fail("%s", bad)
	}

	c, err := imapLogin(v.imapd.address(), "alice", "alicepw")
	if err != nil {
		t.Fatalf("round %d: imapd after restart: %v", round, err)
	}
	defer c.Close()
	var inbox map[string]imap.UID
	var inboxValidity uint32
	for _, folder := range v.folders {
		sel, err := c.Select(folder, nil).Wait()
		if err != nil {
			t.Fatalf("round %d: SELECT %s: %v", round, folder, err)
		}
		if old, had := v.validity[folder]; had && old != sel.UIDValidity {
			fail("UIDVALIDITY of %s changed from %d to %d", folder, old, sel.UIDValidity)
		}
		v.validity[folder] = sel.UIDValidity
		if sel.UIDNext < v.uidNext[folder] {
			fail("UIDNEXT of %s went back from %d to %d", folder, v.uidNext[folder], sel.UIDNext)
		}
		v.uidNext[folder] = sel.UIDNext
		byID, err := uidsByID(c)
		if err != nil {
			t.Fatalf("round %d: FETCH %s: %v", round, folder, err)
		}
		if folder == "INBOX" {
			inbox, inboxValidity = byID, sel.UIDValidity
		}
		owners := v.uidOwner[folder]
		if owners == nil {
			owners = map[imap.UID]string{}
			v.uidOwner[folder] = owners
		}
		for id, uid := range byID {
			if prev, had := owners[uid]; had && prev != id {
				fail("UID %d of %s reused: it was %s, now %s", uid, folder, prev, id)
			}
			owners[uid] = id
			if uid >= sel.UIDNext {
				fail("%s has UID %d >= UIDNEXT %d", folder, uid, sel.UIDNext)
			}
			if seen[key{folder, id}] != 1 {
				fail("imapd shows %s in %s, the files hold %d", id, folder, seen[key{folder, id}])
			}
		}
		dir := md
		if folder != "INBOX" {
			dir = filepath.Join(md, "."+folder)
		}
		ul, err := readUidlist(dir)
		if err != nil {
			fail("%s: %v", folder, err)
			continue
		}
		if ul.uidValidity != sel.UIDValidity {
			fail("dovecot-uidlist of %s has UIDVALIDITY %d, imapd %d", folder, ul.uidValidity, sel.UIDValidity)
		}
		if len(ul.dupUIDs) > 0 {
			fail("dovecot-uidlist of %s lists UIDs twice: %v", folder, ul.dupUIDs)
		}
		kw, err := readKeywords(dir)
		if err != nil {
			fail("%s: %v", folder, err)
		}
		n := 0
		for _, f := range view.files {
			if f.folder != folder {
				continue
			}
			n++
			for _, c := range f.info {
				if c >= 'a' && c <= 'z' && kw[int(c-'a')] == "" {
					fail("%s in %s carries keyword letter %c, which dovecot-keywords does not define", f.id, folder, c)
				}
			}
			if got, want := ul.byName[f.base], byID[f.id]; got != uint32(want) {
				fail("dovecot-uidlist of %s gives %s UID %d, imapd %d", folder, f.base, got, want)
			}
		}
		if n != len(byID) {
			fail("%s: %d files, imapd shows %d messages", folder, n, len(byID))
		}
	}
	c.Logout().Wait()
	if v.pop3d != nil && inbox != nil {
		v.checkUIDLs(fail, inbox, inboxValidity)
	}

	size, msgs := view.bytes()
	q := v.s.quotaGet("alice")
	if q.UsedBytes != size || q.Messages != msgs {
		v.drifts++
		t.Logf("round %d: maildirsize says %d bytes in %d messages, the files %d in %d: roostctl quota recalc",
			round, q.UsedBytes, q.Messages, size, msgs)
		if out, errOut, code := v.s.roostctl("quota", "recalc", "alice"); code != 0 {
			t.Fatalf("roostctl quota recalc: exit %d\n%s%s", code, out, errOut)
		}
		if q = v.s.quotaGet("alice"); q.UsedBytes != size || q.Messages != msgs {
			fail("after quota recalc maildirsize says %d bytes in %d messages, the files %d in %d", q.UsedBytes, q.Messages, size, msgs)
		}
	}
	if _, err := os.Stat(filepath.Join(md, "maildirsize")); err != nil {
		fail("maildirsize: %v", err)
	}
	return ok
}

// checkUIDLs reads INBOX over POP3: the same messages as imapd shows, each
// with the UIDL Dovecot's default format (%08Xu%08Xv) gives its IMAP UID,
// so POP3 clients that leave mail on the server keep their UIDLs across
// crashes exactly as long as IMAP clients keep their UIDs.
func (v *verifier) checkUIDLs(fail func(string, ...any), inbox map[string]imap.UID, validity uint32) {
	p, err := pop3Login(v.pop3d.address(), "alice", "alicepw")
	if err != nil {
		fail("POP3 login after restart: %v", err)
		return
	}
	defer p.Close()
	if r, err := p.cmd("UIDL"); err != nil || !strings.HasPrefix(r, "+OK") {
		fail("POP3 UIDL: %q %v", r, err)
		return
	}
	body, err := p.multi()
	if err != nil {
		fail("POP3 UIDL: %v", err)
		return
	}
	n := 0
	for _, l := range strings.Split(strings.TrimSpace(string(body)), "\r\n") {
		var num int
		var uidl string
		if _, err := fmt.Sscanf(l, "%d %s", &num, &uidl); err != nil {
			continue
		}
		n++
		if r, err := p.cmd("TOP %d 0", num); err != nil || !strings.HasPrefix(r, "+OK") {
			fail("POP3 TOP %d: %q %v", num, r, err)
			return
		}
		hdr, err := p.multi()
		if err != nil {
			fail("POP3 TOP %d: %v", num, err)
			return
		}
		id, _ := parseMessage(hdr)
		uid, ok := inbox[id]
		if want := fmt.Sprintf("%08x%08x", uint32(uid), validity); !ok || uidl != want {
			fail("POP3 shows %s with UIDL %s; imapd has it as UID %d of UIDVALIDITY %d (UIDL %s)", id, uidl, uid, validity, want)
		}
	}
	if n != len(inbox) {
		fail("POP3 lists %d messages, imapd %d in INBOX", n, len(inbox))
	}
	p.cmd("QUIT")
}
