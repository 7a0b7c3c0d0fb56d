package pop3d_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/roost-mail/roost/backend/storetest"
	"github.com/roost-mail/roost/internal/testenv"
	"github.com/roost-mail/roost/maildir"
	"github.com/roost-mail/roost/pop3d"
)

const dovecotPOP3 = "/usr/lib/dovecot/pop3"

// dovecotUIDL runs Debian's Dovecot pop3 in pre-authenticated mode on
// user's Maildir (as uid 65534, since Dovecot refuses root) and returns the
// lines of its UIDL answer.
func (e *env) dovecotUIDL(user string) []string {
	e.t.Helper()
	bin := testenv.Require(e.t, dovecotPOP3, "dovecot-pop3d")
	conf := e.dovecotConf(user)
	cmd := exec.Command(bin, "-c", conf)
	cmd.Env = []string{"USER=" + user, "HOME=" + filepath.Dir(e.maildir(user))}
	cmd.Stdin = strings.NewReader("UIDL\r\nQUIT\r\n")
	stdout, err := cmd.Output()
	out := string(stdout)
	if err != nil || !strings.HasPrefix(out, "+OK") {
		log, _ := os.ReadFile(filepath.Join(filepath.Dir(conf), "log"))
		e.t.Fatalf("dovecot pop3: %v\n%s\n%s", err, out, log)
	}
	lines := strings.Split(strings.ReplaceAll(out, "\r\n", "\n"), "\n")
	end := 1
	for end < len(lines) && lines[end] != "." {
		end++
	}
	return lines[1:end]
}

