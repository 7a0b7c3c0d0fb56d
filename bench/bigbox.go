package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// imapConn is a logged-in imapclient.Client that is closed when ctx ends.
type imapConn struct {
	*imapclient.Client
	stop func() bool
}

func dialIMAP(ctx context.Context, addr, user string) (*imapConn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c := imapclient.New(conn, nil)
	ic := &imapConn{Client: c, stop: context.AfterFunc(ctx, func() { c.Close() })}
	if err := c.Login(user, Password(user)).Wait(); err != nil {
		ic.Close()
		return nil, fmt.Errorf("LOGIN %s: %w", user, err)
	}
	return ic, nil
}

func (c *imapConn) Close() error {
	c.stop()
	return c.Client.Close()
}

// logout ends the session politely; errors do not matter any more.
func (c *imapConn) logout() {
	_ = c.Logout().Wait()
	c.Close()
}

var allSeq = imap.SeqSet{imap.SeqRange{Start: 1, Stop: 0}}
var allUID = imap.UIDSet{imap.UIDRange{Start: 1, Stop: 0}}

// selectTimed logs in, selects INBOX and checks the message count.
func selectTimed(ctx context.Context, addr, user string, want int) (*imapConn, time.Duration, error) {
	start := time.Now()
	c, err := dialIMAP(ctx, addr, user)
	if err != nil {
		return nil, 0, err
	}
	data, err := c.Select("INBOX", nil).Wait()
	d := time.Since(start)
	if err != nil {
		c.Close()
		return nil, 0, fmt.Errorf("SELECT INBOX: %w", err)
	}
	if int(data.NumMessages) != want {
		c.Close()
		return nil, 0, fmt.Errorf("SELECT INBOX: %d messages, want %d", data.NumMessages, want)
	}
	return c, d, nil
}

// runBig is workload 1 on user "big": the first SELECT (the server builds
// its index), whole-mailbox FETCHes, a header SEARCH, POP3 STAT+UIDL, then
// SELECT again after a server restart (cold) and once more (warm).
func runBig(ctx context.Context, e *env) error {
	n := e.spec.BigMessages
	c, d, err := selectTimed(ctx, e.srv.Addr("imap"), "big", n)
	if err != nil {
		return err
	}
	defer c.Close()
	e.time("1 big: login+SELECT, first ever (index build)", d)

	start := time.Now()
	cmd := c.Fetch(allUID, &imap.FetchOptions{Flags: true})
	count := 0
	for m := cmd.Next(); m != nil; m = cmd.Next() {
		buf, err := m.Collect()
		if err != nil {
			cmd.Close()
			return fmt.Errorf("UID FETCH 1:* (FLAGS): %w", err)
		}
		if buf.UID == 0 {
			cmd.Close()
			return fmt.Errorf("UID FETCH 1:* (FLAGS): message %d without UID", buf.SeqNum)
		}
		count++
	}
	if err := cmd.Close(); err != nil {
		return fmt.Errorf("UID FETCH 1:* (FLAGS): %w", err)
	}
	if count != n {
		return fmt.Errorf("UID FETCH 1:* (FLAGS): %d messages, want %d", count, n)
	}
	e.time("1 big: UID FETCH 1:* (FLAGS)", time.Since(start))

	for _, pass := range []string{"first", "second"} {
		start = time.Now()
		if err := fetchEnvelopes(c, "big-INBOX-", n); err != nil {
			return fmt.Errorf("FETCH 1:* (ENVELOPE), %s time: %w", pass, err)
		}
		e.time("1 big: FETCH 1:* (ENVELOPE), "+pass+" time", time.Since(start))
	}

	needle, want := e.spec.needle()
	start = time.Now()
	sd, err := c.UIDSearch(&imap.SearchCriteria{
		Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: needle}},
	}, nil).Wait()
	if err != nil {
		return fmt.Errorf("UID SEARCH HEADER Subject: %w", err)
	}
	if got := len(sd.AllUIDs()); got != want {
		return fmt.Errorf("UID SEARCH HEADER Subject %s: %d hits, want %d", needle, got, want)
	}
	e.time("1 big: UID SEARCH HEADER Subject", time.Since(start))
	c.logout()

	start = time.Now()
	if err := popStatUIDL(ctx, e.srv.Addr("pop3"), "big", n); err != nil {
		return err
	}
	e.time("1 big: POP3 login+STAT+UIDL", time.Since(start))

	if err := e.restart(ctx); err != nil {
		return err
	}
	for _, kind := range []string{"cold (server restarted)", "warm"} {
		c, d, err := selectTimed(ctx, e.srv.Addr("imap"), "big", n)
		if err != nil {
			return fmt.Errorf("%s: %w", kind, err)
		}
		c.logout()
		e.time("1 big: login+SELECT, "+kind, d)
	}
	return nil
}

