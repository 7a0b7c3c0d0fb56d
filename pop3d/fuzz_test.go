package pop3d

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/roost-mail/roost/backend"
)

// FuzzParseCommand checks that any line parses into a short upper-case
// keyword or is refused, and that dispatching it never panics.
func FuzzParseCommand(f *testing.F) {
	f.Fuzz(func(t *testing.T, line string) {
		name, args, err := parseCommand(line)
		if err != nil {
			return
		}
		if name == "" || len(name) > 4 || strings.ToUpper(name) != name {
			t.Fatalf("%q: keyword %q", line, name)
		}
		if !strings.HasSuffix(line, args) {
			t.Fatalf("%q: args %q are not the line's tail", line, args)
		}
		if f, ok := splitArgs(args, 0, 2); ok {
			for _, a := range f {
				if a == "" || strings.Contains(a, " ") {
					t.Fatalf("%q: bad argument %q", line, a)
				}
			}
		}
		if len(args) > 0 {
			parseNumber(args)
		}
	})
}

// FuzzSASL runs whole AUTH exchanges: the mechanism, an optional initial
// response and the client's lines (separated by "\n").
func FuzzSASL(f *testing.F) {
	f.Fuzz(func(t *testing.T, mech, initial string, hasInitial bool, lines string) {
		responses := strings.Split(lines, "\n")
		asked := 0
		user, pass, err := runSASL(strings.ToUpper(mech), initial, hasInitial, func(challenge []byte) (string, error) {
			if asked >= len(responses) {
				return "", errors.New("client hung up")
			}
			asked++
			return responses[asked-1], nil
		})
		if asked > 2 {
			t.Fatalf("%d challenges: PLAIN needs at most 1, LOGIN 2", asked)
		}
		if err != nil {
			return
		}
		if user == "" || pass == "" || !utf8.ValidString(user) || !utf8.ValidString(pass) ||
			strings.ContainsRune(user, 0) || strings.ContainsRune(pass, 0) {
			t.Fatalf("credentials %q %q accepted", user, pass)
		}
		if strings.ToUpper(mech) == "PLAIN" {
			// The credentials must be what the client encoded.
			last := initial
			if asked > 0 {
				last = responses[asked-1]
			}
			raw, _ := base64.StdEncoding.DecodeString(last)
			if !bytes.HasSuffix(raw, []byte("\x00"+user+"\x00"+pass)) {
				t.Fatalf("PLAIN %q gave %q %q", raw, user, pass)
			}
		}
	})
}

// FuzzDotStuff checks the streaming dot-stuffer against net/textproto's
// DotReader: decoding what we send gives back the message.
func FuzzDotStuff(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg []byte, top uint8) {
		// Messages from the store are CRLF text: normalise the input.
		msg = bytes.ReplaceAll(msg, []byte("\r"), nil)
		msg = bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		n, err := copyDotStuffed(w, bytes.NewReader(msg), make([]byte, 1+len(msg)%64))
		w.Flush()
		if err != nil || n != int64(len(msg)) {
			t.Fatalf("copy: n=%d err=%v", n, err)
		}
		want := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
		if len(want) > 0 && want[len(want)-1] != '\n' {
			want = append(want, '\n')
		}
		if got := dotDecode(t, out.Bytes()); !bytes.Equal(got, want) {
			t.Fatalf("round trip: got %q, want %q", got, want)
		}
		out.Reset()
		if _, err := copyTop(w, bytes.NewReader(msg), int64(top)); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		got := dotDecode(t, out.Bytes())
		if !bytes.HasPrefix(want, got) && !bytes.Equal(append(want, '\n'), got) {
			t.Fatalf("TOP %d: %q is not a prefix of %q", top, got, want)
		}
	})
}

// FuzzUIDLFormat: a format is refused or gives, for every message, a UIDL
// of printable ASCII without spaces (RFC 1939 section 7), and different
// UIDs give different UIDLs when the format uses %u alone.
func FuzzUIDLFormat(f *testing.F) {
	f.Fuzz(func(t *testing.T, format string, uid uint32, uidv uint32) {
		uf, err := parseUIDLFormat(format)
		if err != nil {
			return
		}
		m := backend.Message{UID: backend.UID(uid), Key: "1795628282.M554387P26027.vm,S=294,W=308"}
		got := uf.append(nil, &m, uidv)
		if len(got) == 0 {
			t.Fatalf("%q gave an empty UIDL", format)
		}
		for _, c := range got {
			if c <= ' ' || c > '~' {
				t.Fatalf("%q gave %q", format, got)
			}
		}
	})
}
