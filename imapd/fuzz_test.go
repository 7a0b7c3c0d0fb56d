package imapd

import (
	"bytes"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
)

// checkTree verifies the offset invariants of a part tree: every range
// lies within its parent and the message.
func checkTree(t *testing.T, pt *part, lo, hi int64) {
	t.Helper()
	if pt.hdrOff < lo || pt.hdrOff > pt.bodyOff || pt.bodyOff > pt.end || pt.end > hi || pt.lines < 0 {
		t.Fatalf("bad part offsets %d %d %d within [%d,%d]", pt.hdrOff, pt.bodyOff, pt.end, lo, hi)
	}
	for _, c := range pt.children {
		checkTree(t, c, pt.bodyOff, pt.end)
	}
	if pt.msg != nil {
		checkTree(t, pt.msg, pt.bodyOff, pt.end)
	}
}

func FuzzParseMessage(f *testing.F) {
	f.Add([]byte("Subject: x\r\n\r\nbody\r\n"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: in\r\n\r\nin\r\n--b--\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		root, err := parseMessage(bytes.NewReader(msg))
		if err != nil {
			t.Fatal(err)
		}
		checkTree(t, root, 0, int64(len(msg)))
		if root.end != int64(len(msg)) {
			t.Fatalf("root ends at %d of %d", root.end, len(msg))
		}
		bs := bodyStructure(root)
		if bs == nil {
			t.Fatal("no body structure")
		}
		// Whole-message and top-level sections agree with go-imap's own
		// extractor on CRLF input where that input is well-formed.
		if bytes.Contains(msg, []byte("\r\n\r\n")) && !bytes.ContainsAny(msg, "\x00") {
			want := imapserver.ExtractBodySection(bytes.NewReader(msg), &imap.FetchItemBodySection{Specifier: imap.PartSpecifierText})
			if want != nil && !bytes.Equal(want, msg[root.bodyOff:root.end]) && isCRLF(msg) && !bytes.Contains(msg[:root.bodyOff], []byte("\r\n ")) && root.bodyOff == int64(bytes.Index(msg, []byte("\r\n\r\n"))+4) {
				t.Fatalf("TEXT differs:\n got %q\nwant %q", msg[root.bodyOff:root.end], want)
			}
		}
	})
}

func isCRLF(b []byte) bool {
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') || c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			return false
		}
	}
	return true
}

func FuzzFilterHeader(f *testing.F) {
	f.Add([]byte("Subject: a\r\nX-Long: b\r\n c\r\nFrom: d\r\n\r\n"), "subject x-long")
	f.Fuzz(func(t *testing.T, raw []byte, names string) {
		fields := strings.Fields(names)
		in := filterHeader(raw, fields, false)
		out := filterHeader(raw, fields, true)
		if !bytes.HasSuffix(in, []byte("\r\n")) || !bytes.HasSuffix(out, []byte("\r\n")) {
			t.Fatal("filtered header must end with the blank line")
		}
		if len(in)+len(out)-4 > len(raw) {
			t.Fatalf("filtering made the header grow: %d+%d > %d", len(in), len(out), len(raw))
		}
	})
}

// FuzzMatchPattern checks the linear-time LIST matcher against go-imap's
// backtracking one.
func FuzzMatchPattern(f *testing.F) {
	f.Add("Work/Projects/Roost", "Work/%/R*")
	f.Add("a", "%")
	f.Add("a/b", "*")
	f.Fuzz(func(t *testing.T, name, pattern string) {
		if len(name) > 40 || len(pattern) > 12 || strings.Count(pattern, "*")+strings.Count(pattern, "%") > 4 {
			return // keep the reference matcher fast
		}
		got := matchPattern(name, pattern, '/')
		want := imapserver.MatchList(name, '/', "", pattern)
		if strings.HasPrefix(pattern, "/") {
			return // the reference strips a leading delimiter
		}
		if got != want {
			t.Fatalf("matchPattern(%q, %q) = %v, want %v", name, pattern, got, want)
		}
	})
}

// FuzzMailboxNames checks that names map to the store and back unchanged,
// for the default and Courier-style settings.
func FuzzMailboxNames(f *testing.F) {
	f.Add("Sent", byte('/'), "")
	f.Add("INBOX.Lists.Go", byte('.'), "INBOX.")
	f.Add("a//b", byte('/'), "")
	f.Fuzz(func(t *testing.T, name string, delim byte, prefix string) {
		if delim == 0 || delim > 127 || delim == '"' || delim == '\\' {
			return
		}
		if prefix != "" && !strings.HasSuffix(prefix, string(delim)) {
			return
		}
		s := &Server{opts: Options{NamespacePrefix: prefix}, delim: rune(delim)}
		sname, err := s.toStore(name)
		if err != nil {
			return
		}
		if sname == "" || strings.HasPrefix(sname, "/") || strings.HasSuffix(sname, "/") || strings.Contains(sname, "//") {
			t.Fatalf("toStore(%q) = %q", name, sname)
		}
		back, ok := s.toClient(sname)
		if !ok {
			t.Fatalf("toClient(%q) failed for a name from toStore(%q)", sname, name)
		}
		if sname != "INBOX" && back != name && !strings.EqualFold(back[:len(prefix)], name[:len(prefix)]) {
			t.Fatalf("round trip %q -> %q -> %q", name, sname, back)
		}
	})
}

func FuzzLoginMechanism(f *testing.F) {
	f.Add([]byte(""), []byte("alice"), []byte("secret"))
	f.Add([]byte("alice"), []byte("secret"), []byte(""))
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		var got [2]string
		l := newLoginServer(func(u, p string) error { got = [2]string{u, p}; return nil })
		done := false
		for _, resp := range [][]byte{a, b, c} {
			_, d, err := l.Next(resp)
			if err != nil || d {
				done = d
				break
			}
		}
		if done && len(a) > 0 && got[0] != string(a) {
			t.Fatalf("user %q, want %q", got[0], a)
		}
	})
}
