package maildir

import (
	"context"
	"encoding/binary"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/roost-mail/roost/backend"
)

// requireInotify skips a test that needs inotify when the user's inotify
// instances are used up (fs.inotify.max_user_instances, shared by every
// process of the user, such as other test binaries on a shared machine);
// in CI, which runs alone, that is a failure.
func requireInotify(t *testing.T) {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC)
	if err == unix.EMFILE {
		if os.Getenv("CI") == "true" {
			t.Fatal("inotify_init1: instances used up (fs.inotify.max_user_instances)")
		}
		t.Skip("inotify instances of this user used up by other processes (fs.inotify.max_user_instances)")
	}
	if err != nil {
		t.Fatalf("inotify_init1: %v", err)
	}
	unix.Close(fd)
}

// waitChanged fails unless snap's Changed channel closes within 10s.
func waitChanged(t *testing.T, snap *backend.Snapshot, what string) {
	t.Helper()
	select {
	case <-snap.Changed:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: Changed not closed", what)
	}
}

// sh runs a shell command: a change made by another process.
func sh(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-ec", script)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
}

// TestInotifySeesOtherProcesses: a delivery, a flag change and an expunge
// by another process each close Changed (no polling: the Store watches)
// and the next Sync shows them.
func TestInotifySeesOtherProcesses(t *testing.T) {
	requireInotify(t)
	root := newMaildir(t)
	writeFile(t, filepath.Join(root, "cur", "1700000000.M1P1.host,W=12:2,"), "Subject: \n\n", time.Time{})
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}, PollInterval: time.Hour})
	snap, mb := syncBox(t, u, "INBOX")
	if !mb.(*mailbox).st.watched.Load() {
		t.Fatal("mailbox not watched")
	}
	ctx := context.Background()
	steps := []struct {
		what, script string
		check        func(*backend.Snapshot) bool
	}{
		{"delivery", `printf 'Subject: x\n\nhi\n' > tmp/d && mv tmp/d new/1700000001.M2P2.other`,
			func(s *backend.Snapshot) bool { return len(s.Messages()) == 2 && s.Messages()[1].UID == 2 }},
		{"flag change", `mv cur/1700000000.M1P1.host,W=12:2, cur/1700000000.M1P1.host,W=12:2,FS`,
			func(s *backend.Snapshot) bool { return s.Messages()[0].Flags == backend.FlagSeen|backend.FlagFlagged }},
		{"expunge", `rm cur/1700000000.M1P1.host,W=12:2,FS`,
			func(s *backend.Snapshot) bool { return len(s.Messages()) == 1 && s.Messages()[0].UID == 2 }},
	}
	for _, step := range steps {
		sh(t, root, step.script)
		waitChanged(t, snap, step.what)
		var err error
		if snap, err = mb.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if !step.check(snap) {
			t.Fatalf("after %s: %+v", step.what, snap.Messages())
		}
	}
}

// TestInotifyAsksNoChildEvents reads the mask the kernel holds for each
// watch (/proc/self/fdinfo): names coming and going and the directory
// itself, never IN_MODIFY or IN_ATTRIB, whose watches cost a walk of
// every cached entry of the directory.
func TestInotifyAsksNoChildEvents(t *testing.T) {
	requireInotify(t)
	root := newMaildir(t)
	s, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	syncBox(t, u, "INBOX")
	var fd uintptr
	if err := s.hub.w.in.rc.Control(func(f uintptr) { fd = f }); err != nil {
		t.Fatal(err)
	}
	info, err := os.ReadFile("/proc/self/fdinfo/" + strconv.Itoa(int(fd)))
	if err != nil {
		t.Skip("no fdinfo:", err)
	}
	n := 0
	for _, line := range strings.Split(string(info), "\n") {
		_, rest, ok := strings.Cut(line, " mask:")
		if !strings.HasPrefix(line, "inotify ") || !ok {
			continue
		}
		f, _, _ := strings.Cut(rest, " ")
		mask, err := strconv.ParseUint(f, 16, 32)
		if err != nil {
			t.Fatalf("fdinfo line %q: %v", line, err)
		}
		n++
		want := uint64(unix.IN_CREATE | unix.IN_DELETE | unix.IN_MOVED_FROM | unix.IN_MOVED_TO | unix.IN_DELETE_SELF | unix.IN_MOVE_SELF)
		if mask&(unix.IN_MODIFY|unix.IN_ATTRIB) != 0 || mask&want != want {
			t.Errorf("watch mask %#x, want %#x without IN_MODIFY and IN_ATTRIB", mask, want)
		}
	}
	if n != 2 {
		t.Errorf("%d watches, want 2 (new/ and cur/):\n%s", n, info)
	}
}

