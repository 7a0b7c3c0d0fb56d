package imapd

import (
	"strings"

	"github.com/emersion/go-imap/v2"
)

// Mailbox names: clients see names with Options.Delimiter and
// Options.NamespacePrefix; the store uses "/" and no prefix. INBOX is the
// same in both and is matched case-insensitively (RFC 3501 5.1).

// toStore maps a client's mailbox name to the store's name, or returns an
// error a client understands when the name cannot exist.
func (s *Server) toStore(name string) (string, error) {
	if strings.EqualFold(name, "INBOX") {
		return "INBOX", nil
	}
	d := string(s.delim)
	if p := s.opts.NamespacePrefix; p != "" {
		rest, ok := cutPrefixFold(name, p)
		if !ok || rest == "" {
			return "", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeNonExistent,
				Text: "Mailbox names start with " + p}
		}
		name = rest
	}
	if d != "/" {
		if strings.Contains(name, "/") {
			return "", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
				Text: "Mailbox names cannot contain /"}
		}
		name = strings.ReplaceAll(name, d, "/")
	}
	switch {
	case name == "":
		return "", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: "Mailbox name is empty"}
	case strings.HasPrefix(name, "/"):
		return "", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: "Mailbox names cannot begin with " + d}
	case strings.HasSuffix(name, "/") || strings.Contains(name, "//"):
		return "", &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeCannot,
			Text: "Mailbox names cannot have empty levels (" + d + d + ")"}
	}
	return name, nil
}

// toClient maps a store name to the client's name; ok is false for a name
// that clients cannot see with the configured delimiter.
func (s *Server) toClient(name string) (string, bool) {
	if name == "INBOX" {
		return name, true
	}
	d := string(s.delim)
	if d != "/" {
		if strings.Contains(name, d) {
			return "", false
		}
		name = strings.ReplaceAll(name, "/", d)
	}
	return s.opts.NamespacePrefix + name, true
}

// cutPrefixFold is strings.CutPrefix, case-insensitive for an "INBOX"
// at the start of the prefix (Courier's "INBOX." namespace).
func cutPrefixFold(name, prefix string) (string, bool) {
	if len(name) < len(prefix) {
		return "", false
	}
	head := name[:len(prefix)]
	if head == prefix || strings.HasPrefix(strings.ToUpper(prefix), "INBOX") && strings.EqualFold(head, prefix) {
		return name[len(prefix):], true
	}
	return "", false
}

// matchPattern reports whether name matches a LIST pattern, where "*"
// matches anything and "%" anything but the delimiter (RFC 3501 6.3.8).
// It runs in O(len(name)*len(pattern)), unlike naive backtracking.
func matchPattern(name, pattern string, delim byte) bool {
	// prev[j]: pattern[:i] matches name[:j].
	prev := make([]bool, len(name)+1)
	cur := make([]bool, len(name)+1)
	prev[0] = true
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch c {
		case '*':
			cur[0] = prev[0]
			for j := 1; j <= len(name); j++ {
				cur[j] = prev[j] || cur[j-1]
			}
		case '%':
			cur[0] = prev[0]
			for j := 1; j <= len(name); j++ {
				cur[j] = prev[j] || cur[j-1] && name[j-1] != delim
			}
		default:
			cur[0] = false
			for j := 1; j <= len(name); j++ {
				cur[j] = prev[j-1] && name[j-1] == c
			}
		}
		prev, cur = cur, prev
	}
	return prev[len(name)]
}

// listMatch applies a LIST reference and pattern to a client-side name.
// INBOX matches case-insensitively.
func (s *Server) listMatch(name, ref, pattern string) bool {
	full := ref + pattern
	d := byte(s.delim)
	if strings.HasPrefix(pattern, string(s.delim)) && ref != "" {
		full = pattern // an absolute pattern ignores the reference
	}
	if matchPattern(name, full, d) {
		return true
	}
	if len(name) >= 5 && strings.EqualFold(name[:5], "INBOX") && (len(name) == 5 || name[5] == d) {
		// Compare with INBOX spelled as the pattern spells it.
		if len(full) >= 5 && strings.EqualFold(full[:5], "INBOX") {
			return matchPattern(name[5:], full[5:], d)
		}
	}
	return false
}
