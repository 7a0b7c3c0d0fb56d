package maildir

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Dovecot's "subscriptions" file in the Maildir root, read in both of its
// formats and written back in the format found (version 2 for a new file):
//
//	v1: one mailbox name per line, hierarchy separator as configured
//	    ("." in a Maildir++ default set-up, "/" otherwise)
//	v2: "V\t2\n\n", then one name per line with the separator written as
//	    TAB and TAB, CR, LF and \001 escaped as \001t, \001r, \001n, \0011
//
// Writers take the "subscriptions.lock" dotlock and replace the file by
// rename.

const subscriptionsName = "subscriptions"

type subsFormat struct {
	version int  // 1 or 2
	sep     byte // v1 separator
	bad     int  // lines that gave no usable name
}

// readSubscriptions returns canonical names (invalid ones are dropped).
func readSubscriptions(root string) ([]string, subsFormat, error) {
	data, err := os.ReadFile(filepath.Join(root, subscriptionsName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, subsFormat{version: 2}, nil
	}
	if err != nil {
		return nil, subsFormat{version: 2}, err
	}
	names, f := parseSubscriptions(data)
	if f.bad > 0 {
		err = fmt.Errorf("%s has %d unusable lines (damaged?); they are dropped when the file is next written: %w", filepath.Join(root, subscriptionsName), f.bad, errBadSubscriptions)
	}
	return names, f, err
}

// errBadSubscriptions marks a subscriptions file with unusable lines; the
// readable names are still returned.
var errBadSubscriptions = errors.New("bad subscriptions lines")

func parseSubscriptions(data []byte) ([]string, subsFormat) {
	s := string(data)
	f := subsFormat{version: 1, sep: '.'}
	if strings.HasPrefix(s, "V\t") {
		f.version = 2
		if i := strings.Index(s, "\n\n"); i >= 0 {
			s = s[i+2:]
		} else {
			s = ""
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSuffix(line, "\r")
		if line == "" {
			continue
		}
		var name string
		if f.version == 2 {
			parts := strings.Split(line, "\t")
			for i, p := range parts {
				parts[i] = tabUnescape(p)
			}
			name = strings.Join(parts, "/")
		} else {
			if strings.Contains(line, "/") {
				f.sep = '/'
				name = line
			} else {
				name = strings.ReplaceAll(line, ".", "/")
			}
		}
		// Dovecot records modified UTF-7; a name that does not decode is
		// taken as UTF-8 (written by hand or by another tool).
		if dec, err := decodeMUTF7(name); err == nil {
			name = dec
		}
		canon, err := normalizeName(name)
		if err != nil {
			f.bad++
			continue
		}
		if seen[canon] {
			continue
		}
		seen[canon] = true
		out = append(out, canon)
	}
	return out, f
}

func tabUnescape(s string) string {
	if !strings.Contains(s, "\001") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\001' && i+1 < len(s) {
			i++
			switch s[i] {
			case '1':
				b.WriteByte('\001')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case 'n':
				b.WriteByte('\n')
			default:
				b.WriteByte(s[i])
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func tabEscape(s string) string {
	return strings.NewReplacer("\001", "\0011", "\t", "\001t", "\r", "\001r", "\n", "\001n").Replace(s)
}

func marshalSubscriptions(names []string, f subsFormat) []byte {
	sort.Strings(names)
	var b strings.Builder
	if f.version == 2 {
		b.WriteString("V\t2\n\n")
	}
	for _, n := range names {
		// Dovecot writes the modified UTF-7 form of each level.
		parts := strings.Split(n, "/")
		for i, p := range parts {
			parts[i] = encodeMUTF7(p)
			if f.version == 2 {
				parts[i] = tabEscape(parts[i])
			}
		}
		if f.version == 2 {
			b.WriteString(strings.Join(parts, "\t"))
		} else {
			b.WriteString(strings.Join(parts, string(f.sep)))
		}
		b.WriteByte('\n')
	}
	return []byte(b.String())
}

// updateSubscriptions applies fn to the subscribed set under the lock.
func (u *user) updateSubscriptions(ctx context.Context, fn func([]string) []string) error {
	lk, err := acquireDotlock(ctx, filepath.Join(u.root, subscriptionsName+".lock"), uidlistStale, u.s.lockWait(), u.s.names)
	if err != nil {
		return fmt.Errorf("maildir: lock subscriptions of %s: %w", u.acct.Name, err)
	}
	defer func() {
		if err := lk.release(); err != nil {
			u.log.Error("release subscriptions lock", "err", err)
		}
	}()
	names, f, err := readSubscriptions(u.root)
	if errors.Is(err, errBadSubscriptions) {
		u.log.Warn("repairing subscriptions", "err", err)
	} else if err != nil {
		return fmt.Errorf("maildir: read subscriptions of %s: %w", u.acct.Name, err)
	}
	names = fn(names)
	if err := writeAtomic(filepath.Join(u.root, subscriptionsName), marshalSubscriptions(names, f), u.s.opts.Fsync, u.own, u.s.names); err != nil {
		return fmt.Errorf("maildir: write subscriptions of %s: %w", u.acct.Name, err)
	}
	return nil
}
