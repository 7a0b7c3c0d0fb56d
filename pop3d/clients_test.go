package pop3d_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
	"github.com/roost-mail/roost/pop3d"
)

// command runs a program with a time limit and returns its output.
func command(t *testing.T, dir string, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// tricky messages: dots at line starts, a long line, 8-bit bytes, no
// final newline, an empty body.
var tricky = []string{
	msg1,
	".\n..\n.x\n\n.\n",
	"Subject: long\n\n" + strings.Repeat("0123456789", 99) + "\n",
	"Subject: =?utf-8?q?8bit?=\nContent-Transfer-Encoding: 8bit\n\nGr\xc3\xbc\xc3\x9fe \xff\xfe\n",
	msg3,
	"Subject: empty body\n\n",
}

// TestPythonPoplib fetches with Python's poplib over STLS and compares
// every RETR with the Maildir file, turned into CRLF.
func TestPythonPoplib(t *testing.T) {
	python := testenv.Require(t, "python3", "python3")
	serverTLS, _ := selfSigned(t)
	e := newEnv(t, func(o *pop3d.Options) { o.TLSConfig, o.AllowPlaintextAuth = serverTLS, false })
	e.deliver("alice", tricky...)
	host, port, _ := net.SplitHostPort(e.addr)
	script := `
import poplib, ssl, json, sys, base64
p = poplib.POP3(sys.argv[1], int(sys.argv[2]), timeout=20)
caps = p.capa()
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
p.stls(ctx)
caps_tls = p.capa()
p.user("alice"); p.pass_("secret")
count, size = p.stat()
out = {"stls": "STLS" in caps, "stls_after": "STLS" in caps_tls, "count": count, "size": size, "msgs": [], "uidl": [], "list": []}
for n in range(1, count + 1):
    resp, lines, octets = p.retr(n)
    out["msgs"].append(base64.b64encode(b"\r\n".join(lines) + b"\r\n").decode())
    out["list"].append(int(p.list(n).split()[2]))
out["uidl"] = [l.decode() for l in p.uidl()[1]]
resp, lines, _ = p.top(1, 1)
out["top"] = [l.decode() for l in lines]
p.quit()
print(json.dumps(out))
`
	got, err := command(t, "", "", python, "-c", script, host, port)
	if err != nil {
		t.Fatalf("poplib: %v\n%s", err, got)
	}
	var res struct {
		STLS        bool `json:"stls"`
		StlsAfter   bool `json:"stls_after"`
		Count, Size int
		Msgs        [][]byte
		List        []int
		UIDL        []string
		Top         []string
	}
	if err := json.Unmarshal([]byte(got), &res); err != nil {
		t.Fatalf("%v: %s", err, got)
	}
	if !res.STLS || res.StlsAfter {
		t.Errorf("STLS advertised before TLS %v, after %v", res.STLS, res.StlsAfter)
	}
	var want []string
	total := 0
	for _, m := range tricky {
		w := crlf(m)
		total += len(w)
		if !strings.HasSuffix(w, "\r\n") {
			w += "\r\n" // POP3 needs a line end before the final "."
		}
		want = append(want, w)
	}
	var gotMsgs []string
	for _, m := range res.Msgs {
		gotMsgs = append(gotMsgs, string(m))
	}
	slices.Sort(want)
	slices.Sort(gotMsgs)
	if !slices.Equal(gotMsgs, want) {
		t.Errorf("RETR bytes differ from the Maildir files:\ngot  %q\nwant %q", gotMsgs, want)
	}
	if res.Count != len(tricky) || res.Size != total {
		t.Errorf("STAT %d %d, want %d %d", res.Count, res.Size, len(tricky), total)
	}
	for i, m := range res.Msgs {
		// LIST sizes are exact, except that a message without a final
		// line end gets one on the wire.
		if n := len(m); n != res.List[i] && n != res.List[i]+2 {
			t.Errorf("message %d: LIST says %d octets, RETR gave %d", i+1, res.List[i], n)
		}
	}
	if len(res.UIDL) != len(tricky) {
		t.Errorf("UIDL: %q", res.UIDL)
	}
}

// TestCurl retrieves a message with curl's POP3 support.
func TestCurl(t *testing.T) {
	curl := testenv.Require(t, "curl", "curl")
	e := newEnv(t, nil)
	e.deliver("alice", msg1)
	out, err := command(t, "", "", curl, "-sS", "--max-time", "20", "-u", "alice:secret", "pop3://"+e.addr+"/1")
	if err != nil {
		t.Fatalf("curl: %v\n%s", err, out)
	}
	// curl undoes dot-stuffing and keeps CRLF.
	if want := crlf(msg1); out != want {
		t.Errorf("curl got %q, want %q", out, want)
	}
	out, err = command(t, "", "", curl, "-sS", "--max-time", "20", "-u", "alice:secret", "pop3://"+e.addr+"/")
	if err != nil || out != fmt.Sprintf("1 %d\r\n", size(msg1)) {
		t.Errorf("curl LIST: %q %v", out, err)
	}
}

// TestFetchmail is the "leave mail on server" user: with keep, fetchmail
// tracks UIDLs and fetches every message once however often it runs; a
// later run without keep (flush) empties the maildrop.
func TestFetchmail(t *testing.T) {
	fetchmail := testenv.Require(t, "fetchmail", "fetchmail")
	e := newEnv(t, nil)
	e.deliver("alice", msg1, msg2)
	dir := t.TempDir()
	host, port, _ := net.SplitHostPort(e.addr)
	outDir := filepath.Join(dir, "out")
	os.Mkdir(outDir, 0o700)
	run := func(keep string) (string, int) {
		rc := filepath.Join(dir, "fetchmailrc")
		conf := fmt.Sprintf(`set no syslog
poll %s protocol pop3 port %s uidl auth password timeout 20:
  user "alice" password "secret" is root here %s
  mda "/bin/sh -c 'cat > %s/m.$$'"
`, host, port, keep, outDir)
		if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := command(t, dir, "", fetchmail, "-f", rc, "-i", filepath.Join(dir, "ids"), "--nodetach", "--sslproto", "", "-v")
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return out, code
	}
	fetched := func() []string {
		var subs []string
		ents, _ := os.ReadDir(outDir)
		for _, de := range ents {
			b, _ := os.ReadFile(filepath.Join(outDir, de.Name()))
			for _, l := range strings.Split(string(b), "\n") {
				if s, ok := strings.CutPrefix(strings.TrimRight(l, "\r"), "Subject: "); ok {
					subs = append(subs, s)
				}
			}
		}
		slices.Sort(subs)
		return subs
	}
	if out, code := run("keep"); code != 0 {
		t.Fatalf("fetchmail run 1: exit %d\n%s", code, out)
	}
	if got := fetched(); !slices.Equal(got, []string{"one", "two"}) {
		t.Fatalf("run 1 fetched %q", got)
	}
	// Nothing new: exit 1 ("no mail"), nothing fetched twice.
	if out, code := run("keep"); code != 1 {
		t.Fatalf("fetchmail run 2: exit %d, want 1 (no new mail)\n%s", code, out)
	}
	e.deliver("alice", msg3)
	if out, code := run("keep"); code != 0 {
		t.Fatalf("fetchmail run 3: exit %d\n%s", code, out)
	}
	if got := fetched(); !slices.Equal(got, []string{"one", "three", "two"}) {
		t.Fatalf("after run 3 fetched %q: a message came twice or not at all", got)
	}
	if n := len(e.inbox("alice").Messages()); n != 3 {
		t.Fatalf("keep left %d messages on the server, want 3", n)
	}
	// Without keep, with flush: old messages are deleted, none fetched again.
	if out, code := run("nokeep flush"); code != 0 && code != 1 {
		t.Fatalf("fetchmail run 4: exit %d\n%s", code, out)
	}
	if n := len(e.inbox("alice").Messages()); n != 0 {
		t.Errorf("%d messages left after fetchmail without keep", n)
	}
	if got := fetched(); !slices.Equal(got, []string{"one", "three", "two"}) {
		t.Errorf("after run 4 fetched %q", got)
	}
}
