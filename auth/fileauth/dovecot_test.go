package fileauth

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
)

// dovecot is a private Dovecot instance with no protocols, only its auth
// service over the given passwd-file, for side-by-side checks.
type dovecot struct {
	t       *testing.T
	conf    string
	doveadm string
}

func startDovecot(t *testing.T, users string) *dovecot {
	t.Helper()
	bin := testenv.Require(t, "dovecot", "dovecot-core")
	d := &dovecot{t: t, doveadm: testenv.Require(t, "doveadm", "dovecot-core")}
	dir := t.TempDir()
	for _, sub := range []string{"run", "state"} {
		if err := os.Mkdir(filepath.Join(dir, sub), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	d.conf = filepath.Join(dir, "dovecot.conf")
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
protocols =
ssl = no
auth_failure_delay = 0
default_internal_user = root
default_internal_group = root
default_login_user = root
passdb {
  driver = passwd-file
  args = %[2]s
}
userdb {
  driver = passwd-file
  args = %[2]s
}
`, dir, users)
	if err := os.WriteFile(d.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	// -F keeps the master in the foreground, so the test owns the process.
	cmd := exec.Command(bin, "-F", "-c", d.conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(dir, "run", "auth-userdb")); err == nil {
			return d
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Fatalf("dovecot did not start:\n%s", log)
		}
	}
}

// authOK reports whether Dovecot accepts the password.
func (d *dovecot) authOK(user, password string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, d.doveadm, "-c", d.conf, "auth", "test", user, password).CombinedOutput()
	if ctx.Err() != nil {
		d.t.Errorf("doveadm auth test %s timed out: %s", user, out)
	}
	return err == nil
}

// userFields returns Dovecot's userdb fields for user.
func (d *dovecot) userFields(user string) map[string]string {
	out, err := exec.Command(d.doveadm, "-c", d.conf, "user", user).CombinedOutput()
	if err != nil {
		d.t.Fatalf("doveadm user %s: %v\n%s", user, err, out)
	}
	f := map[string]string{}
	for _, line := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(line, "\t"); ok {
			f[k] = v
		}
	}
	return f
}

// TestDovecotAgrees runs Dovecot and Roost on the same passwd-file and
// checks that they accept the same passwords and find the same home,
// Maildir and ids.
func TestDovecotAgrees(t *testing.T) {
	var lines []string
	type login struct {
		user, password string
		tryWrong       bool
	}
	var logins []login
	seen := map[string]bool{}
	for i, v := range doveadmVectors(t) {
		u := fmt.Sprintf("u%02d", i)
		lines = append(lines, fmt.Sprintf("%s:%s", u, v.field))
		logins = append(logins, login{u, v.password, !seen[v.scheme]})
		seen[v.scheme] = true
	}
	lines = append(lines,
		"alice:{PLAIN}alice-pw:1001:1002:Alice:/home/alice:/bin/sh:userdb_quota_rule=*:storage=250M",
		"bob@example.edu:{PLAIN}bob-pw::::::userdb_mail=maildir:/var/vmail/%d/%n:INDEX=/idx/%u userdb_quota_rule=*:bytes=1000",
		"carol:{PLAIN}carol-pw:::::: userdb_home=/srv/carol userdb_mail=maildir:~/Mail userdb_uid=2000 userdb_gid=3000",
	)
	logins = append(logins, login{"alice", "alice-pw", true}, login{"bob@example.edu", "bob-pw", false}, login{"carol", "carol-pw", false})
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d := startDovecot(t, path)
	a, err := New(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Dovecot answers a failed doveadm auth test only after seconds, so
	// wrong passwords (one per scheme) are tried concurrently.
	var wg sync.WaitGroup
	for _, l := range logins {
		pws := []string{l.password}
		if l.tryWrong {
			pws = append(pws, l.password+"x")
		}
		for _, pw := range pws {
			_, err := a.Authenticate(ctx, l.user, pw)
			ours := err == nil
			wg.Go(func() {
				if theirs := d.authOK(l.user, pw); ours != theirs {
					t.Errorf("%s with %q: Roost accepts %v, Dovecot %v", l.user, pw, ours, theirs)
				}
			})
		}
	}
	wg.Wait()
	for _, u := range []string{"alice", "bob@example.edu", "carol"} {
		id, err := a.Lookup(ctx, u)
		if err != nil {
			t.Fatal(err)
		}
		f := d.userFields(u)
		ids := func(n int) string {
			if n < 0 {
				return ""
			}
			return strconv.Itoa(n)
		}
		mail, _, _ := strings.Cut(strings.TrimPrefix(f["mail"], "maildir:"), ":")
		if rest, ok := strings.CutPrefix(mail, "~/"); ok { // Dovecot expands ~ when it opens the mail
			mail = filepath.Join(f["home"], rest)
		}
		if f["home"] != id.Home || mail != id.Maildir || f["uid"] != ids(id.UID) || f["gid"] != ids(id.GID) {
			t.Errorf("%s: Dovecot home=%q mail=%q uid=%q gid=%q; Roost %+v", u, f["home"], f["mail"], f["uid"], f["gid"], id)
		}
	}
}
