package maildir

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/roost-mail/roost/backend"
)

// Mailbox names are "/"-delimited UTF-8. On disk a folder is the Maildir++
// directory "." + the components, each in modified UTF-7, joined by ".".
// INBOX is the root.

const maxDirName = 255

// normalizeName validates name and returns its canonical form ("INBOX" for
// any case of inbox, also as the first component of a child).
func normalizeName(name string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: %q %s", backend.ErrInvalidName, name, why)
	}
	if name == "" {
		return bad("is empty")
	}
	if !utf8.ValidString(name) {
		return bad("is not valid UTF-8")
	}
	parts := strings.Split(name, "/")
	for i, p := range parts {
		switch {
		case p == "":
			return bad("has an empty hierarchy level")
		case p == "." || p == "..":
			return bad("has a . or .. level")
		case strings.ContainsAny(p, ".\\*%"):
			return bad("contains one of . \\ * % (not storable in Maildir++)")
		case strings.ContainsRune(p, utf8.RuneError):
			return bad("contains U+FFFD")
		}
		for _, r := range p {
			if r < 0x20 || r == 0x7f {
				return bad("contains a control character")
			}
		}
		if i == 0 && strings.EqualFold(p, "INBOX") {
			parts[0] = "INBOX"
		}
	}
	canon := strings.Join(parts, "/")
	if canon != "INBOX" {
		d := dirName(canon)
		if len(d) > maxDirName {
			return bad("is too long for the file system")
		}
	}
	return canon, nil
}

// dirName maps a canonical non-INBOX name to its Maildir++ directory name.
func dirName(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = encodeMUTF7(p)
	}
	return "." + strings.Join(parts, ".")
}

// nameFromDir maps a Maildir++ directory name (".A.B") back to "A/B". It
// fails for entries that are not folders: "." and "..", names starting
// with "..", empty levels, or components that are not modified UTF-7.
func nameFromDir(d string) (string, error) {
	if len(d) < 2 || d[0] != '.' || d[1] == '.' {
		return "", fmt.Errorf("%q is not a Maildir++ folder", d)
	}
	parts := strings.Split(d[1:], ".")
	for i, p := range parts {
		if p == "" {
			return "", fmt.Errorf("folder directory %q has an empty level", d)
		}
		dec, err := decodeMUTF7(p)
		if err != nil {
			return "", fmt.Errorf("folder directory %q: %w; rename it to valid modified UTF-7 to make it visible", d, err)
		}
		if strings.ContainsAny(dec, "/\\*%") {
			return "", fmt.Errorf("folder directory %q decodes to a name with / \\ * or %%", d)
		}
		parts[i] = dec
	}
	if strings.EqualFold(parts[0], "INBOX") {
		parts[0] = "INBOX"
	}
	return strings.Join(parts, "/"), nil
}