// TestInotifyOverflowMarksDirty overflows the kernel's event queue for
// real (the reader is held up while another mailbox churns): every open
// mailbox, even one nothing happened to, is then told to look again.
func TestInotifyOverflowMarksDirty(t *testing.T) {
	requireInotify(t)
	b, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
	if err != nil {
		t.Skip("no inotify limits:", err)
	}
	max, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || max > 200000 {
		t.Skipf("max_queued_events %q: too many to overflow quickly", b)
	}
	busy, quiet := newMaildir(t), newMaildir(t)
	s, u := openRoot(t, busy, Options{SpecialUse: map[string]string{}, PollInterval: time.Hour})
	syncBox(t, u, "INBOX")
	// The quiet mailbox in the same Store, hence on the same queue.
	qu, err := s.Open(context.Background(), backend.Account{Name: "quiet", Maildir: quiet, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer qu.Close()
	snap, _ := syncBox(t, qu, "INBOX")
	p := filepath.Join(busy, "new", "a")
	writeFile(t, p, "x", time.Time{})
	// Each rename queues two events; the reader holds at most a buffer.
	renames := (max+inotifyBuf/unix.SizeofInotifyEvent)/2 + 1000
	h := s.hub
	h.mu.Lock()
	q := filepath.Join(busy, "new", "b")
	for i := 0; i < renames; i++ {
		from, to := p, q
		if i%2 == 1 {
			from, to = q, p
		}
		if err := os.Rename(from, to); err != nil {
			h.mu.Unlock()
			t.Fatal(err)
		}
	}
	h.mu.Unlock()
	waitChanged(t, snap, "queue overflow")
}

// TestInotifyClosedWithStore: Close releases the descriptor and stops the
// reader, however many mailboxes were watched.
func TestInotifyClosedWithStore(t *testing.T) {
	requireInotify(t)
	fds := func() int {
		ents, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd:", err)
		}
		return len(ents)
	}
	root := newMaildir(t)
	before := fds()
	for round := 0; round < 3; round++ {
		s := New(Options{SpecialUse: map[string]string{"Sent": backend.SpecialUseSent}})
		u, err := s.Open(context.Background(), backend.Account{Name: "a", Maildir: root, UID: -1, GID: -1})
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range []string{"INBOX", "Sent"} {
			mb, err := u.OpenMailbox(context.Background(), name)
			if err != nil {
				t.Fatal(err)
			}
			defer mb.Close()
		}
		h := s.hub
		if h == nil {
			t.Fatal("no inotify hub")
		}
		// Closed with mailboxes still open: their watches go with the fd.
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-h.w.done:
		default:
			t.Fatal("inotify reader still running after Close")
		}
	}
	if after := fds(); after != before {
		t.Errorf("%d open descriptors after Close, %d before", after, before)
	}
}

// TestInotifyTwoPathsOneDirectory: two names for one Maildir (a symlink)
// share the kernel's watch; closing one leaves the other watched.
func TestInotifyTwoPathsOneDirectory(t *testing.T) {
	requireInotify(t)
	root := newMaildir(t)
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(root, link); err != nil {
		t.Fatal(err)
	}
	s, u := openRoot(t, root, Options{SpecialUse: map[string]string{}, PollInterval: time.Hour})
	first, err := u.OpenMailbox(context.Background(), "INBOX")
	if err != nil {
		t.Fatal(err)
	}
	u2, err := s.Open(context.Background(), backend.Account{Name: "b", Maildir: link, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer u2.Close()
	snap, _ := syncBox(t, u2, "INBOX")
	first.Close()
	sh(t, root, `printf 'Subject: x\n\n' > tmp/d && mv tmp/d new/1700000001.M2P2.other`)
	waitChanged(t, snap, "delivery after the other path closed")
}

func FuzzInotifyEvents(f *testing.F) {
	var b []byte
	for _, name := range []string{"", "1700000000.M1P1.host:2,S", strings.Repeat("x", 40)} {
		n := (len(name) + 16) &^ 15
		if name == "" {
			n = 0
		}
		rec := make([]byte, unix.SizeofInotifyEvent+n)
		binary.NativeEndian.PutUint32(rec[0:], 1)
		binary.NativeEndian.PutUint32(rec[4:], unix.IN_MOVED_TO)
		binary.NativeEndian.PutUint32(rec[12:], uint32(n))
		copy(rec[unix.SizeofInotifyEvent:], name)
		b = append(b, rec...)
	}
	f.Add(b)
	f.Fuzz(func(t *testing.T, data []byte) {
		names := 0
		err := parseInotify(data, func(wd int32, mask uint32, name string) {
			if strings.IndexByte(name, 0) >= 0 {
				t.Fatalf("name %q holds NUL", name)
			}
			names += unix.SizeofInotifyEvent + len(name)
		})
		if err == nil && names > len(data) {
			t.Fatalf("events take %d bytes of a %d-byte buffer", names, len(data))
		}
	})
}
