package imapd_test

import (
	"crypto/tls"
	"fmt"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/imapd"
)

// prefetchMessages is more than the several chunks a FETCH loads ahead.
const prefetchMessages = 1300

// manyMessages delivers prefetchMessages messages to alice's INBOX, every
// seventh with a non-ASCII subject and sender, and returns their subjects.
func manyMessages(t *testing.T, ts *testServer) []string {
	t.Helper()
	subjects := make([]string, prefetchMessages)
	for i := range subjects {
		from := fmt.Sprintf("Sender %d <s%d@example.org>", i, i)
		subjects[i] = fmt.Sprintf("message %d", i)
		if i%7 == 3 {
			from = fmt.Sprintf("Jürgen %d <jürgen%d@example.org>", i, i)
			subjects[i] = fmt.Sprintf("Grüße %d", i)
		}
		ts.deliver(t, "alice", "", fmt.Sprintf("From: %s\nTo: alice@example.edu\nSubject: %s\nDate: Mon, 02 Mar 2026 09:%02d:00 +0100\nMessage-ID: <m%d@example.org>\n\nbody %d\n",
			from, subjects[i], i%60, i, i))
	}
	return subjects
}

// envelopes returns the ENVELOPE item of each FETCH response in lines, by
// sequence number, and the tagged response.
func envelopes(t *testing.T, lines []string) (map[int]string, string) {
	t.Helper()
	envs := map[int]string{}
	for _, l := range lines[:len(lines)-1] {
		var seq int
		if _, err := fmt.Sscanf(l, "* %d FETCH", &seq); err != nil {
			continue
		}
		i := strings.Index(l, "ENVELOPE (")
		if i < 0 {
			t.Fatalf("no ENVELOPE in %q", l)
		}
		env := l[i:]
		if j := strings.LastIndex(env, " BODY["); j >= 0 {
			env = env[:j]
		} else {
			env = strings.TrimSuffix(env, ")")
		}
		envs[seq] = env
	}
	return envs, last(lines)
}

// A FETCH ENVELOPE over many messages loads them ahead of the writer
// (infoPrefetch) from the first the cache lacks, and writes them itself
// (wireWriter): every message comes, in order, first from the files (the
// first 300 from the cache) and then from the cache, octet for octet
// as go-imap writes the same ENVELOPE next to a body section, with and
// without UTF8=ACCEPT, and a message whose file is gone is left out with
// NO [EXPUNGEISSUED].
func TestFetchManyEnvelopes(t *testing.T) {
	ts := newTestServer(t, closingStore(t))
	subjects := manyMessages(t, ts)
	for _, utf8 := range []bool{false, true} {
		t.Run(fmt.Sprintf("utf8=%v", utf8), func(t *testing.T) {
			r := ts.raw(t)
			r.login("alice", alicePass)
			if utf8 {
				r.cmd("ENABLE UTF8=ACCEPT")
			}
			r.cmd("SELECT INBOX")
			if !utf8 {
				// The first 300 from the cache, the rest loaded ahead.
				r.cmd("FETCH 1:300 (ENVELOPE)")
			}
			first, ok := envelopes(t, r.cmd("FETCH 1:* (UID FLAGS ENVELOPE)"))
			if !strings.Contains(ok, "OK") || len(first) != prefetchMessages {
				t.Fatalf("first FETCH: %d envelopes, %s", len(first), ok)
			}
			for i, s := range subjects {
				env := first[i+1]
				if !strings.Contains(env, fmt.Sprintf("<m%d@example.org>", i)) {
					t.Fatalf("message %d: %s", i+1, env)
				}
				if !strings.Contains(s, "ü") && !strings.Contains(env, `"`+s+`"`) {
					t.Fatalf("message %d: subject %q not in %s", i+1, s, env)
				}
			}
			second, _ := envelopes(t, r.cmd("FETCH 1:* (ENVELOPE)"))
			viaGoIMAP, _ := envelopes(t, r.cmd("FETCH 1:* (ENVELOPE BODY.PEEK[HEADER.FIELDS (X-None)])"))
			for seq, env := range first {
				if second[seq] != env || viaGoIMAP[seq] != env {
					t.Fatalf("message %d:\n     first %s\n    cached %s\nvia go-imap %s", seq, env, second[seq], viaGoIMAP[seq])
				}
			}
			if utf8 {
				if env := first[4]; !strings.Contains(env, `"jürgen3"`) {
					t.Errorf("with UTF8=ACCEPT, a UTF-8 mailbox is quoted: %s", env)
				}
			} else if env := first[4]; !strings.Contains(env, "{8}jürgen3") {
				t.Errorf("without UTF8=ACCEPT, a UTF-8 mailbox is a literal: %q", env)
			}
		})
	}

}

// A message whose file is gone when FETCH loads it ahead is left out with
// NO [EXPUNGEISSUED]; the others are all sent.
func TestFetchManyEnvelopesFileGone(t *testing.T) {
	ts := newTestServer(t, func(o *imapd.Options) {
		closeAtEnd(t, o.Store)
		o.CacheBytes = -1 // every FETCH reads the files
	})
	manyMessages(t, ts)
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	removeMessageFile(t, ts, "alice", "body 700\n")
	for _, items := range []string{"(ENVELOPE)", "(ENVELOPE BODY.PEEK[HEADER])"} {
		envs, tagged := envelopes(t, r.cmd("FETCH 1:* "+items))
		if !strings.Contains(tagged, "NO [EXPUNGEISSUED]") {
			t.Errorf("FETCH %s with message 701's file gone: %s", items, tagged)
		}
		for seq := 1; seq <= prefetchMessages; seq++ {
			if _, ok := envs[seq]; ok == (seq == 701) {
				t.Errorf("FETCH %s: message %d sent: %v", items, seq, ok)
			}
		}
	}
}