// fetchEnvelopes fetches every ENVELOPE and checks that each Message-ID
// names a different generated message (idPrefix + its number).
func fetchEnvelopes(c *imapConn, idPrefix string, n int) error {
	seen := make([]bool, n)
	cmd := c.Fetch(allSeq, &imap.FetchOptions{Envelope: true})
	count := 0
	for m := cmd.Next(); m != nil; m = cmd.Next() {
		buf, err := m.Collect()
		if err != nil {
			cmd.Close()
			return err
		}
		if buf.Envelope == nil {
			cmd.Close()
			return fmt.Errorf("message %d: no ENVELOPE", buf.SeqNum)
		}
		k, ok := benchIndex(buf.Envelope.MessageID, idPrefix)
		if !ok || k >= n || seen[k] {
			cmd.Close()
			return fmt.Errorf("message %d: unexpected or repeated Message-ID %q", buf.SeqNum, buf.Envelope.MessageID)
		}
		seen[k] = true
		count++
	}
	if err := cmd.Close(); err != nil {
		return err
	}
	if count != n {
		return fmt.Errorf("%d envelopes, want %d", count, n)
	}
	return nil
}

// benchIndex extracts the message number from a generated id
// ("big-INBOX-000123.1a2b3c4d@domain").
func benchIndex(msgID, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(msgID, prefix)
	if !ok {
		return 0, false
	}
	num, _, _ := strings.Cut(rest, ".")
	k, err := strconv.Atoi(num)
	return k, err == nil && k >= 0
}

// popStatUIDL logs in over POP3 and checks STAT and UIDL.
func popStatUIDL(ctx context.Context, addr, user string, n int) error {
	p, err := dialPOP3(ctx, addr)
	if err != nil {
		return fmt.Errorf("POP3: %w", err)
	}
	defer p.Close()
	if err := p.Login(user, Password(user)); err != nil {
		return fmt.Errorf("POP3: %w", err)
	}
	count, _, err := p.Stat()
	if err != nil {
		return fmt.Errorf("POP3: %w", err)
	}
	if count != n {
		return fmt.Errorf("POP3 STAT: %d messages, want %d", count, n)
	}
	uidls, err := p.listing("UIDL")
	if err != nil {
		return fmt.Errorf("POP3: %w", err)
	}
	uniq := make(map[string]bool, len(uidls))
	for _, u := range uidls {
		uniq[u] = true
	}
	if len(uidls) != n || len(uniq) != n {
		return fmt.Errorf("POP3 UIDL: %d lines, %d distinct, want %d", len(uidls), len(uniq), n)
	}
	return p.Quit()
}

// runLarge fetches the large MIME messages: BODYSTRUCTURE of all, then
// every full body, streamed and checked against RFC822.SIZE.
func runLarge(ctx context.Context, e *env) error {
	n := e.spec.LargeMessages
	c, _, err := selectTimed(ctx, e.srv.Addr("imap"), "large", n)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	bs, err := c.Fetch(allSeq, &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{Extended: true}}).Collect()
	if err != nil {
		return fmt.Errorf("FETCH 1:* (BODYSTRUCTURE): %w", err)
	}
	if len(bs) != n {
		return fmt.Errorf("FETCH 1:* (BODYSTRUCTURE): %d messages, want %d", len(bs), n)
	}
	for _, m := range bs {
		mp, ok := m.BodyStructure.(*imap.BodyStructureMultiPart)
		if !ok || !strings.EqualFold(mp.Subtype, "mixed") || len(mp.Children) < 2 {
			return fmt.Errorf("message %d: BODYSTRUCTURE is not the generated multipart/mixed", m.SeqNum)
		}
	}
	e.time("1 large: FETCH 1:* (BODYSTRUCTURE)", time.Since(start))

	start = time.Now()
	var total int64
	cmd := c.Fetch(allSeq, &imap.FetchOptions{RFC822Size: true, BodySection: []*imap.FetchItemBodySection{{Peek: true}}})
	for m := cmd.Next(); m != nil; m = cmd.Next() {
		var size, got int64 = -1, -1
		var head bytes.Buffer
		for item := m.Next(); item != nil; item = m.Next() {
			switch it := item.(type) {
			case imapclient.FetchItemDataRFC822Size:
				size = it.Size
			case imapclient.FetchItemDataBodySection:
				w := &prefixWriter{buf: &head, limit: 4096}
				got, err = io.Copy(w, it.Literal)
				if err != nil {
					cmd.Close()
					return fmt.Errorf("message %d: %w", m.SeqNum, err)
				}
			}
		}
		if size < 0 || got != size {
			cmd.Close()
			return fmt.Errorf("message %d: BODY[] has %d bytes, RFC822.SIZE says %d", m.SeqNum, got, size)
		}
		if !bytes.Contains(head.Bytes(), []byte("\r\nX-Bench-Id: large-INBOX-")) {
			cmd.Close()
			return fmt.Errorf("message %d: BODY[] lacks its X-Bench-Id header or CRLF line ends", m.SeqNum)
		}
		total += got
	}
	if err := cmd.Close(); err != nil {
		return fmt.Errorf("FETCH 1:* (BODY.PEEK[]): %w", err)
	}
	d := time.Since(start)
	e.time("1 large: FETCH 1:* (BODY.PEEK[])", d)
	e.res.Add(e.srv.Name(), "1 large: FETCH BODY[] throughput", "MB/s", true, float64(total)/1e6/d.Seconds())
	c.logout()
	return nil
}

// prefixWriter keeps the first limit bytes written and discards the rest.
type prefixWriter struct {
	buf   *bytes.Buffer
	limit int
}

func (w *prefixWriter) Write(p []byte) (int, error) {
	if room := w.limit - w.buf.Len(); room > 0 {
		w.buf.Write(p[:min(room, len(p))])
	}
	return len(p), nil
}
