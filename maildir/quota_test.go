package maildir

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// fillMaildir puts n messages of size bytes (",S=" in the name) in dir.
func fillMaildir(t *testing.T, dir string, n, size int) {
	t.Helper()
	for i := 0; i < n; i++ {
		name := "17000000" + itoa(10+i) + ".M1P1.host,S=" + itoa(size)
		writeFile(t, filepath.Join(dir, "cur", name+":2,S"), strings.Repeat("x", size), time.Time{})
	}
}

func TestMaildirsizeRules(t *testing.T) {
	// The real usage in every case: INBOX 2 x 100, Work 1 x 50; Trash
	// 1 x 1000 is not counted.
	const used, count = 250, 3
	long := "1000S\n" + strings.Repeat("           1            0\n", 200)
	cases := []struct {
		name       string
		content    string // "" = no file
		age        time.Duration
		wantRecalc bool
		wantBytes  int64
	}{
		{"missing", "", 0, true, used},
		{"5120 bytes or more", long, 0, true, used},
		{"damaged line", "1000S\n10 1\nnonsense\n", 0, true, used},
		{"truncated line", "1000S\n10 1\n20", 0, true, used},
		{"under quota is trusted", "1000S\n10 1\n", 0, false, 10},
		{"over quota with several lines", "100S\n90 1\n90 1\n", 0, true, used},
		{"over quota, one line, fresh: trusted", "100S\n900 9\n", 0, false, 900},
		{"over quota, one line, 16 minutes old", "100S\n900 9\n", 16 * time.Minute, true, used},
		{"message limit over quota", "1000S,2C\n10 5\n20 1\n", 0, true, used},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			root := newMaildir(t)
			fillMaildir(t, root, 2, 100)
			fillMaildir(t, filepath.Join(root, ".Work"), 1, 50)
			fillMaildir(t, filepath.Join(root, ".Trash"), 1, 1000)
			p := filepath.Join(root, maildirsizeName)
			if c.content != "" {
				writeFile(t, p, c.content, time.Now().Add(-c.age))
			}
			q, err := ReadQuota(root, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if q.UsedBytes != c.wantBytes {
				t.Errorf("UsedBytes %d, want %d", q.UsedBytes, c.wantBytes)
			}
			data, _ := os.ReadFile(p)
			recalculated := strings.HasSuffix(string(data), "\n250 3\n") && strings.Count(string(data), "\n") == 2
			if recalculated != c.wantRecalc {
				t.Errorf("recalculated = %v, want %v; file now %q", recalculated, c.wantRecalc, data)
			}
			if c.wantRecalc && c.content != "" && !strings.HasPrefix(string(data), strings.SplitN(c.content, "\n", 2)[0]+"\n") {
				t.Errorf("recalculation lost the limit header: %q", data)
			}
			if c.wantRecalc && q.UsedMessages != count {
				t.Errorf("UsedMessages %d, want %d", q.UsedMessages, count)
			}
		})
	}
}

