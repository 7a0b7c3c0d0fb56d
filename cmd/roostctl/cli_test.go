package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/maildir"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// The tests run the real roostctl binary, built once per test run.
var roostctlBin string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "roostctl-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	roostctlBin = filepath.Join(dir, "roostctl")
	if out, err := exec.Command("go", "build", "-o", roostctlBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build roostctl: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// site is a mail host in a temporary directory: config, passwd-file and
// Maildirs with known contents.
type site struct {
	t      *testing.T
	dir    string
	root   string
	config string
	users  string
}

// siteUsers: alice 10 KB of 40 KB (25%), bob 36 KB of 40 KB (90%),
// carol unlimited, dave (no mail yet) with the 1 MB default.
const siteUsers = `alice:{PLAIN}alicepw::::::userdb_quota_rule=*:bytes=40960
bob:{PLAIN}bobpw::::::userdb_quota_rule=*:bytes=40960
carol:{PLAIN}carolpw::::::userdb_quota_rule=*:storage=0
dave:{PLAIN}davepw
`

func newSite(t *testing.T, extraConfig string) *site {
	t.Helper()
	dir := t.TempDir()
	s := &site{t: t, dir: dir, root: filepath.Join(dir, "vmail"), config: filepath.Join(dir, "roost.yaml"), users: filepath.Join(dir, "users")}
	if err := os.MkdirAll(s.root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.users, []byte(siteUsers), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf("mail:\n  root: %s\n  fsync: false\nquota:\n  default: 1M\nauth:\n  backend: file\n  file:\n    path: %s\nlmtp:\n  listen: [\"unix:%s/lmtp\"]\n%s",
		s.root, s.users, dir, extraConfig)
	if err := os.WriteFile(s.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return s
}

// fill stores messages of the given sizes (in bytes, LF) in user's folder.
func (s *site) fill(user string, limit int64, folder string, sizes ...int) {
	s.t.Helper()
	ctx := context.Background()
	acct := backend.Account{Name: user, Maildir: filepath.Join(s.root, user, "Maildir"), QuotaBytes: limit, UID: -1, GID: -1}
	// Trash counts, as with the config's default quota.include_trash.
	u, err := maildir.New(maildir.Options{IncludeTrash: true}).Open(ctx, acct)
	if err != nil {
		s.t.Fatal(err)
	}
	defer u.Close()
	if folder != "INBOX" {
		if err := u.CreateMailbox(ctx, folder, ""); err != nil && !errors.Is(err, backend.ErrMailboxExists) {
			s.t.Fatal(err)
		}
	}
	mb, err := u.OpenMailbox(ctx, folder)
	if err != nil {
		s.t.Fatal(err)
	}
	defer mb.Close()
	for i, n := range sizes {
		hdr := fmt.Sprintf("Subject: %d\n\n", i)
		body := strings.Repeat(strings.Repeat("z", 63)+"\n", (n-len(hdr))/64)
		body += strings.Repeat("z", n-len(hdr)-len(body))
		if _, err := mb.Append(ctx, strings.NewReader(hdr+body), backend.AppendOptions{}); err != nil {
			s.t.Fatal(err)
		}
	}
}

// standard fills the Maildirs the golden files describe.
func (s *site) standard() {
	s.fill("alice", 40960, "INBOX", 4096, 4096)
	s.fill("alice", 40960, "Trash", 2048)
	s.fill("bob", 40960, "INBOX", 20480, 16384)
	s.fill("carol", 0, "INBOX", 1000)
}

type result struct {
	stdout, stderr string
	code           int
}

// run runs roostctl with the site's config; stdin may be "".
func (s *site) run(stdin string, args ...string) result {
	s.t.Helper()
	cmd := exec.Command(roostctlBin, append([]string{"--config", s.config}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatal(err)
	}
	return r
}

var reUIDValidity = regexp.MustCompile(`\b1[0-9]{9}\b`)

// golden compares out, with the site's directory replaced by $DIR and
// UIDVALIDITY values masked, to testdata/name.
func (s *site) golden(name, out string) {
	s.t.Helper()
	out = strings.ReplaceAll(out, s.dir, "$DIR")
	out = reUIDValidity.ReplaceAllString(out, "UIDVALIDITY")
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
			s.t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		s.t.Fatalf("%v (run go test -update to create it)", err)
	}
	if string(want) != out {
		s.t.Errorf("%s differs from the golden file:\n--- got\n%s\n--- want\n%s", name, out, want)
	}
}

func (s *site) ok(stdin string, args ...string) string {
	s.t.Helper()
	r := s.run(stdin, args...)
	if r.code != 0 {
		s.t.Fatalf("roostctl %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func TestQuotaGolden(t *testing.T) {
	s := newSite(t, "")
	s.standard()
	for _, tc := range []struct {
		golden string
		args   []string
	}{
		{"quota-get.txt", []string{"quota", "get", "alice"}},
		{"quota-get-v.txt", []string{"quota", "get", "alice", "-v"}},
		{"quota-get.json", []string{"quota", "get", "bob", "--json"}},
		{"quota-get-v.json", []string{"quota", "get", "alice", "-v", "--json"}},
		{"quota-get-nomail.txt", []string{"quota", "get", "dave"}},
		{"quota-report.txt", []string{"quota", "report"}},
		{"quota-report-over.txt", []string{"quota", "report", "--over", "90"}},
		{"quota-report-percent.json", []string{"quota", "report", "--sort", "percent", "--json"}},
		{"quota-report.csv", []string{"quota", "report", "--sort", "used", "--csv"}},
		{"user-lookup.txt", []string{"user", "lookup", "alice"}},
		{"user-lookup.json", []string{"user", "lookup", "bob", "--json"}},
		{"mailbox-list.txt", []string{"mailbox", "list", "alice"}},
		{"mailbox-status.json", []string{"mailbox", "status", "alice", "Trash", "--json"}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			s.t = t
			s.golden(tc.golden, s.ok("", tc.args...))
		})
	}
}

func TestQuotaReportScansMailRoot(t *testing.T) {
	// Without a list from the auth backend (LDAP), report walks mail.root;
	// here a Maildir whose user is not in the passwd-file shows that path.
	s := newSite(t, "")
	s.standard()
	s.fill("ghost", 0, "INBOX", 500)
	out := s.ok("", "quota", "report")
	if strings.Contains(out, "ghost") {
		t.Errorf("report lists a Maildir the passwd-file does not know:\n%s", out)
	}
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		if !strings.Contains(out, u) {
			t.Errorf("report misses %s:\n%s", u, out)
		}
	}
	users, err := scanRoot(s.root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, u := range users {
		names = append(names, u.name)
	}
	if strings.Join(names, ",") != "alice,bob,carol,ghost" {
		t.Errorf("scanRoot found %v", names)
	}
}

func TestQuotaRecalcReportsDrift(t *testing.T) {
	s := newSite(t, "")
	s.standard()
	// A file removed behind the servers' back (a cron job, a restore).
	files, _ := filepath.Glob(filepath.Join(s.root, "bob", "Maildir", "new", "*"))
	if len(files) == 0 {
		files, _ = filepath.Glob(filepath.Join(s.root, "bob", "Maildir", "cur", "*"))
	}
	if err := os.Remove(files[0]); err != nil {
		t.Fatal(err)
	}
	s.golden("quota-recalc.txt", s.ok("", "quota", "recalc", "bob"))
	s.golden("quota-recalc-all.json", s.ok("", "quota", "recalc", "--all", "--json"))
}

func TestAuthTestAndPwHash(t *testing.T) {
	s := newSite(t, "")
	if out := s.ok("alicepw\n", "auth", "test", "alice"); !strings.Contains(out, "auth test alice: OK") {
		t.Errorf("good password: %q", out)
	}
	r := s.run("letmein\n", "auth", "test", "alice")
	if r.code != 1 || !strings.Contains(r.stdout, "FAILED") || strings.Contains(r.stdout+r.stderr, "letmein") {
		t.Errorf("wrong password: exit %d, %q %q", r.code, r.stdout, r.stderr)
	}
	for _, scheme := range []string{"SHA512-CRYPT", "BLF-CRYPT", "ARGON2ID"} {
		hash := strings.TrimSpace(s.ok("s3cret pw\n", "pw", "hash", "--scheme", scheme))
		if !strings.HasPrefix(hash, "{"+scheme+"}") || strings.Contains(hash, "s3cret") {
			t.Fatalf("pw hash --scheme %s printed %q", scheme, hash)
		}
		// The hash works in the passwd-file.
		if err := os.WriteFile(s.users, []byte("erin:"+hash+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if out := s.ok("s3cret pw\n", "auth", "test", "erin"); !strings.Contains(out, "OK") {
			t.Errorf("%s hash does not verify: %q", scheme, out)
		}
	}
	if r := s.run("", "pw", "hash"); r.code != 1 || !strings.Contains(r.stderr, "no password") {
		t.Errorf("pw hash without input: exit %d %q", r.code, r.stderr)
	}
}

func TestDeliver(t *testing.T) {
	s := newSite(t, "")
	s.fill("bob", 40960, "INBOX", 20480, 16384)
	s.fill("alice", 40960, "lists", 100)
	msg := "From: someone@example.org\nSubject: hello\n\nhi\n"
	for _, tc := range []struct {
		name string
		args []string
		code int
	}{
		{"delivered", []string{"deliver", "-u", "alice"}, 0},
		{"to an existing folder", []string{"deliver", "-u", "alice", "-m", "lists", "-f", "x@example.org"}, 0},
		{"unknown user", []string{"deliver", "-u", "nobody"}, exNoUser},
		{"over quota", []string{"deliver", "-u", "bob"}, exTempFail},
		{"missing -u", []string{"deliver"}, exitUsage},
	} {
		m := msg + tc.name + "\n" // distinct content: the journal would call a repeat a retry
		if r := s.run(m+strings.Repeat("x\n", 3000*boolInt(tc.name == "over quota")), tc.args...); r.code != tc.code {
			t.Errorf("%s: exit %d, want %d\nstderr: %s", tc.name, r.code, tc.code, r.stderr)
		}
	}
	st := s.ok("", "mailbox", "status", "alice", "lists", "--json")
	if !strings.Contains(st, `"messages": 2`) {
		t.Errorf("lists after -m lists: %s", st)
	}
	st = s.ok("", "mailbox", "status", "alice", "--json")
	if !strings.Contains(st, `"messages": 1`) {
		t.Errorf("INBOX after deliver: %s", st)
	}
	// Over quota with quota.permanent: bounce (EX_NOPERM).
	p := newSite(t, "")
	p.fill("bob", 40960, "INBOX", 20480, 16384)
	p.edit("quota:\n", "quota:\n  permanent: true\n")
	if r := p.run(msg+strings.Repeat("x\n", 3000), "deliver", "-u", "bob"); r.code != exNoPerm || !strings.Contains(r.stderr, "5.2.2") {
		t.Errorf("permanent over quota: exit %d %q, want %d with 5.2.2", r.code, r.stderr, exNoPerm)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

// edit replaces old with new in the site's config file.
func (s *site) edit(old, new string) {
	s.t.Helper()
	b, err := os.ReadFile(s.config)
	if err != nil {
		s.t.Fatal(err)
	}
	if !strings.Contains(string(b), old) {
		s.t.Fatalf("config has no %q", old)
	}
	if err := os.WriteFile(s.config, []byte(strings.Replace(string(b), old, new, 1)), 0o644); err != nil {
		s.t.Fatal(err)
	}
}

func TestErrorsAndExitCodes(t *testing.T) {
	s := newSite(t, "")
	s.standard()
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"missing argument", []string{"quota", "get"}, exitUsage, "accepts 1 arg"},
		{"bad flag", []string{"quota", "report", "--sort", "size"}, exitUsage, "--sort"},
		{"recalc needs a user or --all", []string{"quota", "recalc"}, exitUsage, "--all"},
		{"unknown user", []string{"quota", "get", "nobody"}, exitFailure, `user "nobody" not found`},
		{"no Maildir", []string{"mailbox", "list", "dave"}, exitFailure, "has no Maildir"},
		{"no such folder", []string{"mailbox", "status", "alice", "Nope"}, exitFailure, `no folder "Nope"`},
		{"missing config", []string{"--config", "/nonexistent.yaml", "quota", "get", "alice"}, exitFailure, "/nonexistent.yaml"},
	} {
		r := s.run("", tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", tc.name, r.code, r.stderr, tc.code, tc.want)
		}
	}
	// A Maildir that cannot be read: a file where the directory should be.
	if err := os.MkdirAll(filepath.Join(s.root, "dave"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.root, "dave", "Maildir"), []byte("not a dir"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := s.run("", "mailbox", "list", "dave"); r.code != 1 || !strings.Contains(r.stderr, "not a directory") {
		t.Errorf("unreadable Maildir: exit %d %q", r.code, r.stderr)
	}
	// LDAP down: the error says so and what to check.
	l := newSite(t, "")
	l.edit("  backend: file\n", "  backend: ldap\n  ldap:\n    urls: [\"ldap://127.0.0.1:1\"]\n    base_dn: dc=example,dc=edu\n    timeout: 2s\n")
	if r := l.run("", "user", "lookup", "alice"); r.code != 1 || !strings.Contains(r.stderr, "reachable") {
		t.Errorf("LDAP down: exit %d %q", r.code, r.stderr)
	}
}

func TestConfigCheck(t *testing.T) {
	s := newSite(t, "")
	if out := s.ok("", "config", "check"); !strings.Contains(out, ": OK") {
		t.Errorf("good config: %q", out)
	}
	bad := newSite(t, "log:\n  level: loud\nimap:\n  delimiter: \"\"\n")
	r := bad.run("", "config", "check")
	if r.code != 1 || !strings.Contains(r.stdout, "log.level") || !strings.Contains(r.stdout, "imap.delimiter") {
		t.Errorf("two problems: exit %d\n%s", r.code, r.stdout)
	}
	tmpl := newSite(t, "")
	tmplFile := filepath.Join(tmpl.dir, "warning.tmpl")
	os.WriteFile(tmplFile, []byte("Subject: {{.Percent\n\nbody\n"), 0o644)
	tmpl.edit("quota:\n", "quota:\n  warning_template: "+tmplFile+"\n")
	if r := tmpl.run("", "config", "check"); r.code != 1 || !strings.Contains(r.stdout, "warning template") {
		t.Errorf("broken warning template: exit %d\n%s", r.code, r.stdout)
	}
	files := newSite(t, "tls:\n  cert_file: /nonexistent/cert.pem\n  key_file: /nonexistent/key.pem\n")
	os.Remove(files.users)
	r = files.run("", "config", "check")
	if r.code != 1 || !strings.Contains(r.stdout, "auth.file.path") || !strings.Contains(r.stdout, "tls.cert_file") {
		t.Errorf("missing files: exit %d\n%s", r.code, r.stdout)
	}
}
