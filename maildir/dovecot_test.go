package maildir

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/internal/testenv"
)

// Compatibility with Dovecot 2.3 (Debian dovecot-imapd). The fixture in
// testdata/dovecot-fixture.tar was written by Dovecot (see
// testdata/make_dovecot_fixture.sh); testdata/dovecot-fixture.view is
// Dovecot's own IMAP view of it.

// view is what an IMAP server shows of a Maildir.
type view struct {
	boxes map[string]*boxView // by UTF-8 name
	subs  []string
	log   []string // Dovecot errors and warnings
}

type boxView struct {
	uidValidity, uidNext uint32
	msgs                 []string // "uid size date flags"
}

func parseView(t *testing.T, data string) view {
	t.Helper()
	v := view{boxes: map[string]*boxView{}}
	for _, line := range strings.Split(strings.TrimSpace(data), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "mailbox":
			name, err := decodeMUTF7(f[1])
			if err != nil {
				t.Fatalf("view line %q: %v", line, err)
			}
			uv, _ := strconv.ParseUint(f[3], 10, 32)
			un, _ := strconv.ParseUint(f[5], 10, 32)
			v.boxes[name] = &boxView{uidValidity: uint32(uv), uidNext: uint32(un)}
		case "msg":
			name, _ := decodeMUTF7(f[1])
			b := v.boxes[name]
			if b == nil {
				t.Fatalf("view line %q before its mailbox line", line)
			}
			b.msgs = append(b.msgs, strings.Join(f[2:], " "))
		case "sub":
			name, _ := decodeMUTF7(f[1])
			v.subs = append(v.subs, name)
		default:
			v.log = append(v.log, line)
		}
	}
	sort.Strings(v.subs)
	return v
}

// roostView reads the same facts through the Store.
func roostView(t *testing.T, u backend.User) view {
	t.Helper()
	ctx := context.Background()
	v := view{boxes: map[string]*boxView{}}
	infos, err := u.ListMailboxes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, mi := range infos {
		if mi.Subscribed {
			v.subs = append(v.subs, mi.Name)
		}
		if mi.NoSelect {
			continue
		}
		mb, err := u.OpenMailbox(ctx, mi.Name)
		if err != nil {
			t.Fatal(err)
		}
		s, err := mb.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		b := &boxView{uidValidity: s.UIDValidity, uidNext: uint32(s.UIDNext)}
		for _, m := range s.Messages() {
			flags := append(append([]string{}, m.Keywords...), m.Flags.Names()...)
			sort.Strings(flags)
			size := m.Size
			if size < 0 {
				if size, err = mb.MessageSize(ctx, m.UID); err != nil {
					t.Fatal(err)
				}
			}
			b.msgs = append(b.msgs, strings.TrimSpace(fmt.Sprintf("%d %d %d %s", m.UID, size, m.InternalDate.Unix(), strings.Join(flags, " "))))
		}
		v.boxes[mi.Name] = b
		mb.Close()
	}
	sort.Strings(v.subs)
	return v
}

// compareViews reports differences for the mailboxes both views have.
// freshView is what a new Roost Store opening the Maildir root sees.
func freshView(t *testing.T, root string) view {
	t.Helper()
	s := newTestStore(t, Options{SpecialUse: map[string]string{}})
	u, err := s.Open(context.Background(), backend.Account{Name: "alice", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	return roostView(t, u)
}

func compareViews(t *testing.T, want, got view, what string) {
	t.Helper()
	for _, l := range want.log {
		t.Errorf("%s: Dovecot said: %s", what, l)
	}
	if strings.Join(want.subs, ",") != strings.Join(got.subs, ",") {
		t.Errorf("%s: subscriptions %q, want %q", what, got.subs, want.subs)
	}
	for name, wb := range want.boxes {
		gb := got.boxes[name]
		if gb == nil {
			t.Errorf("%s: mailbox %q missing", what, name)
			continue
		}
		if gb.uidValidity != wb.uidValidity || gb.uidNext != wb.uidNext {
			t.Errorf("%s: %s UIDVALIDITY/UIDNEXT %d/%d, want %d/%d", what, name, gb.uidValidity, gb.uidNext, wb.uidValidity, wb.uidNext)
		}
		if strings.Join(gb.msgs, "\n") != strings.Join(wb.msgs, "\n") {
			t.Errorf("%s: %s messages\n got: %q\nwant: %q", what, name, gb.msgs, wb.msgs)
		}
	}
}

// extractFixture unpacks a tar (keeping mtimes: INTERNALDATE) into dir.
func extractFixture(t *testing.T, tarPath, dir string) string {
	t.Helper()
	f, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	var dirs []*tar.Header
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, h.Name)
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o700); err != nil {
				t.Fatal(err)
			}
			dirs = append(dirs, h)
		case tar.TypeReg:
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chtimes(p, h.ModTime, h.ModTime); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		p := filepath.Join(dir, dirs[i].Name)
		_ = os.Chtimes(p, dirs[i].ModTime, dirs[i].ModTime)
	}
	return filepath.Join(dir, "Maildir")
}

