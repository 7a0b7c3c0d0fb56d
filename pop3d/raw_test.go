package pop3d_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/backend"
	"github.com/roost-mail/roost/pop3d"
)

// convertingStore hides the maildir store's OpenRawMessage, so that RETR
// reads the store's own CRLF conversion: the path of a store that offers
// no raw access.
type convertingStore struct{ backend.Store }

type convertingUser struct{ backend.User }

type convertingMailbox struct{ backend.Mailbox }

func (s convertingStore) Open(ctx context.Context, acct backend.Account) (backend.User, error) {
	u, err := s.Store.Open(ctx, acct)
	return convertingUser{u}, err
}

func (u convertingUser) OpenMailbox(ctx context.Context, name string) (backend.Mailbox, error) {
	mb, err := u.User.OpenMailbox(ctx, name)
	return convertingMailbox{mb}, err
}

// retrAll logs in as alice and returns every message as RETR sent it,
// dot-stuffing and the final "." included.
func retrAll(t *testing.T, e *env, n int) [][]byte {
	t.Helper()
	c := e.login("alice", "secret")
	var out [][]byte
	for i := 1; i <= n; i++ {
		c.send(fmt.Sprintf("RETR %d", i))
		if l := c.line(); !strings.HasPrefix(l, "+OK ") {
			t.Fatalf("RETR %d: %s", i, l)
		}
		var msg []byte
		for {
			l, err := c.r.ReadBytes('\n')
			if err != nil {
				t.Fatalf("RETR %d: %v after %d octets", i, err, len(msg))
			}
			msg = append(msg, l...)
			if string(l) == ".\r\n" {
				break
			}
		}
		out = append(out, msg)
	}
	c.run(`
		C: QUIT
		S: +OK...`)
	return out
}

// TestRETRFromRawFiles: RETR from a store that hands out files as stored
// (pop3d converts LF to CRLF) sends exactly the octets RETR sends when
// the store converts, over a real socket, for awkward messages and for a
// large one whose line ends and leading dots fall on the 128 KiB
// boundaries of pop3d's reads (a CR ending one read, its LF starting the
// next; a "." starting a read).
func TestRETRFromRawFiles(t *testing.T) {
	const chunk = 128 << 10
	var big bytes.Buffer
	big.WriteString("Subject: chunk boundaries\n\n")
	for _, at := range []struct {
		pos  int
		text string
	}{{chunk - 1, "\r\n.dot after a CRLF split over two reads\n"}, {2*chunk - 1, "\n.dot starting a read\n"}, {3 * chunk, "\n..\n"}, {4*chunk - 2, "\r\r\n.\n"}} {
		for big.Len() < at.pos {
			big.WriteString(strings.Repeat("x", min(70, at.pos-big.Len()-1)) + "\n")
		}
		big.WriteString(at.text)
	}
	big.WriteString("no final line end")
	msgs := append(append([]string{}, tricky...), big.String(), "a\r\nmixed\nline\r\nends\n", "bare\rCR\r", ".")

	plain := newEnv(t, func(o *pop3d.Options) { o.Store = convertingStore{o.Store} })
	plain.deliver("alice", msgs...)
	want := retrAll(t, plain, len(msgs))
	raw := newEnv(t, nil) // the maildir store offers OpenRawMessage
	raw.deliver("alice", msgs...)
	got := retrAll(t, raw, len(msgs))
	for i := range msgs {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("message %d: from the raw file\n%.300q\nconverted by the store\n%.300q", i+1, got[i], want[i])
		}
	}
	// And both are right: the CRLF form, dot-stuffed.
	for i, m := range msgs {
		var w bytes.Buffer
		dw := bufio.NewWriter(&w)
		s := strings.ReplaceAll(strings.ReplaceAll(m, "\r\n", "\n"), "\n", "\r\n")
		for _, line := range strings.SplitAfter(s, "\n") {
			if strings.HasPrefix(line, ".") {
				dw.WriteByte('.')
			}
			dw.WriteString(line)
		}
		if !strings.HasSuffix(s, "\n") {
			dw.WriteString("\r\n")
		}
		dw.WriteString(".\r\n")
		dw.Flush()
		if m == "bare\rCR\r" || strings.Contains(m, "\r\r\n") {
			continue // the store's rule for bare CR is checked by the fuzz target
		}
		if !bytes.Equal(got[i], w.Bytes()) {
			t.Errorf("message %d: got\n%.300q\nwant\n%.300q", i+1, got[i], w.Bytes())
		}
	}
}

// TestRETRRecordedSize: the size the store recorded (",W=" in the file
// name) is what LIST promised. A file that turns out shorter ends the
// connection without the final "." (the client must not take a part for
// the whole, and must not DELE it), and the message is not marked \Seen;
// a longer one is cut at that size. Both with and without raw files.
func TestRETRRecordedSize(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tweak func(*pop3d.Options)
	}{{"store converts", func(o *pop3d.Options) { o.Store = convertingStore{o.Store} }}, {"raw file", nil}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, tc.tweak)
			body := "Subject: s\n\nline 1\nline 2\n" // 26 octets, 30 with CRLF
			e.put("alice", "cur", "1700000000.M1P1.h,S=26,W=40:2,", body, time.Now())
			e.put("alice", "cur", "1700000001.M1P1.h,S=26,W=20:2,", body, time.Now())
			c := e.login("alice", "secret")
			c.run(`
				C: RETR 2
				S: +OK 20 octets
				S: Subject: s
				S:
				S: line 1
				S: .
				C: RETR 1
				S: +OK 40 octets
				S: Subject: s
				S:
				S: line 1
				S: line 2
				S: <EOF>`)
			e.waitLog(`msg="pop3 session".* end=store-error`)
			if m := e.inbox("alice").Messages(); len(m) != 2 || m[0].Flags&backend.FlagSeen != 0 || m[1].Flags&backend.FlagSeen == 0 {
				t.Errorf("flags after RETR 2 in full and RETR 1 cut short: %+v, want only UID 2 \\Seen", m)
			}
		})
	}
}
