package maildir

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
)

// The multi-process test re-executes the test binary: several processes
// deliver, flag and expunge in one Maildir while another lists it. It
// proves no message is lost or duplicated, no UID is reused, and the
// uidlist is never seen torn.

const (
	mpRoleEnv = "ROOST_MAILDIR_MP_ROLE" // "deliver:<id>" or "list"
	mpRootEnv = "ROOST_MAILDIR_MP_ROOT"
	mpOutEnv  = "ROOST_MAILDIR_MP_OUT"
	mpCount   = 40
)

// runMultiProcessRole is called from TestMain in child processes.
func runMultiProcessRole(role string) int {
	root, outPath := os.Getenv(mpRootEnv), os.Getenv(mpOutEnv)
	out, err := os.Create(outPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	defer out.Close()
	w := bufio.NewWriter(out)
	defer w.Flush()
	s := New(Options{SpecialUse: map[string]string{}, LockTimeout: time.Minute})
	defer s.Close()
	ctx := context.Background()
	u, err := s.Open(ctx, backend.Account{Name: "mp", Maildir: root, UID: -1, GID: -1})
	if err != nil {
		fmt.Fprintln(w, "ERR open:", err)
		return 1
	}
	mb, err := u.OpenMailbox(ctx, "INBOX")
	if err != nil {
		fmt.Fprintln(w, "ERR open INBOX:", err)
		return 1
	}
	defer mb.Close()
	if id, ok := strings.CutPrefix(role, "deliver:"); ok {
		var mine []backend.UID
		for i := 0; i < mpCount; i++ {
			body := fmt.Sprintf("Subject: %s-%d\n\nfrom process %s\n", id, i, id)
			r, err := mb.Append(ctx, strings.NewReader(body), backend.AppendOptions{})
			if err != nil {
				fmt.Fprintln(w, "ERR append:", err)
				return 1
			}
			fmt.Fprintf(w, "add %d %s-%d\n", r.UID, id, i)
			mine = append(mine, r.UID)
			switch i % 4 {
			case 1:
				if _, err := mb.SetFlags(ctx, []backend.UID{r.UID}, backend.FlagsAdd, backend.FlagSeen, nil); err != nil {
					fmt.Fprintln(w, "ERR flags:", err)
				}
			case 3:
				gone, err := mb.Expunge(ctx, []backend.UID{mine[len(mine)-2]})
				if err != nil || len(gone) != 1 {
					fmt.Fprintln(w, "ERR expunge:", gone, err)
				}
				fmt.Fprintf(w, "del %d\n", mine[len(mine)-2])
			}
		}
		return 0
	}
	// Lister: every snapshot must be ascending, and a key keeps its UID.
	uidOf := map[string]backend.UID{}
	keyOf := map[backend.UID]string{}
	stop := filepath.Join(filepath.Dir(outPath), "stop")
	for n := 0; ; n++ {
		if _, err := os.Stat(stop); err == nil && n > 0 {
			break
		}
		snap, err := mb.Sync(ctx)
		if err != nil {
			fmt.Fprintln(w, "ERR sync:", err)
			return 1
		}
		var last backend.UID
		for _, m := range snap.Messages() {
			if m.UID <= last {
				fmt.Fprintln(w, "ERR snapshot not ascending at", m.UID)
			}
			last = m.UID
			if u, ok := uidOf[m.Key]; ok && u != m.UID {
				fmt.Fprintf(w, "ERR key %s had UID %d, now %d\n", m.Key, u, m.UID)
			}
			if k, ok := keyOf[m.UID]; ok && k != m.Key {
				fmt.Fprintf(w, "ERR UID %d reused: %s then %s\n", m.UID, k, m.Key)
			}
			uidOf[m.Key], keyOf[m.UID] = m.UID, m.Key
		}
		// Readers take no lock: the uidlist must always parse without a bad
		// line (an unterminated last line is an append under way, not one).
		if data, err := os.ReadFile(filepath.Join(root, uidlistName)); err == nil {
			if _, warns, err := parseUidlist(data); err != nil || len(warns) > 0 {
				fmt.Fprintln(w, "ERR torn uidlist:", err, warns)
			}
		}
		fmt.Fprintf(w, "sync %d\n", len(snap.Messages()))
	}
	return 0
}

func TestMultiProcess(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	root := newMaildir(t)
	work := t.TempDir()
	const deliverers = 3
	start := func(role, out string) *exec.Cmd {
		cmd := exec.Command(exe, "-test.run=^$")
		cmd.Env = append(os.Environ(), mpRoleEnv+"="+role, mpRootEnv+"="+root, mpOutEnv+"="+out)
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd
	}
	lister := start("list", filepath.Join(work, "list.out"))
	var cmds []*exec.Cmd
	for i := 0; i < deliverers; i++ {
		cmds = append(cmds, start("deliver:"+strconv.Itoa(i), filepath.Join(work, "deliver"+strconv.Itoa(i)+".out")))
	}
	for _, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Errorf("deliverer: %v", err)
		}
	}
	writeFile(t, filepath.Join(work, "stop"), "", time.Time{})
	if err := lister.Wait(); err != nil {
		t.Errorf("lister: %v", err)
	}

	added := map[backend.UID]string{}
	deleted := map[backend.UID]bool{}
	for i := 0; i <= deliverers; i++ {
		name := "list.out"
		if i < deliverers {
			name = "deliver" + strconv.Itoa(i) + ".out"
		}
		data, err := os.ReadFile(filepath.Join(work, name))
		if err != nil {
			t.Fatal(err)
		}
		syncs := 0
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) == 0:
			case f[0] == "ERR":
				t.Errorf("%s: %s", name, line)
			case f[0] == "add":
				uid, _ := strconv.Atoi(f[1])
				if prev, dup := added[backend.UID(uid)]; dup {
					t.Errorf("UID %d given to %s and %s", uid, prev, f[2])
				}
				added[backend.UID(uid)] = f[2]
			case f[0] == "del":
				uid, _ := strconv.Atoi(f[1])
				deleted[backend.UID(uid)] = true
			case f[0] == "sync":
				syncs++
			}
		}
		if name == "list.out" {
			t.Logf("lister synced %d times", syncs)
		}
	}
	if len(added) != deliverers*mpCount {
		t.Errorf("%d distinct UIDs for %d deliveries", len(added), deliverers*mpCount)
	}
	// A fresh process sees exactly the survivors, each once, with content.
	_, u := openRoot(t, root, Options{SpecialUse: map[string]string{}})
	snap, mb := syncBox(t, u, "INBOX")
	want := len(added) - len(deleted)
	if len(snap.Messages()) != want {
		t.Errorf("%d messages at the end, want %d", len(snap.Messages()), want)
	}
	for _, m := range snap.Messages() {
		subj, ok := added[m.UID]
		if !ok || deleted[m.UID] {
			t.Errorf("UID %d present but not a surviving delivery", m.UID)
			continue
		}
		if body := read(t, mb, m.UID); !strings.Contains(body, "Subject: "+subj+"\r\n") {
			t.Errorf("UID %d holds %q, want subject %s", m.UID, body, subj)
		}
	}
	if tmp, _ := os.ReadDir(filepath.Join(root, "tmp")); len(tmp) != 0 {
		t.Errorf("%d files left in tmp/", len(tmp))
	}
	if _, err := os.Stat(filepath.Join(root, uidlistName+".lock")); err == nil {
		t.Error("uidlist lock left behind")
	}
}
