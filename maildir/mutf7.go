package maildir

import (
	"errors"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// Modified UTF-7 (RFC 3501 section 5.1.3) is how Dovecot and Courier store
// non-ASCII folder names on disk. go-imap's codec is internal, so Roost has
// its own.

const mutf7Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,"

var errBadMUTF7 = errors.New("invalid modified UTF-7")

// encodeMUTF7 encodes a UTF-8 string in modified UTF-7.
func encodeMUTF7(s string) string {
	var b strings.Builder
	var run []rune
	flush := func() {
		if len(run) == 0 {
			return
		}
		b.WriteByte('&')
		units := utf16.Encode(run)
		buf := make([]byte, 0, len(units)*2)
		for _, u := range units {
			buf = append(buf, byte(u>>8), byte(u))
		}
		var acc uint32
		bits := 0
		for _, c := range buf {
			acc = acc<<8 | uint32(c)
			bits += 8
			for bits >= 6 {
				bits -= 6
				b.WriteByte(mutf7Alphabet[(acc>>uint(bits))&0x3f])
			}
		}
		if bits > 0 {
			b.WriteByte(mutf7Alphabet[(acc<<uint(6-bits))&0x3f])
		}
		b.WriteByte('-')
		run = run[:0]
	}
	for _, r := range s {
		if r >= 0x20 && r <= 0x7e {
			flush()
			if r == '&' {
				b.WriteString("&-")
			} else {
				b.WriteRune(r)
			}
			continue
		}
		if r == utf8.RuneError {
			r = 0xfffd
		}
		run = append(run, r)
	}
	flush()
	return b.String()
}

// decodeMUTF7 decodes a modified UTF-7 string to UTF-8. It rejects the
// forms RFC 3501 forbids (raw non-ASCII, unterminated or non-minimal
// shifts, bad padding), so that decode(encode(x)) == x and names round-trip.
func decodeMUTF7(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c > 0x7e {
			return "", errBadMUTF7
		}
		if c != '&' {
			b.WriteByte(c)
			continue
		}
		j := strings.IndexByte(s[i+1:], '-')
		if j < 0 {
			return "", errBadMUTF7
		}
		enc := s[i+1 : i+1+j]
		i += j + 1
		if enc == "" {
			b.WriteByte('&')
			continue
		}
		var acc uint32
		bits := 0
		var units []uint16
		var pending []byte
		for k := 0; k < len(enc); k++ {
			v := strings.IndexByte(mutf7Alphabet, enc[k])
			if v < 0 {
				return "", errBadMUTF7
			}
			acc = acc<<6 | uint32(v)
			bits += 6
			if bits >= 8 {
				bits -= 8
				pending = append(pending, byte(acc>>uint(bits)))
				if len(pending) == 2 {
					units = append(units, uint16(pending[0])<<8|uint16(pending[1]))
					pending = pending[:0]
				}
			}
		}
		// Leftover bits must be zero padding shorter than one byte, and no
		// half UTF-16 unit may remain.
		if len(pending) != 0 || bits >= 6 || acc&(1<<uint(bits)-1) != 0 {
			return "", errBadMUTF7
		}
		runes := utf16.Decode(units)
		for _, r := range runes {
			// A shifted run must not hold printable ASCII (non-minimal form)
			// nor unpaired surrogates.
			if (r >= 0x20 && r <= 0x7e) || r == utf8.RuneError {
				return "", errBadMUTF7
			}
			b.WriteRune(r)
		}
	}
	return b.String(), nil
}
