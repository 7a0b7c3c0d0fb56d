package maildir

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// dovecot-uidlist, format version 3 (Dovecot 1.1 and later):
//
//	3 V<uidvalidity> N<nextuid> [G<mailbox guid> <other key><value> ...]
//	<uid> [<key><value> ...] :<base file name>
//
// Record keys Roost uses: W (CRLF size, omitted when the name has ",W="),
// P (POP3 UIDL kept from a migration) and T (Roost: INTERNALDATE as Unix
// seconds, so that opening a mailbox needs no stat per message). Other keys
// (S, O, G, ...) are kept verbatim. Version 1 ("1 <uidvalidity> <nextuid>",
// "<uid> <name>") is Courier's courierimapuiddb and is read, never written.

const uidlistName = "dovecot-uidlist"

type ulRec struct {
	uid   uint32
	key   string
	vsize int64 // -1 if unknown
	mtime int64 // 0 if unknown
	uidl  string
	order uint32 // O field: POP3 order from a migration (also kept in ext)
	ext   string // other fields, space-separated, verbatim
}

type uidlist struct {
	version     int
	uidValidity uint32
	nextUID     uint32
	hdrExtra    []string // header fields other than V and N, verbatim
	recs        []ulRec  // ascending uid
	// torn: the last line had no newline, a crash during an append (or an
	// append in progress, for a reader without the lock). It is ignored,
	// its UID is never reused, and writers rewrite the file instead of
	// appending after it.
	torn bool
}

// parseUidlist parses a uidlist. It returns an error only if the header is
// unusable; bad records are skipped and described in warnings (their
// messages get new UIDs, nothing is lost). The next UID is the highest of
// the header's N (which lags behind appended records, in Dovecot's files
// as in Roost's), every UID seen plus one, and the UID of a torn last line.
func parseUidlist(data []byte) (*uidlist, []string, error) {
	s := string(data)
	nl := strings.IndexByte(s, '\n')
	if nl < 0 {
		return nil, nil, fmt.Errorf("uidlist has no complete header line (truncated?)")
	}
	hdr := strings.Fields(s[:nl])
	rest := s[nl+1:]
	if len(hdr) == 0 {
		return nil, nil, fmt.Errorf("uidlist header is empty")
	}
	ul := &uidlist{}
	switch hdr[0] {
	case "1":
		if len(hdr) != 3 {
			return nil, nil, fmt.Errorf("uidlist v1 header %q: want 3 fields", s[:nl])
		}
		v, err1 := strconv.ParseUint(hdr[1], 10, 32)
		n, err2 := strconv.ParseUint(hdr[2], 10, 32)
		if err1 != nil || err2 != nil {
			return nil, nil, fmt.Errorf("uidlist v1 header %q: bad number", s[:nl])
		}
		ul.version, ul.uidValidity, ul.nextUID = 1, uint32(v), uint32(n)
	case "3":
		ul.version = 3
		for _, f := range hdr[1:] {
			switch f[0] {
			case 'V', 'N':
				n, err := strconv.ParseUint(f[1:], 10, 32)
				if err != nil {
					return nil, nil, fmt.Errorf("uidlist header field %q: %w", f, err)
				}
				if f[0] == 'V' {
					ul.uidValidity = uint32(n)
				} else {
					ul.nextUID = uint32(n)
				}
			default:
				ul.hdrExtra = append(ul.hdrExtra, f)
			}
		}
	default:
		return nil, nil, fmt.Errorf("uidlist version %q is not supported (want 3, or 1 from Courier)", hdr[0])
	}
	if ul.uidValidity == 0 {
		return nil, nil, fmt.Errorf("uidlist header %q has no UIDVALIDITY", s[:nl])
	}
	var warns []string
	ul.recs = make([]ulRec, 0, strings.Count(rest, "\n")+1)
	lineNo := 1
	var last uint32
	for len(rest) > 0 {
		lineNo++
		var line string
		if i := strings.IndexByte(rest, '\n'); i >= 0 {
			line, rest = rest[:i], rest[i+1:]
		} else {
			// A final line without newline is an append cut short (or
			// still under way): ignore it, but never hand out its UID again.
			ul.torn = true
			if u := leadingUID(rest); u > last {
				last = u
			}
			break
		}
		if line == "" {
			continue
		}
		r, err := parseUidlistRec(line, ul.version)
		if err != nil {
			warns = append(warns, fmt.Sprintf("line %d: %v, ignored", lineNo, err))
			continue
		}
		if r.uid <= last {
			warns = append(warns, fmt.Sprintf("line %d: UID %d not above %d, ignored", lineNo, r.uid, last))
			continue
		}
		last = r.uid
		ul.recs = append(ul.recs, r)
	}
	if ul.nextUID <= last {
		// Dovecot lets N lag behind appended records.
		ul.nextUID = last + 1
	}
	return ul, warns, nil
}