// Under TLS, implicit or after STARTTLS, the responses FETCH writes itself
// go through the TLS connection like go-imap's.
func TestFetchManyEnvelopesTLS(t *testing.T) {
	cfg := selfSigned(t)
	ts := newTestServer(t, func(o *imapd.Options) {
		closeAtEnd(t, o.Store)
		o.TLSConfig = cfg
	})
	manyMessages(t, ts)
	check := func(t *testing.T, c *imapclient.Client) {
		for pass := range 2 { // from the files, then from the cache
			cmd := c.Fetch(imap.SeqSet{{Start: 1, Stop: 0}}, &imap.FetchOptions{UID: true, Flags: true, Envelope: true})
			n := 0
			for m := cmd.Next(); m != nil; m = cmd.Next() {
				buf, err := m.Collect()
				if err != nil {
					t.Fatal(err)
				}
				if want := fmt.Sprintf("m%d@example.org", buf.SeqNum-1); buf.Envelope == nil || buf.Envelope.MessageID != want || buf.UID == 0 {
					t.Fatalf("pass %d, message %d: UID %d, envelope %+v, want Message-ID %s", pass, buf.SeqNum, buf.UID, buf.Envelope, want)
				}
				n++
			}
			if err := cmd.Close(); err != nil || n != prefetchMessages {
				t.Fatalf("pass %d: %d messages, %v", pass, n, err)
			}
		}
	}
	t.Run("implicit", func(t *testing.T) { check(t, ts.tlsInbox(t)) })
	t.Run("STARTTLS", func(t *testing.T) {
		c, err := imapclient.DialStartTLS(ts.addr, &imapclient.Options{TLSConfig: &tls.Config{InsecureSkipVerify: true}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Login("alice", alicePass).Wait(); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			t.Fatal(err)
		}
		check(t, c)
	})
}

// A FETCH BODYSTRUCTURE over many messages, some of them large, loads
// them ahead in small chunks: every answer is the one a FETCH of that
// message alone gives, and a message whose file is gone is left out with
// NO [EXPUNGEISSUED].
func TestFetchManyBodyStructures(t *testing.T) {
	const n = 40
	ts := newTestServer(t, func(o *imapd.Options) {
		closeAtEnd(t, o.Store)
		o.CacheBytes = -1 // every FETCH reads the files
	})
	for i := range n {
		msg := fmt.Sprintf("From: s%d@example.org\nSubject: message %d\n\nbody %d\n", i, i, i)
		if i%3 == 0 {
			msg = fmt.Sprintf("From: s%d@example.org\nSubject: message %d\nMIME-Version: 1.0\n"+
				"Content-Type: multipart/mixed; boundary=b%d\n\n--b%d\nContent-Type: text/plain\n\nbody %d\n"+
				"--b%d\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\n%s--b%d--\n",
				i, i, i, i, i, i, strings.Repeat("QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODkwMTIzNDU2Nzg5MDEy\n", i*500), i)
		}
		ts.deliver(t, "alice", "", msg)
	}
	r := ts.raw(t)
	r.login("alice", alicePass)
	r.cmd("SELECT INBOX")
	structures := func(lines []string) map[int]string {
		got := map[int]string{}
		for _, l := range lines[:len(lines)-1] {
			var seq int
			if _, err := fmt.Sscanf(l, "* %d FETCH", &seq); err == nil {
				got[seq] = l
			}
		}
		return got
	}
	all := r.cmd("FETCH 1:* (BODYSTRUCTURE)")
	if l := last(all); !strings.Contains(l, "OK") {
		t.Fatalf("FETCH 1:* (BODYSTRUCTURE): %s", l)
	}
	many := structures(all)
	for seq := 1; seq <= n; seq++ {
		one := structures(r.cmd(fmt.Sprintf("FETCH %d (BODYSTRUCTURE)", seq)))
		if many[seq] == "" || many[seq] != one[seq] {
			t.Fatalf("message %d:\nwith the others %s\n          alone %s", seq, many[seq], one[seq])
		}
		if want := (seq-1)%3 == 0; strings.Contains(many[seq], `"mixed"`) != want {
			t.Errorf("message %d: multipart %v: %s", seq, want, many[seq])
		}
	}
	removeMessageFile(t, ts, "alice", "body 20\n")
	lines := r.cmd("FETCH 1:* (BODYSTRUCTURE)")
	if l := last(lines); !strings.Contains(l, "NO [EXPUNGEISSUED]") {
		t.Errorf("FETCH with message 21's file gone: %s", l)
	}
	got := structures(lines)
	for seq := 1; seq <= n; seq++ {
		if _, ok := got[seq]; ok == (seq == 21) || ok && got[seq] != many[seq] {
			t.Errorf("message %d: sent %v: %s", seq, ok, got[seq])
		}
	}
}
