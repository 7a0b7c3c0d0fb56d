package maildir

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// Damaged state files: a clear log line or a safe recovery, never a panic,
// never a lost message, UIDVALIDITY kept when it can be.

func threeMessages(t *testing.T, root string) []string {
	t.Helper()
	var keys []string
	for i := 0; i < 3; i++ {
		k := "170000000" + itoa(i) + ".M1P1.host,S=14"
		writeFile(t, filepath.Join(root, "cur", k+":2,S"), "Subject: "+itoa(i)+"\n\nb\n", time.Time{})
		keys = append(keys, k)
	}
	return keys
}

func TestCorruptUidlist(t *testing.T) {
	cases := []struct {
		name     string
		content  func(keys []string) string
		wantUV   uint32 // 0: any fresh value
		wantUIDs map[int]backend.UID
	}{
		{"bad record keeps the others", func(k []string) string {
			return "3 V777 N4\n1 :" + k[0] + "\ngarbage line\n3 :" + k[2] + "\n"
		}, 777, map[int]backend.UID{0: 1, 2: 3, 1: 4}},
		{"truncated last line", func(k []string) string {
			return "3 V777 N4\n1 :" + k[0] + "\n2 :" + k[1] + "\n3 :" + k[2][:5]
		}, 777, map[int]backend.UID{0: 1, 1: 2, 2: 4}},
		{"UIDs out of order", func(k []string) string {
			return "3 V777 N9\n5 :" + k[0] + "\n2 :" + k[1] + "\n6 :" + k[2] + "\n"
		}, 777, map[int]backend.UID{0: 5, 2: 6, 1: 9}},
		{"same file twice", func(k []string) string {
			return "3 V777 N9\n1 :" + k[0] + "\n2 :" + k[0] + "\n3 :" + k[1] + "\n4 :" + k[2] + "\n"
		}, 777, map[int]backend.UID{0: 1, 1: 3, 2: 4}},
		{"damaged header, V readable", func(k []string) string {
			return "3 V777 Nxx G\x00\n1 :" + k[0] + "\n2 :" + k[1] + "\n3 :" + k[2] + "\n"
		}, 777, map[int]backend.UID{0: 1, 1: 2, 2: 3}},
		{"unknown version", func(k []string) string { return "9 V777\n" }, 0, nil},
		{"binary junk", func(k []string) string { return "\x00\xff\xfe junk" }, 0, nil},
		{"empty", func(k []string) string { return "" }, 0, nil},
		{"N behind records", func(k []string) string {
			return "3 V777 N1\n1 :" + k[0] + "\n2 :" + k[1] + "\n3 :" + k[2] + "\n"
		}, 777, map[int]backend.UID{0: 1, 1: 2, 2: 3}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := newMaildir(t)
			keys := threeMessages(t, root)
			writeFile(t, filepath.Join(root, uidlistName), c.content(keys), time.Time{})
			_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
			s, mb := syncBox(t, u, "INBOX")
			if len(s.Messages()) != 3 {
				t.Fatalf("%d messages visible, want 3 (none lost)", len(s.Messages()))
			}
			if c.wantUV != 0 && s.UIDValidity != c.wantUV {
				t.Errorf("UIDVALIDITY %d, want %d kept", s.UIDValidity, c.wantUV)
			}
			for i, uid := range c.wantUIDs {
				j := s.Find(uid)
				if j < 0 || s.Messages()[j].Key != keys[i] {
					t.Errorf("UID %d should be %s; snapshot %v", uid, keys[i], s.Messages())
				}
			}
			seen := map[backend.UID]bool{}
			for _, m := range s.Messages() {
				if seen[m.UID] {
					t.Errorf("UID %d twice", m.UID)
				}
				seen[m.UID] = true
				read(t, mb, m.UID)
			}
			// The list is healthy again: a new process sees the same.
			_, u2 := openRoot(t, root, Options{SpecialUse: map[string]string{}})
			s2, _ := syncBox(t, u2, "INBOX")
			if s2.UIDValidity != s.UIDValidity || len(s2.Messages()) != 3 {
				t.Errorf("second open differs: %d/%d vs %d/%d", s2.UIDValidity, len(s2.Messages()), s.UIDValidity, len(s.Messages()))
			}
			for i := range s.Messages() {
				if s.Messages()[i].UID != s2.Messages()[i].UID {
					t.Errorf("UIDs changed on reopen")
				}
			}
		})
	}
}

