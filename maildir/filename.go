package maildir

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/roost-mail/roost/backend"
)

// A Maildir file name is "<base>[:2,<flags>[,<extra>]]". The base is the
// message's stable key; it may carry ",S=<physical size>" and
// ",W=<CRLF size>" (Dovecot, Courier). Flags are ASCII-sorted letters:
// D R S T F map to IMAP flags, other upper-case letters (P "passed") are
// kept untouched, and a-z are keyword indexes into dovecot-keywords.

// splitName splits a file name into its base (key) and info part (":...").
func splitName(name string) (key, info string) {
	if i := strings.IndexByte(name, ':'); i >= 0 {
		return name[:i], name[i:]
	}
	return name, ""
}

// validFileName reports whether a directory entry in new/ or cur/ can be a
// message: dot-files (editors, NFS silly-renames) and empty keys are not.
func validFileName(name string) bool {
	if name == "" || name[0] == '.' {
		return false
	}
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '/', '\r', '\n':
			return false
		case ':':
			return i > 0
		}
	}
	return true
}

// sizeField returns the value of ",<c>=<n>" in a base name, as Dovecot's
// maildir_filename_get_size reads it (the number ends at ',' or ':').
func sizeField(key string, c byte) (int64, bool) {
	for i := 0; i+3 <= len(key); i++ {
		if key[i] != ',' || key[i+1] != c || key[i+2] != '=' {
			continue
		}
		j := i + 3
		k := j
		for k < len(key) && key[k] >= '0' && key[k] <= '9' {
			k++
		}
		if k == j || (k < len(key) && key[k] != ',' && key[k] != ':') {
			continue
		}
		n, err := strconv.ParseInt(key[j:k], 10, 64)
		if err != nil || n < 0 {
			continue
		}
		return n, true
	}
	return 0, false
}

var flagLetters = [...]struct {
	c    byte
	flag backend.Flags
}{
	{'D', backend.FlagDraft},
	{'F', backend.FlagFlagged},
	{'R', backend.FlagAnswered},
	{'S', backend.FlagSeen},
	{'T', backend.FlagDeleted},
}

// parseInfo returns the system flags and keyword letter bits (bit i = 'a'+i)
// of an info part. Anything but ":2," carries no flags.
func parseInfo(info string) (backend.Flags, uint32) {
	if !strings.HasPrefix(info, ":2,") {
		return 0, 0
	}
	fl := info[3:]
	if i := strings.IndexByte(fl, ','); i >= 0 {
		fl = fl[:i]
	}
	var flags backend.Flags
	var kw uint32
	for i := 0; i < len(fl); i++ {
		c := fl[i]
		if c >= 'a' && c <= 'z' {
			kw |= 1 << (c - 'a')
			continue
		}
		for _, fc := range flagLetters {
			if fc.c == c {
				flags |= fc.flag
			}
		}
	}
	return flags, kw
}

// makeInfo builds the info part for new flags, keeping from old the letters
// Roost does not manage (P and other upper-case ones) and any ",extra".
func makeInfo(old string, flags backend.Flags, kw uint32) string {
	var letters []byte
	extra := ""
	if strings.HasPrefix(old, ":2,") {
		fl := old[3:]
		if i := strings.IndexByte(fl, ','); i >= 0 {
			fl, extra = fl[:i], fl[i:]
		}
		for i := 0; i < len(fl); i++ {
			c := fl[i]
			if c >= 'a' && c <= 'z' || strings.IndexByte("DFRST", c) >= 0 {
				continue
			}
			letters = append(letters, c)
		}
	}
	for _, fc := range flagLetters {
		if flags&fc.flag != 0 {
			letters = append(letters, fc.c)
		}
	}
	for i := 0; i < 26; i++ {
		if kw&(1<<i) != 0 {
			letters = append(letters, byte('a'+i))
		}
	}
	sort.Slice(letters, func(i, j int) bool { return letters[i] < letters[j] })
	// Remove duplicates left by odd input such as ":2,PP".
	out := letters[:0]
	for i, c := range letters {
		if i == 0 || c != letters[i-1] {
			out = append(out, c)
		}
	}
	return ":2," + string(out) + extra
}

// nameGen makes Dovecot-style unique base names:
// <sec>.M<usec>P<pid>R<tag>.<host>. Within a generator the microsecond part is
// bumped so that two names never repeat; across processes the pid differs.
type nameGen struct {
	host    string
	pid     string
	tag     string       // sets this generator's names apart from another's in this process
	last    atomic.Int64 // last used time in microseconds
	lastSec atomic.Int64 // last value of nextSecond
}

func newNameGen() *nameGen {
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	// The Maildir spec: '/' and ':' in the host name become \057 and \072.
	h = strings.NewReplacer("/", `\057`, ":", `\072`, ",", `\054`).Replace(h)
	// Two generators in one process (two Stores, or a Store and a quota
	// recalculation) could pick the same microsecond: a random tag after
	// the pid keeps their names apart.
	var tag [4]byte
	rand.Read(tag[:])
	return &nameGen{host: h, pid: strconv.Itoa(os.Getpid()), tag: "R" + hex.EncodeToString(tag[:])}
}

func (g *nameGen) next() string {
	now := time.Now().UnixMicro()
	for {
		last := g.last.Load()
		if now <= last {
			now = last + 1
		}
		if g.last.CompareAndSwap(last, now) {
			break
		}
	}
	sec, usec := now/1e6, now%1e6
	return strconv.FormatInt(sec, 10) + ".M" + strconv.FormatInt(usec, 10) + "P" + g.pid + g.tag + "." + g.host
}

// nextSecond returns the current Unix time, bumped so that this process
// never returns the same value twice (fresh UIDVALIDITY values).
func (g *nameGen) nextSecond() int64 {
	now := time.Now().Unix()
	for {
		last := g.lastSec.Load()
		if now <= last {
			now = last + 1
		}
		if g.lastSec.CompareAndSwap(last, now) {
			return now
		}
	}
}
