package imapd_test

import (
	"strings"
	"testing"
)

func TestSearchKeys(t *testing.T) {
	ts := newTestServer(t, closingStore(t))
	msgs := []string{
		// 1: plain ASCII
		"From: Bob Smith <bob@example.edu>\nTo: alice@example.edu\nCc: carol@example.org\nSubject: Budget report\nDate: Mon, 02 Mar 2026 09:00:00 +0000\nX-Tag: blue\n\nThe budget is attached.\n",
		// 2: encoded subject, quoted-printable Latin-1 body
		"From: =?ISO-8859-1?Q?Andr=E9?= <andre@example.org>\nTo: alice@example.edu\nSubject: =?UTF-8?B?Q2Fmw6kgbWVldGluZw==?=\nDate: Tue, 10 Mar 2026 09:00:00 +0000\nContent-Type: text/plain; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\nRendez-vous au caf=E9 demain.\n",
		// 3: base64 UTF-8 body inside multipart, big
		"From: dave@example.net\nTo: bob@example.edu\nBcc: alice@example.edu\nSubject: Photos\nDate: Fri, 20 Mar 2026 09:00:00 +0000\nContent-Type: multipart/mixed; boundary=b\n\n--b\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\nR3LDvMOfZSBhdXMgWsO8cmljaA==\n--b\nContent-Type: image/png\n\n" + strings.Repeat("X", 2000) + "\n--b--\n",
	}
	for _, m := range msgs {
		ts.deliver(t, "alice", "", m)
	}
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	r.cmd(`STORE 1 +FLAGS (\Seen \Flagged)`)
	r.cmd(`STORE 2 +FLAGS (\Answered $Junk)`)
	r.cmd(`STORE 3 +FLAGS (\Deleted \Draft)`)
	for _, tc := range []struct{ cmd, want string }{
		{`SEARCH ALL`, "* SEARCH 1 2 3"},
		{`SEARCH FROM bob`, "* SEARCH 1"},
		{`SEARCH FROM "andré"`, "* SEARCH 2"},
		{`SEARCH FROM example.net`, "* SEARCH 3"},
		{`SEARCH TO bob@example.edu`, "* SEARCH 3"},
		{`SEARCH CC carol`, "* SEARCH 1"},
		{`SEARCH BCC alice`, "* SEARCH 3"},
		{`SEARCH SUBJECT "café"`, "* SEARCH 2"},
		{`SEARCH SUBJECT budget`, "* SEARCH 1"},
		{`SEARCH HEADER X-Tag blue`, "* SEARCH 1"},
		{`SEARCH HEADER X-Tag ""`, "* SEARCH 1"},
		{`SEARCH HEADER Content-Type iso-8859`, "* SEARCH 2"},
		{`SEARCH BODY "CAFÉ DEMAIN"`, "* SEARCH 2"},
		{`SEARCH BODY zürich`, "* SEARCH 3"},
		{`SEARCH BODY budget`, "* SEARCH 1"},
		{`SEARCH TEXT "budget report"`, "* SEARCH 1"},
		{`SEARCH TEXT photos`, "* SEARCH 3"},
		{`SEARCH BODY XXXXXXXX`, "* SEARCH\r"},
		{`SEARCH SEEN`, "* SEARCH 1"},
		{`SEARCH UNSEEN`, "* SEARCH 2 3"},
		{`SEARCH FLAGGED`, "* SEARCH 1"},
		{`SEARCH UNFLAGGED ANSWERED`, "* SEARCH 2"},
		{`SEARCH DELETED DRAFT`, "* SEARCH 3"},
		{`SEARCH UNDELETED UNDRAFT UNANSWERED`, "* SEARCH 1"},
		{`SEARCH KEYWORD $Junk`, "* SEARCH 2"},
		{`SEARCH UNKEYWORD $junk`, "* SEARCH 1 3"},
		{`SEARCH LARGER 1000`, "* SEARCH 3"},
		{`SEARCH SMALLER 1000`, "* SEARCH 1 2"},
		{`SEARCH SENTBEFORE 10-Mar-2026`, "* SEARCH 1"},
		{`SEARCH SENTON 10-Mar-2026`, "* SEARCH 2"},
		{`SEARCH SENTSINCE 10-Mar-2026`, "* SEARCH 2 3"},
		{`SEARCH SINCE 1-Jan-2000 BEFORE 1-Jan-2100`, "* SEARCH 1 2 3"},
		{`SEARCH ON 1-Jan-2000`, "* SEARCH\r"},
		{`SEARCH OR FROM bob SUBJECT photos`, "* SEARCH 1 3"},
		{`SEARCH NOT FROM bob`, "* SEARCH 2 3"},
		{`SEARCH (SEEN FLAGGED) NOT DELETED`, "* SEARCH 1"},
		{`SEARCH 2:*`, "* SEARCH 2 3"},
		{`SEARCH UID 1,3`, "* SEARCH 1 3"},
		{`UID SEARCH FROM bob`, "* SEARCH 1"},
		{`SEARCH NEW`, "* SEARCH\r"},
		{`SEARCH OLD`, "* SEARCH 1 2 3"},
		{`SEARCH CHARSET UTF-8 SUBJECT "Café"`, "* SEARCH 2"},
		{`SEARCH CHARSET KOI8-R SUBJECT x`, "NO [BADCHARSET]"},
		{`SEARCH RETURN (MIN MAX COUNT) UNSEEN`, "* ESEARCH (TAG \"t"},
		{`SEARCH RETURN (MIN MAX COUNT) UNSEEN`, "MIN 2 MAX 3 COUNT 2"},
		{`UID SEARCH RETURN (ALL) ALL`, "UID ALL 1:3"},
		{`SEARCH RETURN (SAVE) FROM bob`, "OK"},
		{`FETCH $ (UID)`, "* 1 FETCH (UID 1)"},
		{`SEARCH $`, "* SEARCH 1"},
		{`UID SEARCH UID $`, "* SEARCH 1"},
	} {
		out := strings.Join(r.cmd(tc.cmd), "\r\n") + "\r\n"
		if !strings.Contains(out, tc.want) {
			t.Errorf("%s: want %q in\n%s", tc.cmd, tc.want, out)
		}
	}
}
