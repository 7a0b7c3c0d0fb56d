package main

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/internal/testenv"
)

// readers starts the real imapd and pop3d binaries on loopback over the
// same config and mail root, for checking what clients see of delivered
// mail. It returns their addresses.
func (r *roost) readers(t *testing.T) (imapAddr, pop3Addr string) {
	t.Helper()
	imapPort, pop3Port := testenv.FreePort(t), testenv.FreePort(t)
	imapAddr, pop3Addr = fmt.Sprintf("127.0.0.1:%d", imapPort), fmt.Sprintf("127.0.0.1:%d", pop3Port)
	cfg := r.config + ".readers"
	base, err := os.ReadFile(r.config)
	if err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf("imap:\n  listen: [%q]\npop3:\n  listen: [%q]\n", imapAddr, pop3Addr)
	cfgText := strings.Replace(string(base), "security:\n", "security:\n  allow_plaintext_auth: true\n", 1) + extra
	if err := os.WriteFile(cfg, []byte(cfgText), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []struct{ name, addr string }{{"imapd", imapAddr}, {"pop3d", pop3Addr}} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(r.bin, d.name), "../"+d.name).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", d.name, err, out)
		}
		cmd := exec.Command(filepath.Join(r.bin, d.name), "--config", cfg)
		logf, err := os.Create(filepath.Join(filepath.Dir(r.logFile), d.name+".log"))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait(); logf.Close() })
		deadline := time.Now().Add(15 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", d.addr, time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not listen on %s", d.name, d.addr)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return imapAddr, pop3Addr
}

// checkClients compares what IMAP and POP3 clients see of user's INBOX
// with the store, then delivers one more message through Postfix while an
// IMAP client IDLEs and waits for its EXISTS.
func checkClients(t *testing.T, r *roost, pf *testenv.Postfix, user string) {
	imapAddr, pop3Addr := r.readers(t)
	want := r.mailbox(user)

	exists := make(chan uint32, 16)
	c, err := imapclient.DialInsecure(imapAddr, &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{
			Mailbox: func(d *imapclient.UnilateralDataMailbox) {
				if d.NumMessages != nil {
					exists <- *d.NumMessages
				}
			},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, "pw").Wait(); err != nil {
		t.Fatalf("IMAP LOGIN: %v", err)
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	var all imap.UIDSet
	all.AddRange(1, 0)
	fetched, err := c.Fetch(all, &imap.FetchOptions{UID: true, RFC822Size: true, Flags: true}).Collect()
	if err != nil {
		t.Fatal(err)
	}
	if len(fetched) != len(want) {
		t.Fatalf("IMAP shows %d messages, the store %d", len(fetched), len(want))
	}
	for i, m := range fetched {
		if uint32(m.UID) != uint32(want[i].uid) || m.RFC822Size != want[i].size || len(m.Flags) != 0 {
			t.Errorf("IMAP message %d: UID %d size %d flags %v; store: UID %d size %d, no flags", i+1, m.UID, m.RFC822Size, m.Flags, want[i].uid, want[i].size)
		}
	}

	// POP3: the same messages with the same sizes.
	pc, err := net.DialTimeout("tcp", pop3Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	pc.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(pc)
	cmd := func(line string) string {
		if line != "" {
			fmt.Fprintf(pc, "%s\r\n", line)
		}
		resp, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(resp, "+OK") {
			t.Fatalf("POP3 %q: %q %v", line, resp, err)
		}
		return strings.TrimSpace(resp)
	}
	cmd("")
	cmd("USER " + user)
	cmd("PASS pw")
	var total int64
	for _, m := range want {
		total += m.size
	}
	if got, wantStat := cmd("STAT"), fmt.Sprintf("+OK %d %d", len(want), total); got != wantStat {
		t.Errorf("POP3 STAT %q, want %q", got, wantStat)
	}
	for i, m := range want {
		f := strings.Fields(cmd("LIST " + strconv.Itoa(i+1)))
		if len(f) != 3 || f[2] != strconv.FormatInt(m.size, 10) {
			t.Errorf("POP3 LIST %d: %v, want size %d", i+1, f, m.size)
		}
	}
	cmd("QUIT")

	// IDLE sees the next delivery.
	idle, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	out, ids := msgs("idle", user, 1, 800)
	sendSMTP(t, pf.Port, 1, out)
	deadline := time.After(30 * time.Second)
	for {
		select {
		case n := <-exists:
			if n == uint32(len(want)+1) {
				idle.Close()
				pf.WaitFinal(ids, 30*time.Second)
				return
			}
		case <-deadline:
			t.Fatalf("no EXISTS %d during IDLE within 30s of delivering <%s>", len(want)+1, ids[0])
		}
	}
}