func openFixture(t *testing.T, opts Options) (backend.User, string) {
	t.Helper()
	home := t.TempDir()
	md := extractFixture(t, "testdata/dovecot-fixture.tar", home)
	s := newTestStore(t, opts)
	u, err := s.Open(context.Background(), backend.Account{Name: "alice", Maildir: md, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u, home
}

// TestDovecotFixtureRead: Roost shows exactly what Dovecot showed.
func TestDovecotFixtureRead(t *testing.T) {
	data, err := os.ReadFile("testdata/dovecot-fixture.view")
	if err != nil {
		t.Fatal(err)
	}
	want := parseView(t, string(data))
	// No special-use folders, so that the two trees match exactly.
	u, _ := openFixture(t, Options{SpecialUse: map[string]string{}})
	got := roostView(t, u)
	compareViews(t, want, got, "Roost reading Dovecot's Maildir")
	if len(got.boxes) != len(want.boxes) {
		t.Errorf("Roost lists %d mailboxes, Dovecot %d", len(got.boxes), len(want.boxes))
	}
	// Reading twice (now from Roost's rewritten uidlist) gives the same.
	compareViews(t, want, roostView(t, u), "second read")
}

// runDovecot runs testdata/dovecot_session.py on home and parses its view.
func runDovecot(t *testing.T, home string) view {
	t.Helper()
	testenv.Require(t, "/usr/lib/dovecot/imap", "dovecot-imapd")
	testenv.Require(t, "python3", "python3")
	if os.Geteuid() != 0 {
		t.Skip("needs root: Dovecot refuses to run as root, so the test hands the files to nobody")
	}
	// Dovecot refuses to run as root: hand the tree to nobody.
	if err := filepath.Walk(home, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 65534, 65534)
	}); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Dir(home), 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "python3", "testdata/dovecot_session.py", home, "view").CombinedOutput()
	if err != nil {
		t.Fatalf("dovecot session: %v\n%s", err, out)
	}
	return parseView(t, string(out))
}

// TestDovecotReadsRoost: after Roost changed a Dovecot Maildir (append
// with keywords, flag changes, expunge, a new folder, subscriptions,
// copy), Dovecot shows the same UIDs, flags, keywords and subscriptions,
// and Roost still agrees after Dovecot has rewritten its files.
func TestDovecotReadsRoost(t *testing.T) {
	testenv.Require(t, "/usr/lib/dovecot/imap", "dovecot-imapd")
	u, home := openFixture(t, Options{SpecialUse: map[string]string{}})
	ctx := context.Background()
	in, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	date := time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)
	r, err := in.Append(ctx, strings.NewReader("From: roost@example.edu\nSubject: from roost\n\nhi\n"),
		backend.AppendOptions{Flags: backend.FlagSeen, Keywords: []string{"$Roost", "$Junk"}, InternalDate: date})
	if err != nil {
		t.Fatal(err)
	}
	if r.UID != 5 {
		t.Errorf("append after Dovecot's N5 got UID %d, want 5", r.UID)
	}
	if _, err := in.Append(ctx, strings.NewReader("Subject: plain\n\nnew/\n"), backend.AppendOptions{InternalDate: date}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.SetFlags(ctx, []backend.UID{1}, backend.FlagsRemove, 0, []string{"$Junk"}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.SetFlags(ctx, []backend.UID{1}, backend.FlagsAdd, backend.FlagAnswered, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Expunge(ctx, []backend.UID{2}); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Copy(ctx, []backend.UID{4}, "Projects/2024"); err != nil {
		t.Fatal(err)
	}
	if err := u.CreateMailbox(ctx, "Roost/Child", ""); err != nil {
		t.Fatal(err)
	}
	child, err := u.OpenMailbox(ctx, "Roost/Child")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := child.Append(ctx, strings.NewReader("Subject: child\n\nx\n"), backend.AppendOptions{Flags: backend.FlagFlagged, InternalDate: date}); err != nil {
		t.Fatal(err)
	}
	child.Close()
	if err := u.SetSubscribed(ctx, "Roost/Child", true); err != nil {
		t.Fatal(err)
	}
	if err := u.SetSubscribed(ctx, "Projects/2024", false); err != nil {
		t.Fatal(err)
	}
	mine := roostView(t, u)
	dove := runDovecot(t, home)
	for name, b := range dove.boxes {
		t.Logf("Dovecot: %s %d/%d %q", name, b.uidValidity, b.uidNext, b.msgs)
	}
	t.Logf("Dovecot subscriptions: %q", dove.subs)
	if len(dove.boxes) < 4 {
		t.Fatalf("Dovecot saw only %d mailboxes", len(dove.boxes))
	}
	compareViews(t, dove, mine, "Dovecot reading Roost's changes")

	// Dovecot has now rewritten uidlists and indexes; a fresh Roost agrees.
	compareViews(t, dove, freshView(t, filepath.Join(home, "Maildir")), "Roost after Dovecot")
}
