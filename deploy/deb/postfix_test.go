package deb

import (
	"fmt"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
)

// postfixDeliver starts a private Postfix on loopback configured from
// deploy/postfix/lmtp-virtual.main.cf, with virtual_transport pointing at
// socket (the installed package's lmtpd), sends one message for
// alice@example.edu over SMTP and waits until Postfix's lmtp client says
// status=sent. Postfix is stopped before it returns.
func postfixDeliver(t *testing.T, socket, subject string) {
	t.Helper()
	pf := testenv.StartPostfix(t, testenv.PostfixOptions{
		MainSnippets: []string{"../postfix/lmtp-virtual.main.cf"},
		// The package's socket, absolute because this instance's queue is
		// not /var/spool/postfix (the guide's lmtp:unix:roost/lmtp is
		// relative to it).
		Settings: []string{"virtual_transport = lmtp:unix:" + socket},
	})
	defer pf.Stop()

	const id = "deb-postfix@test.example"
	send := fmt.Sprintf(`import smtplib; smtplib.SMTP("127.0.0.1", %d).sendmail("bob@example.org", ["alice@example.edu"], "Subject: %s\nMessage-ID: <%s>\n\nhello from Postfix\n")`, pf.Port, subject, id)
	run(t, python, "-c", send)
	if e := pf.WaitFinal([]string{id}, 30*time.Second)[id]; e.Status != "sent" || e.Agent != "lmtp" || e.Rcpt != "alice@example.edu" {
		t.Fatalf("Postfix's delivery to lmtpd: %s by %s to <%s> (%s), want sent by lmtp to <alice@example.edu>", e.Status, e.Agent, e.Rcpt, e.Reply)
	}
}
