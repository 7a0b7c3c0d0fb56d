package pop3d

import (
	"bytes"
	"encoding/base64"
	"errors"
	"io"
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

// FuzzDotStuff checks the streaming dot-stuffers against net/textproto's
// DotReader: decoding what we send gives back the message.
func FuzzDotStuff(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg []byte, top uint8) {
		// Messages from the store are CRLF text: normalise the input.
		msg = bytes.ReplaceAll(msg, []byte("\r"), nil)
		msg = bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))
		var out bytes.Buffer
		w := newWireBuffer(len(msg) % 50)
		want := bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
		if len(want) > 0 && want[len(want)-1] != '\n' {
			want = append(want, '\n')
		}
		w.reset(&out)
		n, err := copyMessage(w, bytes.NewReader(msg), make([]byte, 1+len(msg)%64), int64(len(msg)))
		w.Flush()
		if err != nil || n != int64(len(msg)) {
			t.Fatalf("copy: n=%d err=%v", n, err)
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

// FuzzCopyMessage compares copyMessage, which moves whole lines and
// carries its state across chunk boundaries, with wireForm, which works
// an octet at a time: any bytes (LF, CRLF, bare CR), read in chunks of
// the sizes in chunks, through a wire buffer of any size, with a recorded
// size that cuts the message or is more than it has, give exactly the
// same octets; and so does the message in CRLF form, as the store's
// OpenMessage streams it.
func FuzzCopyMessage(f *testing.F) {
	f.Fuzz(func(t *testing.T, msg, chunks []byte, outSize uint8, cut int8) {
		full := crlfSize(string(msg))
		size := max(full-int64(cut), 0)
		want, wantErr := wireForm(msg, size)
		if wantErr {
			// Only the terminator is missing, so the client sees no end.
			want = want[:len(want)-len(".\r\n")]
			if len(msg) > 0 && msg[len(msg)-1] != '\n' {
				want = want[:len(want)-len("\r\n")]
			}
		}
		for _, in := range [][]byte{msg, crlfOf(msg)} {
			var out bytes.Buffer
			w := newWireBuffer(int(outSize))
			w.reset(&out)
			n, err := copyMessage(w, &chunkReader{data: in, chunks: chunks}, make([]byte, 256), size)
			w.Flush()
			if wantErr {
				if !errors.Is(err, io.ErrUnexpectedEOF) || n != full {
					t.Fatalf("%q, recorded size %d: n=%d err=%v, want %d and ErrUnexpectedEOF", in, size, n, err, full)
				}
			} else if err != nil || n != size {
				t.Fatalf("%q: n=%d err=%v, want %d", in, n, err, size)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("%q in chunks %v, size %d:\ngot  %q\nwant %q", in, chunks, size, out.Bytes(), want)
			}
		}
	})
}

// crlfOf is msg with every bare LF made CRLF.
func crlfOf(msg []byte) []byte {
	var out []byte
	for i, c := range msg {
		if c == '\n' && (i == 0 || msg[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

// wireForm is the reference for copyMessage: the CRLF form of msg, cut to
// size octets, dot-stuffed and terminated; short reports a msg with fewer
// than size octets in that form.
func wireForm(msg []byte, size int64) (wire []byte, short bool) {
	crlf := crlfOf(msg)
	if int64(len(crlf)) < size {
		short = true
	}
	crlf = crlf[:min(int64(len(crlf)), size)]
	for i, c := range crlf {
		if c == '.' && (i == 0 || crlf[i-1] == '\n') {
			wire = append(wire, '.')
		}
		wire = append(wire, c)
	}
	if len(crlf) > 0 && crlf[len(crlf)-1] != '\n' {
		wire = append(wire, '\r', '\n')
	}
	return append(wire, ".\r\n"...), short
}

// chunkReader returns data in reads of the sizes in chunks (each 0–15,
// cycling; a 0 is an empty read, never twice in a row), or all at once if
// chunks is empty.
type chunkReader struct {
	data, chunks []byte
	next         int  // index in chunks
	empty        bool // the last read was empty
}

func (r *chunkReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := len(r.data)
	if len(r.chunks) > 0 {
		n = int(r.chunks[r.next%len(r.chunks)] % 16)
		r.next++
		if n == 0 && r.empty {
			n = 1
		}
	}
	n = copy(p, r.data[:min(n, len(r.data))])
	r.data, r.empty = r.data[n:], n == 0
	return n, nil
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
