package torture

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
)

var tortureFlag = flag.Bool("torture", false, "run the long forms: hundreds of kills, a 10-minute soak (make torture)")

// long reports whether the long forms run (make torture).
func long() bool { return *tortureFlag || os.Getenv("ROOST_TORTURE") == "1" }

// binDir holds imapd, pop3d, lmtpd and roostctl, built once per run
// without -race: the binaries are the system under test, killed and
// restarted many times, and the race detector would only slow them.
var binDir string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "roost-torture-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cmd := exec.Command("go", "build", "-o", dir+"/", "./cmd/imapd", "./cmd/pop3d", "./cmd/lmtpd", "./cmd/roostctl")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// site is one mail host: a config file, a passwd-file and a mail root.
type site struct {
	t      *testing.T
	dir    string
	root   string
	users  string
	config string
}

const sitePasswd = "alice:{PLAIN}alicepw::::::\nbob:{PLAIN}bobpw::::::\ncarol:{PLAIN}carolpw::::::\n"

// newSite writes a config with every listener on 127.0.0.1:0 (the daemons
// log the port they got), plaintext logins allowed, root allowed, and
// extra appended (YAML sections the test adds). root "" puts the mail
// root in a temporary directory.
func newSite(t *testing.T, root, extra string) *site {
	t.Helper()
	dir := t.TempDir()
	if root == "" {
		root = filepath.Join(dir, "vmail")
	}
	s := &site{t: t, dir: dir, root: root, users: filepath.Join(dir, "users"), config: filepath.Join(dir, "roost.yaml")}
	if err := os.MkdirAll(root, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.users, []byte(sitePasswd), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := "mail:\n  root: " + root + "\n  fsync: true\n" +
		"auth:\n  backend: file\n  file:\n    path: " + s.users + "\n" +
		"imap:\n  listen: [\"127.0.0.1:0\"]\n  max_user_ip_connections: 200\n" +
		"pop3:\n  listen: [\"127.0.0.1:0\"]\n" +
		"lmtp:\n  listen: [\"127.0.0.1:0\"]\n  local_domains: [example.edu]\n  hostname: mx.example.edu\n" +
		"metrics:\n  listen:\n    imapd: 127.0.0.1:0\n    pop3d: 127.0.0.1:0\n    lmtpd: 127.0.0.1:0\n" +
		"security:\n  allow_plaintext_auth: true\n  allow_root: true\n  max_connections: 1000\n  auth_penalty_max: 50ms\n" +
		extra
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

// maildir is the Maildir of user.
func (s *site) maildir(user string) string { return filepath.Join(s.root, user, "Maildir") }

// roostctl runs the real roostctl with the site's config.
func (s *site) roostctl(args ...string) (stdout, stderr string, code int) {
	cmd := exec.Command(filepath.Join(binDir, "roostctl"), append([]string{"--config", s.config}, args...)...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	code = 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("roostctl %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// quotaJSON is the contract part of `roostctl quota get --json`.
type quotaJSON struct {
	UsedBytes int64 `json:"used_bytes"`
	Messages  int64 `json:"messages"`
}

func (s *site) quotaGet(user string) quotaJSON {
	s.t.Helper()
	out, errOut, code := s.roostctl("quota", "get", user, "--json")
	var q quotaJSON
	if code != 0 || json.Unmarshal([]byte(out), &q) != nil {
		s.t.Fatalf("roostctl quota get %s: exit %d\n%s%s", user, code, out, errOut)
	}
	return q
}

// syncBuf is a log collector several goroutines write to.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// daemon is one of imapd, pop3d, lmtpd, restartable after a kill.
type daemon struct {
	t       *testing.T
	name    string
	site    *site
	log     *syncBuf // every incarnation's stderr
	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	addr    string // protocol listener of the current incarnation
	metrics string
	starts  int
}

var (
	listenRe  = regexp.MustCompile(`msg=listening .*?addr=(\S+)`)
	metricsRe = regexp.MustCompile(`msg="serving metrics" .*?addr=(\S+)`)
)

// start runs the named daemon and waits until it listens.
func (s *site) start(name string) *daemon {
	s.t.Helper()
	d := &daemon{t: s.t, name: name, site: s, log: &syncBuf{}}
	d.launch()
	s.t.Cleanup(func() {
		d.kill()
		if s.t.Failed() {
			s.t.Logf("%s log (last 4000 bytes):\n%s", name, tail(d.log.String(), 4000))
		}
	})
	return d
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// launch starts a new incarnation and waits for its "listening" line.
func (d *daemon) launch() {
	d.t.Helper()
	cur := &syncBuf{}
	cmd := exec.Command(filepath.Join(binDir, d.name), "--config", d.site.config)
	w := &teeWriter{a: d.log, b: cur}
	cmd.Stderr, cmd.Stdout = w, w
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := cur.String()
		if m := listenRe.FindStringSubmatch(out); m != nil && strings.Contains(out, "msg=started") {
			d.mu.Lock()
			d.cmd, d.done, d.addr = cmd, done, m[1]
			if mm := metricsRe.FindStringSubmatch(out); mm != nil {
				d.metrics = mm[1]
			}
			d.starts++
			d.mu.Unlock()
			return
		}
		select {
		case <-done:
			d.t.Fatalf("%s exited before listening:\n%s", d.name, out)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			d.t.Fatalf("%s not listening after 30s:\n%s", d.name, out)
		}
	}
}

type teeWriter struct{ a, b *syncBuf }

func (w *teeWriter) Write(p []byte) (int, error) {
	w.a.Write(p)
	return w.b.Write(p)
}

// kill sends SIGKILL and waits for the process to be gone.
func (d *daemon) kill() {
	d.mu.Lock()
	cmd, done := d.cmd, d.done
	d.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// restart kills the daemon (if it runs) and starts it again.
func (d *daemon) restart() {
	d.t.Helper()
	d.kill()
	d.launch()
}

func (d *daemon) address() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.addr
}

// alive reports whether the current incarnation still runs.
func (d *daemon) alive() bool {
	d.mu.Lock()
	done := d.done
	d.mu.Unlock()
	select {
	case <-done:
		return false
	default:
		return true
	}
}

func (d *daemon) pid() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd.Process.Pid
}

// procStatus reads a kB field (VmRSS, VmHWM) of /proc/PID/status in bytes.
func (d *daemon) procStatus(field string) int64 {
	d.t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid()))
	if err != nil {
		d.t.Fatalf("%s: %v", d.name, err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(l, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				d.t.Fatalf("%s %s: %q", d.name, field, l)
			}
			return kb << 10
		}
	}
	d.t.Fatalf("%s: no %s in /proc/%d/status", d.name, field, d.pid())
	return 0
}

// metric reads one unlabelled sample (go_goroutines) from the daemon's
// Prometheus endpoint.
func (d *daemon) metric(name string) float64 {
	d.t.Helper()
	c, err := net.DialTimeout("tcp", d.metrics, 5*time.Second)
	if err != nil {
		d.t.Fatalf("%s metrics: %v", d.name, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err == nil {
				return f
			}
		}
	}
	d.t.Fatalf("%s metrics: no %s", d.name, name)
	return 0
}

// deadlineConn bounds every read and write, so that a hung server fails
// the test instead of hanging it.
type deadlineConn struct {
	net.Conn
	d time.Duration
}

func (c deadlineConn) Read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.d))
	return c.Conn.Read(p)
}