// leadingUID returns the number a (possibly torn) record line starts with,
// or 0.
func leadingUID(line string) uint32 {
	end := 0
	for end < len(line) && end < 10 && line[end] >= '0' && line[end] <= '9' {
		end++
	}
	n, err := strconv.ParseUint(line[:end], 10, 32)
	if err != nil {
		return 0
	}
	return uint32(n)
}

func parseUidlistRec(line string, version int) (ulRec, error) {
	r := ulRec{vsize: -1}
	sp := strings.IndexByte(line, ' ')
	if sp <= 0 {
		return r, fmt.Errorf("no UID")
	}
	uid, err := strconv.ParseUint(line[:sp], 10, 32)
	if err != nil || uid == 0 {
		return r, fmt.Errorf("bad UID %q", line[:sp])
	}
	r.uid = uint32(uid)
	rest := line[sp+1:]
	if version == 1 {
		r.key, _ = splitName(strings.TrimSpace(rest))
	} else {
		// Fields are "<key><value>" separated by spaces; the one starting
		// with ':' is the file name and runs to the end of the line.
		var other []string
		for {
			for strings.HasPrefix(rest, " ") {
				rest = rest[1:]
			}
			if rest == "" {
				return r, fmt.Errorf("no ':' before the file name")
			}
			if rest[0] == ':' {
				r.key, _ = splitName(rest[1:])
				break
			}
			f := rest
			if j := strings.IndexByte(rest, ' '); j >= 0 {
				f, rest = rest[:j], rest[j+1:]
			} else {
				rest = ""
			}
			switch f[0] {
			case 'W':
				if n, err := strconv.ParseInt(f[1:], 10, 64); err == nil && n >= 0 {
					r.vsize = n
					continue
				}
			case 'T':
				if n, err := strconv.ParseInt(f[1:], 10, 64); err == nil && n > 0 {
					r.mtime = n
					continue
				}
			case 'P':
				if len(f) > 1 {
					r.uidl = f[1:]
					continue
				}
			case 'O':
				// Kept verbatim in ext too, so that it is written back as read.
				if n, err := strconv.ParseUint(f[1:], 10, 32); err == nil && n > 0 {
					r.order = uint32(n)
				}
			}
			other = append(other, f)
		}
		if len(other) > 0 {
			r.ext = strings.Join(other, " ")
		}
	}
	if !validFileName(r.key) {
		return r, fmt.Errorf("bad file name %q", r.key)
	}
	return r, nil
}

// marshal writes the uidlist in version 3.
func (ul *uidlist) marshal() []byte {
	var b bytes.Buffer
	b.Grow(64 + len(ul.recs)*72)
	fmt.Fprintf(&b, "3 V%d N%d", ul.uidValidity, ul.nextUID)
	for _, f := range ul.hdrExtra {
		b.WriteByte(' ')
		b.WriteString(f)
	}
	b.WriteByte('\n')
	for i := range ul.recs {
		ul.recs[i].appendTo(&b)
	}
	return b.Bytes()
}

// appendTo writes the record as one version 3 line.
func (r *ulRec) appendTo(b *bytes.Buffer) {
	var num [20]byte
	b.Write(strconv.AppendUint(num[:0], uint64(r.uid), 10))
	if r.ext != "" {
		b.WriteByte(' ')
		b.WriteString(r.ext)
	}
	if r.uidl != "" {
		b.WriteString(" P")
		b.WriteString(r.uidl)
	}
	if r.vsize >= 0 {
		if w, ok := sizeField(r.key, 'W'); !ok || w != r.vsize {
			b.WriteString(" W")
			b.Write(strconv.AppendInt(num[:0], r.vsize, 10))
		}
	}
	if r.mtime > 0 {
		b.WriteString(" T")
		b.Write(strconv.AppendInt(num[:0], r.mtime, 10))
	}
	b.WriteString(" :")
	b.WriteString(r.key)
	b.WriteByte('\n')
}

// newMailboxGUID returns a Dovecot-style 128-bit mailbox GUID field.
func newMailboxGUID() string {
	var g [16]byte
	_, _ = rand.Read(g[:])
	return "G" + hex.EncodeToString(g[:])
}
