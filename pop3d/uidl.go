package pop3d

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/roost-mail/roost/backend"
)

// uidlFormat is a compiled Dovecot pop3_uidl_format. Supported, with
// Dovecot 2.3's meaning:
//
//	%u %{uid}            the message's UID
//	%v %{uidvalidity}    the mailbox's UIDVALIDITY
//	%f %{filename}       the Maildir base file name (without ":2,...")
//	%g %{guid}           the message GUID; Roost uses the base file name,
//	                     which is Dovecot's Maildir default
//	%%                   a literal "%"
//
// Each variable may carry, after the "%": an optional "-", an optional
// "0" (zero-pad to the width instead of cutting to it), a width, an
// optional ".width" (the first number is then an offset), and modifiers X
// (hexadecimal, lower case as Dovecot prints it), L (lower case), U (upper
// case). Dovecot 2.4's "%{uid | hex(8)}" form is accepted too. Everything
// else (%m needs mbox header MD5s) is an error at start-up.
// maxUIDL is RFC 1939's limit on a unique-id's length.
const maxUIDL = 70

type uidlFormat struct {
	parts []uidlPart
	// fast is set for the default format, which is formatted without
	// the general path.
	fast bool
}

type uidlPart struct {
	lit     string // literal text when v == 0
	v       byte   // 'u', 'v', 'f' or 'g'
	hex     bool
	lower   bool
	upper   bool
	zeroPad bool
	width   int // 0 = none
	offset  int
	hasOff  bool
}