func TestCorruptKeywordsAndSubscriptions(t *testing.T) {
	root := newMaildir(t)
	writeFile(t, filepath.Join(root, "cur", "1700000000.M1P1.host:2,Sabz"), "Subject: k\n\n", time.Time{})
	writeFile(t, filepath.Join(root, keywordsName), "0 $Junk\nnonsense\n99 $Far\n1 bad(keyword\n25 $Last\n3 $Junk\n", time.Time{})
	writeFile(t, filepath.Join(root, subscriptionsName), "V\t2\n\n\x00\xff\nA\t\tB\n../etc\nGood\n", time.Time{})
	if err := os.MkdirAll(filepath.Join(root, ".Good", "cur"), 0o700); err != nil {
		t.Fatal(err)
	}
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	s, mb := syncBox(t, u, "INBOX")
	if len(s.Messages()) != 1 {
		t.Fatalf("%d messages", len(s.Messages()))
	}
	kw := s.Messages()[0].Keywords
	if strings.Join(kw, ",") != "$Junk,$Last" {
		t.Errorf("keywords %v, want the readable ones [$Junk $Last]", kw)
	}
	// Setting a flag keeps the letters it cannot name.
	if _, err := mb.SetFlags(context.Background(), []backend.UID{s.Messages()[0].UID}, backend.FlagsAdd, backend.FlagFlagged, nil); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(root, "cur", "*"))
	if len(names) != 1 || !strings.HasSuffix(names[0], ":2,FSabz") {
		t.Errorf("file after SetFlags: %v", names)
	}
	infos, err := u.ListMailboxes(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var subs []string
	for _, i := range infos {
		if i.Subscribed {
			subs = append(subs, i.Name)
		}
	}
	sort.Strings(subs)
	if strings.Join(subs, ",") != "Good" {
		t.Errorf("subscribed %v, want [Good]", subs)
	}
	if err := u.SetSubscribed(context.Background(), "INBOX", true); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(root, subscriptionsName))
	if string(data) != "V\t2\n\nGood\nINBOX\n" {
		t.Errorf("rewritten subscriptions %q", data)
	}
}

func TestSubscriptionsV1KeptV1(t *testing.T) {
	root := newMaildir(t)
	writeFile(t, filepath.Join(root, subscriptionsName), "Projects.2024\nEntw&APw-rfe\n", time.Time{})
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	ctx := context.Background()
	for _, n := range []string{"Projects/2024", "Entwürfe"} {
		if err := u.CreateMailbox(ctx, n, ""); err != nil {
			t.Fatal(err)
		}
	}
	infos, _ := u.ListMailboxes(ctx)
	n := 0
	for _, i := range infos {
		if i.Subscribed {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d subscribed from the v1 file, want 2", n)
	}
	if err := u.SetSubscribed(ctx, "Projects", true); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(root, subscriptionsName))
	if string(data) != "Entw&APw-rfe\nProjects\nProjects.2024\n" {
		t.Errorf("v1 file rewritten as %q, want v1 with '.'", data)
	}
}

func TestStaleLocksBroken(t *testing.T) {
	root := newMaildir(t)
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	host := newNameGen().host
	p := filepath.Join(root, "roost-pop3.lock")
	cases := []struct {
		name    string
		content string
		age     time.Duration
		broken  bool
	}{
		{"dead process on this host", "999999999:" + host, 0, true},
		{"live process on another host", "1:other-host", 0, false},
		{"another host, not refreshed for 3 minutes", "1:other-host", 3 * time.Minute, true},
		{"live process here (pid 1)", "1:" + host, 0, false},
		{"garbage", "\x00\x01", 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			writeFile(t, p, c.content+"\n", time.Now().Add(-c.age))
			release, err := u.Lock(context.Background(), "pop3")
			if c.broken {
				if err != nil {
					t.Fatalf("stale lock not broken: %v", err)
				}
				if err := release(); err != nil {
					t.Error(err)
				}
				return
			}
			if !errors.Is(err, backend.ErrLocked) {
				t.Fatalf("Lock = %v, want ErrLocked", err)
			}
		})
	}
	os.Remove(p)
}

// TestSpecialUseSubscribed: the special-use folders are subscribed when
// they are created, once: a folder the user unsubscribed stays so.
func TestSpecialUseSubscribed(t *testing.T) {
	root := newMaildir(t)
	subscribed := func(u backend.User) []string {
		t.Helper()
		infos, err := u.ListMailboxes(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, mi := range infos {
			if mi.Subscribed {
				out = append(out, mi.Name)
			}
		}
		return out
	}
	_, u := openRoot(t, root, Options{})
	if got := subscribed(u); strings.Join(got, " ") != "Archive Drafts Junk Sent Trash" {
		t.Fatalf("subscribed after the first login: %v", got)
	}
	if err := u.SetSubscribed(context.Background(), "Junk", false); err != nil {
		t.Fatal(err)
	}
	_, u2 := openRoot(t, root, Options{})
	if got := subscribed(u2); strings.Join(got, " ") != "Archive Drafts Sent Trash" {
		t.Errorf("subscribed after the next login: %v, want Junk left unsubscribed", got)
	}
}