// dovecotConf writes a configuration for Dovecot's pop3 binary serving
// user's Maildir as uid 65534 (Dovecot refuses root) and makes the Maildir
// reachable and owned by that uid.
func (e *env) dovecotConf(user string) string {
	e.t.Helper()
	if os.Geteuid() != 0 {
		e.t.Skip("running Dovecot's pop3 as uid 65534 needs root")
	}
	dir := e.t.TempDir()
	conf := filepath.Join(dir, "dovecot.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/log
ssl = no
mail_location = maildir:%[2]s
mail_uid = 65534
mail_gid = 65534
first_valid_uid = 0
first_valid_gid = 0
`, dir, e.maildir(user))), 0o644)
	if err != nil {
		e.t.Fatal(err)
	}
	for p := e.maildir(user); p != "/" && p != os.TempDir(); p = filepath.Dir(p) {
		os.Chmod(p, 0o755)
	}
	filepath.Walk(e.maildir(user), func(f string, _ os.FileInfo, _ error) error { return os.Chown(f, 65534, 65534) })
	os.Chmod(dir, 0o755)
	return conf
}

// roostUIDL returns the lines of Roost's UIDL answer for user.
func (e *env) roostUIDL(user, pass string) []string {
	e.t.Helper()
	c := e.waitLogin(user, pass)
	c.send("UIDL")
	if l := c.line(); l != "+OK" {
		e.t.Fatalf("UIDL: %q", l)
	}
	var lines []string
	for l := c.line(); l != "."; l = c.line() {
		lines = append(lines, l)
	}
	c.run("C: QUIT\nS: +OK...")
	return lines
}

// TestDovecotUIDLs: a Maildir that Dovecot served shows POP3 clients
// exactly Dovecot's UIDLs under Roost ("capture UIDL on the old server and
// the new one, and diff"), including a per-message UIDL migrated into the
// dovecot-uidlist P field; and Dovecot agrees with a Maildir Roost started.
func TestDovecotUIDLs(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1, msg2, msg3)
	dove := e.dovecotUIDL("alice")
	if len(dove) != 3 || !regexp.MustCompile(`^1 000000016[0-9a-f]{7}$`).MatchString(dove[0]) {
		t.Fatalf("Dovecot's UIDLs look unexpected: %q", dove)
	}
	if got := e.roostUIDL("alice", "secret"); strings.Join(got, "\n") != strings.Join(dove, "\n") {
		t.Errorf("UIDLs differ\nDovecot %q\nRoost   %q", dove, got)
	}

	// A UIDL migrated from Courier sits in the uidlist's P field.
	ul := filepath.Join(e.maildir("alice"), "dovecot-uidlist")
	b, err := os.ReadFile(ul)
	if err != nil {
		t.Fatal(err)
	}
	migrated := regexp.MustCompile(`(?m)^2 `).ReplaceAllString(string(b), "2 PUID2-1795628372 ")
	if migrated == string(b) {
		t.Fatalf("no record for UID 2 in\n%s", b)
	}
	if err := os.WriteFile(ul, []byte(migrated), 0o644); err != nil {
		t.Fatal(err)
	}
	dove = e.dovecotUIDL("alice")
	if dove[1] != "2 UID2-1795628372" {
		t.Fatalf("Dovecot does not show the P field: %q", dove)
	}
	if got := e.roostUIDL("alice", "secret"); strings.Join(got, "\n") != strings.Join(dove, "\n") {
		t.Errorf("with a P field, UIDLs differ\nDovecot %q\nRoost   %q", dove, got)
	}

	// The other way round: Roost first, then Dovecot.
	e.deliver("bob", msg2, msg1)
	roost := e.roostUIDL("bob", "hunter2")
	// Roost's store records the sizes it measures in the uidlist in the
	// background, as root here: let it finish before Dovecot (uid 65534)
	// takes the Maildir over.
	if err := e.store.(*maildir.Store).Close(); err != nil {
		t.Fatal(err)
	}
	if got := e.dovecotUIDL("bob"); strings.Join(got, "\n") != strings.Join(roost, "\n") {
		t.Errorf("Dovecot after Roost: UIDLs differ\nRoost   %q\nDovecot %q", roost, got)
	}
}

// TestDovecotUidlistFixture reads the files Dovecot 2.3 left in a Maildir
// (observed on Debian 12, formats.md 2.6 and 3.1) without needing Dovecot:
// UID 1 under UIDVALIDITY 1795628282 must be 000000016b071cfa, and a P
// field must win.
func TestDovecotUidlistFixture(t *testing.T) {
	e := newEnv(t, nil)
	md := e.maildir("alice")
	e.deliver("alice") // the directories
	// 14 lines, 294 octets with LF, 308 with CRLF: the S= and W= in the name.
	body := "Subject: from Dovecot\n\n" + strings.Repeat("012345678901234567890\n", 11) + strings.Repeat("x", 28) + "\n"
	if len(body) != 294 || strings.Count(body, "\n") != 14 {
		t.Fatalf("fixture is %d octets, %d lines", len(body), strings.Count(body, "\n"))
	}
	files := map[string]string{
		"cur/1795628282.M554387P26027.vm,S=294,W=308:2,FSab": body,
		"cur/1795628290.M1P26027.vm:2,S":                     "Subject: migrated\n\nx\n",
		"dovecot-uidlist": "3 V1795628282 N5 G38460b21fa1c076bab65000083ecc375\n" +
			"1 :1795628282.M554387P26027.vm,S=294,W=308\n" +
			"4 PUID7-1795628372 W23 :1795628290.M1P26027.vm\n",
		"dovecot-keywords": "0 $Junk\n1 $Label1\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(md, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	e.login("alice", "secret").run(`
		C: UIDL
		S: +OK
		S: 1 000000016b071cfa
		S: 2 UID7-1795628372
		S: .
		C: LIST
		S: +OK 2 messages (331 octets)
		S: 1 308
		S: 2 23
		S: .`)
}

// TestDovecotSameAnswers runs the same commands through Debian's Dovecot
// pop3 and through Roost on one Maildir of awkward messages: apart from
// the free text after "+OK", every line must be the same — sizes, UIDLs,
// dot-stuffed bodies, TOP cut-offs, messages without a final newline.
func TestDovecotSameAnswers(t *testing.T) {
	e := newEnv(t, nil)
	// Dovecot 2.3.19 does not stuff a "." that is the very first byte of a
	// message (Roost does, as RFC 1939 says); real messages start with a
	// header, so the comparison uses only such messages.
	msgs := slices.DeleteFunc(slices.Clone(tricky), func(m string) bool { return m[0] == '.' })
	msgs = append(msgs, "Subject: dots\n\n.\n..\n.x\n\n.\n")
	e.deliver("alice", msgs...)
	cmds := []string{"STAT", "LIST", "UIDL"}
	for i := range msgs {
		cmds = append(cmds, fmt.Sprintf("RETR %d", i+1), fmt.Sprintf("TOP %d 1", i+1), fmt.Sprintf("LIST %d", i+1))
	}
	cmds = append(cmds, "DELE 2", "STAT", "RSET", "STAT", "QUIT")
	script := strings.Join(cmds, "\r\n") + "\r\n"

	bin := testenv.Require(t, dovecotPOP3, "dovecot-pop3d")
	conf := e.dovecotConf("alice")
	cmd := exec.Command(bin, "-c", conf)
	cmd.Env = []string{"USER=alice", "HOME=" + filepath.Dir(e.maildir("alice"))}
	cmd.Stdin = strings.NewReader(script)
	dove, err := cmd.Output()
	if err != nil {
		t.Fatalf("dovecot pop3: %v", err)
	}

	// Roost three times: from the files as stored (RETR converting while
	// dot-stuffing), through the store's CRLF reader, and over a store that
	// has measured no size yet, on the same Maildir.
	conv := newEnv(t, func(o *pop3d.Options) { o.Store, o.Auth = convertingStore{o.Store}, e.users })
	unmeasured := &storetest.SizeHider{}
	lazy := newEnv(t, func(o *pop3d.Options) { unmeasured.Store, o.Store, o.Auth = o.Store, unmeasured, e.users })
	for _, srv := range []*env{e, conv, lazy} {
		c := srv.waitLogin("alice", "secret")
		c.send(strings.Split(strings.TrimSuffix(script, "\r\n"), "\r\n")...)
		var roost []string
		for {
			l := c.line()
			roost = append(roost, l)
			if strings.HasPrefix(l, "+OK Bye") || strings.HasPrefix(l, "<") {
				break
			}
		}
		compareWithDovecot(t, string(dove), roost)
	}
	if n := unmeasured.Calls.Load(); n != int64(len(msgs)) {
		t.Errorf("the run over unmeasured sizes measured %d messages, want %d", n, len(msgs))
	}
}

// compareWithDovecot compares the answers of Dovecot and Roost to the same
// commands, line by line.
func compareWithDovecot(t *testing.T, dove string, roost []string) {
	t.Helper()
	// Status lines: compare the status and, for STAT and single LIST/UIDL
	// answers, the numbers; Dovecot's free text differs from Roost's.
	norm := func(lines []string) []string {
		var out []string
		for _, l := range lines {
			if rest, ok := strings.CutPrefix(l, "+OK"); ok {
				f := strings.Fields(rest)
				if len(f) >= 2 && isNumber(f[0]) && isNumber(f[1]) {
					l = "+OK " + f[0] + " " + f[1]
				} else {
					l = "+OK"
				}
			}
			out = append(out, l)
		}
		return out
	}
	d := norm(strings.Split(strings.TrimSuffix(strings.ReplaceAll(dove, "\r\n", "\n"), "\n"), "\n"))
	r := norm(roost)
	if len(d) != len(r) {
		t.Fatalf("Dovecot gave %d lines, Roost %d\nDovecot %q\nRoost   %q", len(d), len(r), d, r)
	}
	for i := range d {
		if d[i] != r[i] {
			t.Errorf("line %d: Dovecot %q, Roost %q", i+1, d[i], r[i])
		}
	}
}

func isNumber(s string) bool {
	_, err := strconv.ParseUint(s, 10, 64)
	return err == nil
}
