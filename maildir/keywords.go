package maildir

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// dovecot-keywords maps the keyword letters a-z in file names to names:
// one "<index> <keyword>" line each, index 0 being 'a'. It is read without
// a lock and written under the dovecot-uidlist lock by temp file + rename.

const keywordsName = "dovecot-keywords"

type keywordTable [26]string

// parseKeywords parses a dovecot-keywords file. Bad lines are skipped and
// reported; their letters then show no keyword, and the files keep them.
func parseKeywords(data []byte) (keywordTable, []string) {
	var kt keywordTable
	var warns []string
	for n, line := range strings.Split(string(data), "\n") {
		if line == "" {
			continue
		}
		idxStr, name, ok := strings.Cut(line, " ")
		idx, err := strconv.Atoi(idxStr)
		switch {
		case !ok || err != nil:
			warns = append(warns, fmt.Sprintf("line %d: want \"<index> <keyword>\"", n+1))
		case idx < 0 || idx >= len(kt):
			warns = append(warns, fmt.Sprintf("line %d: index %d beyond z (Maildir keeps 26 keywords)", n+1, idx))
		case !validKeyword(name):
			warns = append(warns, fmt.Sprintf("line %d: %q is not a valid keyword", n+1, name))
		case kt.index(name) >= 0:
			warns = append(warns, fmt.Sprintf("line %d: keyword %q repeated", n+1, name))
		default:
			kt[idx] = name
		}
	}
	return kt, warns
}

// validKeyword checks an IMAP flag-keyword atom (RFC 3501 atom without
// atom-specials and without '\').
func validKeyword(k string) bool {
	if k == "" || len(k) > 128 {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= 0x20 || c >= 0x7f || strings.IndexByte(`(){%*"\]`, c) >= 0 {
			return false
		}
	}
	return true
}

func (kt *keywordTable) index(name string) int {
	for i, k := range kt {
		if k != "" && strings.EqualFold(k, name) {
			return i
		}
	}
	return -1
}

func (kt *keywordTable) marshal() []byte {
	var b bytes.Buffer
	for i, k := range kt {
		if k != "" {
			fmt.Fprintf(&b, "%d %s\n", i, k)
		}
	}
	return b.Bytes()
}

// names returns the sorted keyword names for letter bits.
func (kt *keywordTable) names(bits uint32) []string {
	var out []string
	for i := 0; i < 26; i++ {
		if bits&(1<<i) != 0 && kt[i] != "" {
			out = append(out, kt[i])
		}
	}
	sortStrings(out)
	return out
}

func sortStrings(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}