func parseUIDLFormat(f string) (*uidlFormat, error) {
	uf := &uidlFormat{fast: f == DefaultUIDLFormat}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			uf.parts = append(uf.parts, uidlPart{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(f); i++ {
		c := f[i]
		if c <= ' ' || c > '~' {
			return nil, fmt.Errorf("%q: a UIDL may contain only printable ASCII without spaces (RFC 1939 section 7)", f)
		}
		if c != '%' {
			lit.WriteByte(c)
			continue
		}
		i++
		if i < len(f) && f[i] == '%' {
			lit.WriteByte('%')
			continue
		}
		p, next, err := parseUIDLVar(f, i)
		if err != nil {
			return nil, err
		}
		flush()
		uf.parts = append(uf.parts, p)
		i = next - 1
	}
	flush()
	hasVar := false
	for _, p := range uf.parts {
		hasVar = hasVar || p.v != 0
	}
	if !hasVar {
		return nil, fmt.Errorf("%q: the format must contain %%u, %%v, %%f or %%g, or every message gets the same UIDL", f)
	}
	neverEmpty := false
	for _, p := range uf.parts {
		if len(p.lit) > maxUIDL || p.width > maxUIDL {
			return nil, fmt.Errorf("%q: a UIDL may be at most %d characters (RFC 1939 section 7)", f, maxUIDL)
		}
		// A variable cut by an offset may come out empty.
		neverEmpty = neverEmpty || p.v == 0 || !p.hasOff
	}
	if !neverEmpty {
		return nil, fmt.Errorf("%q: add text or a variable without an offset, or some UIDLs would be empty", f)
	}
	return uf, nil
}

// parseUIDLVar parses one variable reference starting after the "%" at
// f[i:] and returns it and the index after it.
func parseUIDLVar(f string, i int) (uidlPart, int, error) {
	var p uidlPart
	bad := func(why string) (uidlPart, int, error) {
		return p, 0, fmt.Errorf("%q at offset %d: %s", f, i, why)
	}
	sign := 1
	if i < len(f) && f[i] == '-' {
		sign, i = -1, i+1
	}
	num := func() int {
		n := 0
		for i < len(f) && '0' <= f[i] && f[i] <= '9' && n < 1000 {
			n, i = n*10+int(f[i]-'0'), i+1
		}
		return n
	}
	if i < len(f) && f[i] == '0' {
		p.zeroPad, i = true, i+1
	}
	p.width = num()
	if i < len(f) && f[i] == '.' {
		i++
		p.offset, p.hasOff = sign*p.width, true
		if i < len(f) && f[i] == '0' {
			p.zeroPad, i = true, i+1
		}
		p.width = num()
	} else if sign < 0 {
		return bad("a negative number needs an offset.width form")
	}
	for ; i < len(f); i++ {
		switch f[i] {
		case 'X':
			p.hex = true
			continue
		case 'L':
			p.lower = true
			continue
		case 'U':
			p.upper = true
			continue
		}
		break
	}
	if i >= len(f) {
		return bad("unfinished variable")
	}
	if f[i] == '{' {
		end := strings.IndexByte(f[i:], '}')
		if end < 0 {
			return bad("unclosed {")
		}
		if err := p.parseLong(f[i+1 : i+end]); err != nil {
			return bad(err.Error())
		}
		return p, i + end + 1, nil
	}
	switch f[i] {
	case 'u', 'v', 'f', 'g':
		p.v = f[i]
	case 'm':
		return bad("%m (header MD5) exists only for mbox in Dovecot and is not supported")
	default:
		return bad(fmt.Sprintf("unknown variable %%%c: use %%u, %%v, %%f or %%g", f[i]))
	}
	return p, i + 1, nil
}

// parseLong parses "name" or Dovecot 2.4's "name | hex(N)".
func (p *uidlPart) parseLong(s string) error {
	name, filter, hasFilter := strings.Cut(s, "|")
	switch strings.TrimSpace(name) {
	case "uid":
		p.v = 'u'
	case "uidvalidity":
		p.v = 'v'
	case "filename":
		p.v = 'f'
	case "guid":
		p.v = 'g'
	default:
		return fmt.Errorf("unknown variable %q", name)
	}
	if !hasFilter {
		return nil
	}
	filter = strings.TrimSpace(filter)
	if filter == "hex" {
		p.hex = true
		return nil
	}
	arg, ok := strings.CutPrefix(filter, "hex(")
	arg, ok2 := strings.CutSuffix(arg, ")")
	w, err := strconv.Atoi(arg)
	if !ok || !ok2 || err != nil || w < 0 || w > 64 {
		return fmt.Errorf("unsupported filter %q: only hex and hex(N) are", filter)
	}
	p.hex, p.zeroPad, p.width = true, true, w
	return nil
}

// append appends message m's UIDL to buf: its stored UIDL if it has one
// (migrated from another server), else the format applied.
func (uf *uidlFormat) append(buf []byte, m *backend.Message, uidv uint32) []byte {
	if m.UIDL != "" {
		return append(buf, m.UIDL...)
	}
	if uf.fast {
		buf = appendHex8(buf, uint64(m.UID))
		return appendHex8(buf, uint64(uidv))
	}
	for i := range uf.parts {
		buf = uf.parts[i].append(buf, m, uidv)
	}
	return buf
}

// appendHex8 appends n in lower-case hex, zero-padded to 8 digits.
func appendHex8(buf []byte, n uint64) []byte {
	var scratch [16]byte
	h := strconv.AppendUint(scratch[:0], n, 16)
	for i := len(h); i < 8; i++ {
		buf = append(buf, '0')
	}
	return append(buf, h...)
}

func (p *uidlPart) append(buf []byte, m *backend.Message, uidv uint32) []byte {
	if p.v == 0 {
		return append(buf, p.lit...)
	}
	var val []byte
	var scratch [24]byte
	switch p.v {
	case 'u', 'v':
		n := uint64(m.UID)
		if p.v == 'v' {
			n = uint64(uidv)
		}
		base := 10
		if p.hex {
			base = 16
		}
		val = strconv.AppendUint(scratch[:0], n, base)
	default: // 'f', 'g'
		val = []byte(m.Key)
		if p.hex {
			// Dovecot's X on a non-number prints it as a number (0).
			val = append(scratch[:0], '0')
		}
	}
	if p.lower {
		val = bytes.ToLower(val)
	}
	if p.upper {
		val = bytes.ToUpper(val)
	}
	if p.hasOff {
		off := p.offset
		if off < 0 {
			off = max(len(val)+off, 0)
		}
		val = val[min(off, len(val)):]
	}
	if p.width > 0 {
		if p.zeroPad {
			for n := len(val); n < p.width; n++ {
				buf = append(buf, '0')
			}
		} else if len(val) > p.width {
			val = val[:p.width]
		}
	}
	return append(buf, val...)
}
