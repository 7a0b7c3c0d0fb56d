package testenv

import (
	"fmt"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestPostfixDeliversAndReports: a snippet gets its paths rewritten,
// settings replace its values, smtpd answers on Port, the maillog yields
// the sent and bounced statuses by Message-ID and agent, Stop closes the
// port, and the system's main.cf changes in alternate_config_directories
// at most.
func TestPostfixDeliversAndReports(t *testing.T) {
	const systemMain = "/etc/postfix/main.cf"
	before, _ := os.ReadFile(systemMain)
	pf := StartPostfix(t, PostfixOptions{
		MainSnippets: []string{"../../deploy/postfix/lda-local.main.cf"},
		Paths:        strings.NewReplacer("/usr/bin/roostctl", "/test/bin/roostctl"),
		Settings: []string{
			"virtual_mailbox_domains = example.edu",
			"virtual_transport = discard:",
			"transport_maps = inline:{{gone.example = error:5.1.1 gone}}",
			// Queue it, so that error(8) bounces it, rather than refusing it.
			"smtpd_reject_unlisted_recipient = no",
		},
	})
	after, err := os.ReadFile(systemMain)
	if err != nil {
		t.Fatal(err)
	}
	if withoutAlternate(after) != withoutAlternate(before) {
		t.Errorf("%s changed beyond alternate_config_directories:\n%s", systemMain, after)
	}
	out, err := exec.Command("postconf", "-c", pf.Etc, "-h", "mailbox_command", "virtual_transport").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := string(out); !strings.HasPrefix(got, "/test/bin/roostctl ") || !strings.HasSuffix(got, "\ndiscard:\n") {
		t.Errorf("postconf says %q: want the snippet's path rewritten and the setting applied", got)
	}

	addr := "127.0.0.1:" + strconv.Itoa(pf.Port)
	for _, rcpt := range []string{"alice@example.edu", "x@gone.example"} {
		msg := fmt.Sprintf("Subject: t\r\nMessage-ID: <%s>\r\n\r\nhello\r\n", rcpt)
		if err := smtp.SendMail(addr, nil, "bob@example.org", []string{rcpt}, []byte(msg)); err != nil {
			t.Fatalf("SMTP to %s: %v", rcpt, err)
		}
	}
	final := pf.WaitFinal([]string{"alice@example.edu", "x@gone.example"}, 30*time.Second)
	if e := final["alice@example.edu"]; e.Status != "sent" || e.Agent != "discard" || e.Rcpt != "alice@example.edu" {
		t.Errorf("alice: %+v, want sent by discard", e)
	}
	if e := final["x@gone.example"]; e.Status != "bounced" || e.Agent != "error" || !strings.Contains(e.Reply, "gone") {
		t.Errorf("gone.example: %+v, want bounced by error with the reason", e)
	}
	if e := pf.WaitStatus("alice@example.edu", "sent", time.Second); e.QueueID == "" {
		t.Errorf("WaitStatus returned no queue ID: %+v", e)
	}

	pf.Stop()
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Error("smtpd still answers after Stop")
	}
	pf.Stop() // a second Stop does nothing
}

func withoutAlternate(b []byte) string {
	var keep []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if !strings.HasPrefix(l, "alternate_config_directories") && strings.TrimSpace(l) != "" {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "\n")
}