func TestQuotaAdminFunctions(t *testing.T) {
	root := newMaildir(t)
	fillMaildir(t, root, 2, 100)
	fillMaildir(t, filepath.Join(root, ".Work"), 1, 50)
	fillMaildir(t, filepath.Join(root, ".Trash"), 1, 1000)
	writeFile(t, filepath.Join(root, maildirsizeName), "5000S\n7 1\n", time.Time{})

	before, after, err := RecalcQuota(root, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if before.UsedBytes != 7 || after.UsedBytes != 250 || after.UsedMessages != 3 || after.LimitBytes != 5000 {
		t.Errorf("RecalcQuota = %+v -> %+v", before, after)
	}
	_, with, err := RecalcQuota(root, Options{IncludeTrash: true})
	if err != nil || with.UsedBytes != 1250 {
		t.Errorf("RecalcQuota with Trash = %+v, %v; want 1250 bytes", with, err)
	}
	if err := SetQuotaLimit(root, 262144000, 1000); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(root, maildirsizeName))
	if !strings.HasPrefix(string(data), "262144000S,1000C\n1250 4\n") {
		t.Errorf("after SetQuotaLimit: %q", data)
	}
	q, err := ReadQuota(root, Options{})
	if err != nil || q.LimitBytes != 262144000 || q.LimitMessages != 1000 || q.UsedBytes != 1250 {
		t.Errorf("ReadQuota = %+v, %v", q, err)
	}
	// A recalculation that ReadQuota triggers counts Trash as told.
	for _, include := range []bool{false, true} {
		os.Remove(filepath.Join(root, maildirsizeName))
		q, err := ReadQuota(root, Options{IncludeTrash: include})
		want := map[bool]int64{false: 250, true: 1250}[include]
		if err != nil || q.UsedBytes != want {
			t.Errorf("ReadQuota(IncludeTrash=%v) after removing maildirsize = %+v, %v; want %d bytes", include, q, err, want)
		}
	}
	fu, err := FolderUsage(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []FolderStat{{"INBOX", 2, 200, false}, {"Trash", 1, 1000, true}, {"Work", 1, 50, false}}
	if len(fu) != len(want) {
		t.Fatalf("FolderUsage = %+v", fu)
	}
	for i := range want {
		if fu[i] != want[i] {
			t.Errorf("FolderUsage[%d] = %+v, want %+v", i, fu[i], want[i])
		}
	}
}

func TestQuotaAccounting(t *testing.T) {
	root := newMaildir(t)
	s := newTestStore(t, Options{GracePercent: 10})
	ctx := context.Background()
	u, err := s.Open(ctx, backend.Account{Name: "bob", Maildir: root, QuotaBytes: 1000, UID: -1, GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	// Counted when first needed, not at login.
	if _, err := os.Lstat(filepath.Join(root, maildirsizeName)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("maildirsize after Open: %v, want none yet", err)
	}
	in, _ := u.OpenMailbox(ctx, "INBOX")
	defer in.Close()
	msg := strings.Repeat("y", 500)
	if _, err := in.Append(ctx, strings.NewReader(msg), backend.AppendOptions{}); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(filepath.Join(root, maildirsizeName))
	if string(data) != "1000S\n0 0\n500 1\n" {
		t.Errorf("maildirsize after the first append = %q, want the account's limit and the counts", data)
	}
	// 500 + 550 = 1050 <= 1000 + 10%: the grace lets it through.
	if _, err := in.Append(ctx, strings.NewReader(msg+strings.Repeat("y", 50)), backend.AppendOptions{}); err != nil {
		t.Fatalf("append within grace: %v", err)
	}
	if _, err := in.Append(ctx, strings.NewReader("z"), backend.AppendOptions{}); !errors.Is(err, backend.ErrOverQuota) {
		t.Fatalf("append over grace = %v, want ErrOverQuota", err)
	}
	tmp, _ := os.ReadDir(filepath.Join(root, "tmp"))
	if len(tmp) != 0 {
		t.Errorf("refused append left %d files in tmp/", len(tmp))
	}
	snap, _ := in.Sync(ctx)
	// Moving to Trash frees quota (Trash is not counted); moving back is checked.
	if _, err := in.Move(ctx, []backend.UID{snap.Messages()[0].UID}, "Trash"); err != nil {
		t.Fatal(err)
	}
	q, _ := u.Quota(ctx)
	if q.UsedBytes != 550 || q.UsedMessages != 1 {
		t.Errorf("quota after move to Trash %+v, want 550/1", q)
	}
	data, _ = os.ReadFile(filepath.Join(root, maildirsizeName))
	// (Over quota with several lines, the check recounted it: "1050 2".)
	if !strings.HasSuffix(string(data), "\n1050 2\n-500 -1\n") {
		t.Errorf("maildirsize deltas %q", data)
	}
	u.(*user).acct.QuotaBytes = 600
	trash, _ := u.OpenMailbox(ctx, "Trash")
	defer trash.Close()
	ts, _ := trash.Sync(ctx)
	if _, err := trash.Move(ctx, []backend.UID{ts.Messages()[0].UID}, "INBOX"); !errors.Is(err, backend.ErrOverQuota) {
		t.Errorf("move out of Trash over quota = %v, want ErrOverQuota", err)
	}
	if ts2, _ := trash.Sync(ctx); len(ts2.Messages()) != 1 {
		t.Errorf("refused move lost the message from Trash")
	}
}
