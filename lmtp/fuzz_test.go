package lmtp

import (
	"fmt"
	"strings"
	"testing"
	"unicode"

	"github.com/roost-mail/roost/auth"
)

// FuzzParseJournalLine: any line either parses into an entry that formats
// back to the same fields, or is rejected; nothing panics.
func FuzzParseJournalLine(f *testing.F) {
	f.Add("1795635785 0123456789abcdef0123456789abcdef P")
	f.Add("1795635785 0123456789abcdef0123456789abcdef D 42 INBOX")
	f.Add("1795635785 k D 7 Lists/Roost Dev")
	f.Fuzz(func(t *testing.T, line string) {
		e, key, ok := parseJournalLine(line)
		if !ok {
			return
		}
		var again string
		if e.done {
			again = fmt.Sprintf("%d %s D %d %s", e.at.Unix(), key, e.uid, e.folder)
		} else {
			again = fmt.Sprintf("%d %s P", e.at.Unix(), key)
		}
		e2, key2, ok2 := parseJournalLine(again)
		if !ok2 || key2 != key || e2 != e {
			t.Fatalf("%q parsed as %+v %q, which formats to %q and parses as %+v %q %v", line, e, key, again, e2, key2, ok2)
		}
	})
}

// FuzzSplitAddress: the looked-up name is normalised, never contains the
// detail, and keeps the domain unless it is a local domain.
func FuzzSplitAddress(f *testing.F) {
	f.Add("alice@example.edu")
	f.Add("alice+lists@mx.test")
	f.Add("Bob+a+b@Example.EDU")
	f.Add("+x@example.edu")
	f.Add("postmaster")
	f.Add("\"quoted@local\"@example.edu")
	s := &Server{opts: Options{RecipientDelimiter: "+", LocalDomains: []string{"mx.test"}}}
	f.Fuzz(func(t *testing.T, addr string) {
		name, detail := s.splitAddress(addr)
		if name != auth.Normalize(name) {
			t.Fatalf("%q: name %q is not normalised", addr, name)
		}
		if detail != "" && !strings.Contains(addr, "+"+detail) {
			t.Fatalf("%q: detail %q is not from the address", addr, detail)
		}
		i := strings.LastIndex(addr, "@")
		if i < 0 || strings.EqualFold(addr[i+1:], "mx.test") {
			return
		}
		if want := strings.ToLower(strings.TrimRightFunc(addr[i:], unicode.IsSpace)); !strings.HasSuffix(name, want) {
			t.Fatalf("%q: name %q lost the domain %q", addr, name, want)
		}
	})
}
