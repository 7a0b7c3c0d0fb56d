package pop3d_test

import (
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/roost-mail/roost/imapd"
	"github.com/roost-mail/roost/maildir"
)

// TestIMAPSeesPOP3: an IMAP session with INBOX selected is not blocked by
// a POP3 session, and after QUIT it sees POP3's deletion (EXPUNGE) and the
// \Seen that RETR set.
func TestIMAPSeesPOP3(t *testing.T) {
	e := newEnv(t, nil)
	e.deliver("alice", msg1, msg2, msg3)
	istore := maildir.New(maildir.Options{SpecialUse: map[string]string{}})
	isrv, err := imapd.New(imapd.Options{Store: istore, Auth: e.users, AllowPlaintextAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go isrv.Serve(ln)
	t.Cleanup(func() {
		isrv.Close()
		istore.Close() // its measurer must not write into the Maildir being removed
	})

	var mu sync.Mutex
	var expunged []uint32
	ic, err := imapclient.DialInsecure(ln.Addr().String(), &imapclient.Options{
		UnilateralDataHandler: &imapclient.UnilateralDataHandler{Expunge: func(seq uint32) {
			mu.Lock()
			expunged = append(expunged, seq)
			mu.Unlock()
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	if err := ic.Login("alice", "secret").Wait(); err != nil {
		t.Fatal(err)
	}
	sel, err := ic.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 3 {
		t.Fatalf("SELECT: %v, %+v", err, sel)
	}

	p := e.login("alice", "secret")
	p.run(`
		C: RETR 3
		S: +OK...
		S: Subject: three
		S:
		S: no final newline
		S: .
		C: DELE 1
		S: +OK Message 1 deleted
		C: QUIT
		S: +OK Bye (1 messages removed)`)

	deadline := time.Now().Add(10 * time.Second)
	for {
		if err := ic.Noop().Wait(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		got := slices.Clone(expunged)
		mu.Unlock()
		if len(got) > 0 {
			if !slices.Equal(got, []uint32{1}) {
				t.Fatalf("EXPUNGE %v, want [1]", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("IMAP never saw the POP3 deletion")
		}
		time.Sleep(50 * time.Millisecond)
	}
	msgs, err := ic.Fetch(imap.SeqSetNum(1, 2), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 2 {
		t.Fatalf("FETCH: %v %d", err, len(msgs))
	}
	if slices.Contains(msgs[0].Flags, imap.FlagSeen) || !slices.Contains(msgs[1].Flags, imap.FlagSeen) {
		t.Errorf("flags %v / %v: want \\Seen only on the message RETR sent", msgs[0].Flags, msgs[1].Flags)
	}
}