func (c deadlineConn) Write(p []byte) (int, error) {
	c.Conn.SetWriteDeadline(time.Now().Add(c.d))
	return c.Conn.Write(p)
}

func dial(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return deadlineConn{c, 20 * time.Second}, nil
}

// imapLogin connects go-imap's client to addr and logs in.
func imapLogin(addr, user, pass string) (*imapclient.Client, error) {
	nc, err := dial(addr)
	if err != nil {
		return nil, err
	}
	c := imapclient.New(nc, nil)
	if err := c.WaitGreeting(); err != nil {
		c.Close()
		return nil, err
	}
	if err := c.Login(user, pass).Wait(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// message builds a test message whose Message-ID is <id@torture> and
// whose last line is "END id", so a truncated copy is recognisable. Lines
// end in CRLF; size is approximate.
func message(id string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: sender@example.org\r\nTo: alice@example.edu\r\nSubject: torture %s\r\nMessage-ID: <%s@torture>\r\nDate: Wed, 25 Nov 2026 12:00:00 +0000\r\n\r\n", id, id)
	line := strings.Repeat("0123456789abcdef", 4) + "\r\n"
	for b.Len() < size {
		b.WriteString(line)
	}
	fmt.Fprintf(&b, "END %s\r\n", id)
	return b.Bytes()
}

var msgIDRe = regexp.MustCompile(`(?im)^Message-ID:\s*<([^@>]+)@torture>`)

// parseMessage returns the id of a test message and whether it is whole.
func parseMessage(data []byte) (id string, whole bool) {
	hdr := data
	if i := bytes.Index(data, []byte("\n\n")); i >= 0 {
		hdr = data[:i]
	}
	if i := bytes.Index(hdr, []byte("\r\n\r\n")); i >= 0 {
		hdr = hdr[:i]
	}
	m := msgIDRe.FindSubmatch(hdr)
	if m == nil {
		return "", false
	}
	id = string(m[1])
	return id, bytes.HasSuffix(bytes.TrimRight(data, "\r\n"), []byte("END "+id))
}

// textClient is a line-based client for POP3 and LMTP.
type textClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialText(addr string) (*textClient, string, error) {
	c, err := dial(addr)
	if err != nil {
		return nil, "", err
	}
	tc := &textClient{c: c, r: bufio.NewReader(c)}
	greet, err := tc.line()
	if err != nil {
		c.Close()
		return nil, "", err
	}
	return tc, greet, nil
}

func (tc *textClient) Close() error { return tc.c.Close() }

func (tc *textClient) line() (string, error) {
	l, err := tc.r.ReadString('\n')
	return strings.TrimRight(l, "\r\n"), err
}

// cmd sends one line and reads one reply line.
func (tc *textClient) cmd(format string, a ...any) (string, error) {
	if _, err := fmt.Fprintf(tc.c, format+"\r\n", a...); err != nil {
		return "", err
	}
	return tc.line()
}

// multi reads a POP3 multi-line body after a +OK, unstuffing dots.
func (tc *textClient) multi() ([]byte, error) {
	var b bytes.Buffer
	for {
		l, err := tc.line()
		if err != nil {
			return b.Bytes(), err
		}
		if l == "." {
			return b.Bytes(), nil
		}
		b.WriteString(strings.TrimPrefix(l, "."))
		b.WriteString("\r\n")
	}
}

// pop3Login opens a POP3 session.
func pop3Login(addr, user, pass string) (*textClient, error) {
	tc, greet, err := dialText(addr)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(greet, "+OK") {
		tc.Close()
		return nil, fmt.Errorf("pop3 greeting %q", greet)
	}
	for _, c := range []string{"USER " + user, "PASS " + pass} {
		r, err := tc.cmd("%s", c)
		if err != nil || !strings.HasPrefix(r, "+OK") {
			tc.Close()
			return nil, fmt.Errorf("pop3 %s: %q %v", strings.Fields(c)[0], r, err)
		}
	}
	return tc, nil
}

// lmtpSend delivers msg to rcpts in one LMTP transaction and returns one
// reply per accepted recipient (RCPT refusals are returned in their
// place). An error means the outcome is unknown.
func lmtpSend(addr string, rcpts []string, msg []byte) ([]string, error) {
	tc, greet, err := dialText(addr)
	if err != nil {
		return nil, err
	}
	defer tc.Close()
	if !strings.HasPrefix(greet, "220") {
		return nil, fmt.Errorf("lmtp greeting %q", greet)
	}
	if _, err := fmt.Fprintf(tc.c, "LHLO torture\r\n"); err != nil {
		return nil, err
	}
	for {
		l, err := tc.line()
		if err != nil {
			return nil, err
		}
		if !strings.HasPrefix(l, "250") {
			return nil, fmt.Errorf("LHLO: %q", l)
		}
		if strings.HasPrefix(l, "250 ") {
			break
		}
	}
	if r, err := tc.cmd("MAIL FROM:<sender@example.org>"); err != nil || !strings.HasPrefix(r, "250") {
		return nil, fmt.Errorf("MAIL: %q %v", r, err)
	}
	replies := make([]string, len(rcpts))
	var accepted []int
	for i, rc := range rcpts {
		r, err := tc.cmd("RCPT TO:<%s>", rc)
		if err != nil {
			return nil, err
		}
		replies[i] = r
		if strings.HasPrefix(r, "250") {
			accepted = append(accepted, i)
		}
	}
	if len(accepted) == 0 {
		return replies, nil
	}
	if r, err := tc.cmd("DATA"); err != nil || !strings.HasPrefix(r, "354") {
		return nil, fmt.Errorf("DATA: %q %v", r, err)
	}
	var b bytes.Buffer
	for _, l := range strings.SplitAfter(string(msg), "\n") {
		if strings.HasPrefix(l, ".") {
			b.WriteByte('.')
		}
		b.WriteString(l)
	}
	b.WriteString(".\r\n")
	if _, err := tc.c.Write(b.Bytes()); err != nil {
		return nil, err
	}
	for _, i := range accepted {
		if replies[i], err = tc.line(); err != nil {
			return nil, err
		}
	}
	tc.cmd("QUIT")
	return replies, nil
}
