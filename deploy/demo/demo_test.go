// Package demo tests deploy/demo/run, the script behind `make demo`: it must
// start imapd, pop3d and lmtpd on loopback with the demo user, every command
// it prints must work, and Ctrl-C must stop it cleanly. The test runs the
// real script with real binaries and real clients (curl, python3).
package demo

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/deploy/internal/opstest"
	"github.com/roost-mail/roost/internal/testenv"
)

// freePorts returns the first of n consecutive loopback ports nobody
// listens on. They are taken below the kernel's ephemeral range
// (32768 and up on Linux), where busy client connections cannot be
// sitting on them.
func freePorts(t *testing.T, n int) int {
	t.Helper()
	for try := 0; try < 200; try++ {
		base := 20000 + rand.IntN(12000)
		var ls []net.Listener
		for i := 0; i < n; i++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if len(ls) == n {
			return base
		}
	}
	t.Fatal("no free loopback ports")
	return 0
}

// demo is one running deploy/demo/run.
type demo struct {
	cmd    *exec.Cmd
	out    *opstest.Buffer
	done   chan struct{}
	err    error // valid after done
	ports  map[string]int
	varDir string
}

func startDemo(t *testing.T, root, bin string) *demo {
	t.Helper()
	base := freePorts(t, 8)
	d := &demo{
		out:    &opstest.Buffer{},
		done:   make(chan struct{}),
		varDir: t.TempDir(),
		ports: map[string]int{
			"IMAP": base, "IMAPS": base + 1, "POP3": base + 2, "POP3S": base + 3,
			"LMTP": base + 4, "METRICS": base + 5,
		},
	}
	d.cmd = exec.Command("deploy/demo/run")
	d.cmd.Dir = root
	d.cmd.Env = append(os.Environ(), "DEMO_BIN="+bin, "DEMO_VAR="+d.varDir)
	for name, p := range d.ports {
		d.cmd.Env = append(d.cmd.Env, fmt.Sprintf("DEMO_%s_PORT=%d", name, p))
	}
	// Its own process group, so a signal reaches the script and the
	// daemons at once, as Ctrl-C in a terminal does.
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			syscall.Kill(-d.cmd.Process.Pid, syscall.SIGKILL)
			<-d.done
		}
		if t.Failed() {
			t.Logf("demo output:\n%s", d.out.String())
		}
	})
	deadline := time.After(2 * time.Minute)
	for !strings.Contains(d.out.String(), "Press Ctrl-C") {
		select {
		case <-d.done:
			t.Fatalf("demo exited before it was ready: %v", d.err)
		case <-deadline:
			t.Fatal("demo not ready after 2 minutes")
		case <-time.After(100 * time.Millisecond):
		}
	}
	return d
}

// interrupt sends SIGINT to the whole process group, like Ctrl-C, and
// returns the script's exit error.
func (d *demo) interrupt(t *testing.T) error {
	t.Helper()
	if err := syscall.Kill(-d.cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
		return d.err
	case <-time.After(30 * time.Second):
		t.Fatal("demo still running 30s after Ctrl-C")
		return nil
	}
}

// printed returns the lines of the banner that start with prefix, trimmed.
func (d *demo) printed(prefix string) []string {
	var lines []string
	for _, l := range strings.Split(d.out.String(), "\n") {
		if l = strings.TrimSpace(l); strings.HasPrefix(l, prefix) {
			lines = append(lines, l)
		}
	}
	return lines
}

// shell runs one printed command line the way a reader would paste it.
func shell(t *testing.T, dir, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-c", line)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("printed command failed: %s\n%v\n%s", line, err, out)
	}
	return string(out)
}

// listLine is one line of a POP3 LIST answer as curl prints it.
var listLine = regexp.MustCompile(`(?m)^\d+ \d+\r?$`)

