package daemon

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
)

// The test binary doubles as a small daemon (see helperDaemon), so that
// signals, exit status and reload are checked on a real process, the way
// systemd drives imapd, pop3d and lmtpd.
func TestMain(m *testing.M) {
	if os.Getenv("ROOST_DAEMON_HELPER") == "1" {
		os.Exit(helperDaemon())
	}
	os.Exit(m.Run())
}

// helperDaemon wires a greeting-only server through Open, Listen and Run
// and prints "ready <tls address> <metrics address>" once serving.
func helperDaemon() int {
	ctx := context.Background()
	env, err := Open(ctx, os.Getenv("ROOST_CONFIG"), "imapd", os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapd:", err)
		return 1
	}
	defer env.Close()
	lns, err := env.Listen(env.Config.IMAP.ListenTLS, true)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapd:", err)
		return 1
	}
	err = env.Run(ctx, func(context.Context) error {
		fmt.Printf("ready %s %s\n", lns[0].Addr(), env.MetricsAddr())
		for {
			c, err := lns[0].Accept()
			if err != nil {
				return err
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, "* OK ready\r\n")
				io.Copy(io.Discard, c)
			}()
		}
	}, func(context.Context) error { return lns[0].Close() })
	if err != nil {
		fmt.Fprintln(os.Stderr, "imapd:", err)
		return 1
	}
	return 0
}

type helper struct {
	cmd              *exec.Cmd
	stderr           *syncBuf
	tlsAddr, metrics string
}

func startHelper(t *testing.T, config string) *helper {
	t.Helper()
	h := &helper{cmd: exec.Command(os.Args[0], "-test.run=^$"), stderr: &syncBuf{}}
	h.cmd.Env = append(os.Environ(), "ROOST_DAEMON_HELPER=1", "ROOST_CONFIG="+config)
	h.cmd.Stderr = h.stderr
	out, err := h.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := h.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		h.cmd.Process.Kill()
		h.cmd.Wait()
	})
	line, err := bufio.NewReader(out).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "ready %s %s", &h.tlsAddr, &h.metrics); err != nil || serr != nil {
		h.cmd.Wait()
		t.Fatalf("daemon did not start: %q %v\n%s", line, err, h.stderr)
	}
	return h
}

// subjectCN asks openssl s_client which certificate the daemon serves.
func subjectCN(t *testing.T, openssl, addr string) string {
	t.Helper()
	cmd := exec.Command(openssl, "s_client", "-connect", addr, "-servername", "localhost", "-brief")
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	for _, l := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(l, "Peer certificate:") {
			return strings.TrimSpace(strings.TrimPrefix(l, "Peer certificate:"))
		}
	}
	return string(out)
}

func TestDaemonProcess(t *testing.T) {
	openssl := testenv.Require(t, "openssl", "openssl")
	curl := testenv.Require(t, "curl", "curl")
	dir := t.TempDir()
	certFile, keyFile := writeCert(t, dir, "first.example.edu")
	path, _ := writeConfig(t, "", "security:\n  allow_root: true\n"+
		"imap:\n  listen_tls: [\"127.0.0.1:0\"]\n"+
		"tls:\n  cert_file: "+certFile+"\n  key_file: "+keyFile+"\n"+
		"metrics:\n  listen:\n    imapd: 127.0.0.1:0\n")
	h := startHelper(t, path)

	if cn := subjectCN(t, openssl, h.tlsAddr); cn != "CN = first.example.edu" {
		t.Fatalf("served certificate: %q", cn)
	}
	out, err := exec.Command(curl, "-sS", "--max-time", "10", "http://"+h.metrics+"/metrics").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `roost_tls_certificate_not_after_seconds{daemon="imapd"}`) || !strings.Contains(string(out), "process_open_fds") {
		t.Errorf("curl metrics: %v\n%.500s", err, out)
	}

	// systemctl reload: SIGHUP, and the renewed certificate is served.
	writeCert(t, dir, "renewed.example.edu")
	h.cmd.Process.Signal(syscall.SIGHUP)
	waitFor(t, func() bool { return subjectCN(t, openssl, h.tlsAddr) == "CN = renewed.example.edu" })

	// systemctl stop: SIGTERM, a clean exit, the ports released.
	h.cmd.Process.Signal(syscall.SIGTERM)
	if err := h.cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", err, h.stderr)
	}
	for _, addr := range []string{h.tlsAddr, h.metrics} {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			t.Errorf("%s still accepts after the daemon exited", addr)
		}
	}
	for _, want := range []string{"TLS certificate reloaded", "signal=terminated", "msg=stopped"} {
		if !strings.Contains(h.stderr.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, h.stderr)
		}
	}
}

// As root with the virtual layout and no allow_root, the daemon exits 1
// and says what to do.
func TestDaemonProcessRefusesRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the check applies to root only")
	}
	certFile, keyFile := writeCert(t, t.TempDir(), "x")
	path, _ := writeConfig(t, "", "imap:\n  listen_tls: [\"127.0.0.1:0\"]\n"+
		"tls:\n  cert_file: "+certFile+"\n  key_file: "+keyFile+"\n")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "ROOST_DAEMON_HELPER=1", "ROOST_CONFIG="+path)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 || !strings.Contains(string(out), "security.allow_root") {
		t.Errorf("exit %v, output:\n%s", err, out)
	}
}