func TestDemo(t *testing.T) {
	testenv.Require(t, "curl", "curl")
	testenv.Require(t, "openssl", "openssl")
	testenv.Require(t, "python3", "python3")
	testenv.Require(t, "sed", "sed")
	root := opstest.Root(t)
	bin := opstest.Build(t, "imapd", "pop3d", "lmtpd", "roostctl")
	d := startDemo(t, root, bin)

	for _, want := range []string{"user: demo", "password: demo", strconv.Itoa(d.ports["IMAPS"]), strconv.Itoa(d.ports["POP3S"])} {
		if !strings.Contains(d.out.String(), want) {
			t.Errorf("banner does not show %q", want)
		}
	}

	curls := d.printed("curl ")
	if len(curls) < 4 {
		t.Fatalf("banner prints %d curl lines, want at least 4", len(curls))
	}
	welcome := "From: Roost <postmaster@localhost>"
	for _, line := range curls {
		out := shell(t, root, line)
		switch {
		case strings.Contains(line, "imaps://"), strings.Contains(line, "pop3s://"):
			// A welcome message, read over IMAP and over POP3 with TLS.
			if !strings.Contains(out, welcome) {
				t.Errorf("%s: no welcome message in\n%s", line, out)
			}
		case strings.Contains(line, "imap://"):
			// LIST over STARTTLS shows the special-use folders.
			for _, f := range []string{"INBOX", "Sent", "Drafts", "Trash", "Junk", "Archive"} {
				if !strings.Contains(out, f) {
					t.Errorf("%s: folder %s missing from\n%s", line, f, out)
				}
			}
		case strings.Contains(line, "pop3://"):
			// LIST over STLS shows the three welcome messages.
			if n := len(listLine.FindAllString(out, -1)); n != 3 {
				t.Errorf("%s: %d messages listed, want 3:\n%s", line, n, out)
			}
		case strings.Contains(line, "/metrics"):
			if !strings.Contains(out, "roost_") {
				t.Errorf("%s: no roost_ metrics in\n%s", line, out)
			}
		}
	}

	// The printed roostctl line shows the demo user's quota.
	ctl := d.printed(bin + "/roostctl ")
	if len(ctl) != 1 {
		t.Fatalf("banner prints %d roostctl lines, want 1", len(ctl))
	}
	if out := shell(t, root, ctl[0]); !strings.Contains(out, "demo") {
		t.Errorf("%s: no quota line for demo in\n%s", ctl[0], out)
	}

	// The printed LMTP line delivers a message that POP3 then lists.
	lmtp := d.printed("python3 ")
	if len(lmtp) != 1 {
		t.Fatalf("banner prints %d python3 lines, want 1 (LMTP delivery)", len(lmtp))
	}
	shell(t, root, lmtp[0])
	list := shell(t, root, fmt.Sprintf("curl -sk --user demo:demo pop3s://127.0.0.1:%d/", d.ports["POP3S"]))
	if n := len(listLine.FindAllString(list, -1)); n != 4 {
		t.Errorf("after the LMTP delivery POP3 lists %d messages, want 3 welcome + 1:\n%s", n, list)
	}

	if err := d.interrupt(t); err != nil {
		t.Fatalf("demo did not exit cleanly on Ctrl-C: %v", err)
	}
	if !strings.Contains(d.out.String(), "Roost demo stopped.") {
		t.Error("demo did not say it stopped")
	}
	for name, p := range d.ports {
		if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(p), time.Second); err == nil {
			c.Close()
			t.Errorf("%s port %d still listening after Ctrl-C", name, p)
		}
	}
}

// TestDemoDaemonDies checks the script notices a daemon that dies, stops
// the others and fails, rather than printing a banner for a dead server.
func TestDemoDaemonDies(t *testing.T) {
	testenv.Require(t, "openssl", "openssl")
	testenv.Require(t, "pgrep", "procps")
	root := opstest.Root(t)
	bin := opstest.Build(t, "imapd", "pop3d", "lmtpd", "roostctl")
	d := startDemo(t, root, bin)
	out, err := exec.Command("pgrep", "-g", strconv.Itoa(d.cmd.Process.Pid), "-x", "pop3d").Output()
	if err != nil {
		t.Fatalf("pgrep pop3d: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil {
		t.Fatalf("pgrep pop3d: %q", out)
	}
	syscall.Kill(pid, syscall.SIGKILL)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		t.Fatal("demo still running 30s after pop3d died")
	}
	if d.err == nil {
		t.Error("demo exited 0 after pop3d died")
	}
	if !strings.Contains(d.out.String(), "pop3d stopped unexpectedly") {
		t.Error("demo did not say pop3d died")
	}
	if c, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(d.ports["IMAPS"]), time.Second); err == nil {
		c.Close()
		t.Error("imapd still listening after the demo gave up")
	}
}
