package maildir

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// naiveCRLF is the obvious conversion the streaming reader must equal.
func naiveCRLF(b []byte) []byte {
	var out []byte
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			out = append(out, '\r')
		}
		out = append(out, c)
	}
	return out
}

func TestCRLFReaderMatchesNaive(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	alphabet := []byte("ab\r\n.")
	cases := [][]byte{nil, []byte("\n"), []byte("\r\n"), []byte("\r\r\n\n"), []byte("x\r"), bytes.Repeat([]byte("line\n"), 20000)}
	for i := 0; i < 200; i++ {
		b := make([]byte, rng.Intn(70000))
		for j := range b {
			b[j] = alphabet[rng.Intn(len(alphabet))]
		}
		cases = append(cases, b)
	}
	dir := t.TempDir()
	for i, in := range cases {
		want := naiveCRLF(in)
		for _, mode := range []struct{ oneByte, toEOF bool }{{false, false}, {true, false}, {false, true}, {true, true}} {
			p := filepath.Join(dir, "m")
			if err := os.WriteFile(p, in, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			sized := int64(-1)
			var r io.Reader = newCRLFReader(f, int64(len(want)))
			if mode.toEOF { // size not measured yet: to the end, then reported
				r = newCRLFReaderToEOF(f, int64(len(in)), func(n int64) { sized = n })
			}
			if mode.oneByte {
				r = iotest.OneByteReader(r)
			}
			got, err := io.ReadAll(r)
			f.Close()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("case %d (%+v): err %v, got %d bytes, want %d", i, mode, err, len(got), len(want))
			}
			if mode.toEOF && sized != int64(len(want)) {
				t.Fatalf("case %d (%+v): reported size %d, want %d", i, mode, sized, len(want))
			}
		}
	}
}

func TestCRLFReaderShortFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m")
	os.WriteFile(p, []byte("a\nb\n"), 0o600)
	f, _ := os.Open(p)
	defer f.Close()
	if _, err := io.ReadAll(newCRLFReader(f, 10)); err == nil {
		t.Fatal("a file shorter than its recorded size must be an error")
	}
}

// FuzzCRLFSize: the size measured for a message, read in pieces of any
// size (a CRLF split between two reads included), is the length of its
// CRLF form.
func FuzzCRLFSize(f *testing.F) {
	for _, seed := range []string{"", "\n", "\r\n", "\r", "a\r\nb\nc\r", "\n\n\r\r\n\n", "x\r\r\n\n"} {
		f.Add([]byte(seed), uint8(1))
	}
	f.Fuzz(func(t *testing.T, msg []byte, bufSize uint8) {
		buf := make([]byte, 1+int(bufSize)%16)
		got, err := crlfSize(bytes.NewReader(msg), buf)
		if want := int64(len(naiveCRLF(msg))); err != nil || got != want {
			t.Fatalf("crlfSize(%q) with %d-byte reads = %d, %v; want %d", msg, len(buf), got, err, want)
		}
	})
}

// FuzzCRLFReader: the streamed CRLF form, read in pieces of any size,
// equals the naive conversion cut to the recorded size, and a file shorter
// than its recorded size is an error, never padding.
func FuzzCRLFReader(f *testing.F) {
	for _, seed := range []string{"", "\n", "\r\n", "a\nb\r\nc", "\r\r\n\n", "x\r"} {
		f.Add([]byte(seed), uint8(1), int8(0))
	}
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, msg []byte, chunk uint8, delta int8) {
		p := filepath.Join(dir, "m")
		if err := os.WriteFile(p, msg, 0o600); err != nil {
			t.Fatal(err)
		}
		fh, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		defer fh.Close()
		full := naiveCRLF(msg)
		size := max(int64(len(full))+int64(delta), 0)
		r := newCRLFReader(fh, size)
		var got []byte
		buf := make([]byte, 1+int(chunk)%17)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				if size <= int64(len(full)) || !errors.Is(err, io.ErrUnexpectedEOF) {
					t.Fatalf("size %d of %d: %v", size, len(full), err)
				}
				return
			}
		}
		if size > int64(len(full)) {
			t.Fatalf("size %d of %d: no error for a short file", size, len(full))
		}
		if !bytes.Equal(got, full[:size]) {
			t.Fatalf("got %q, want %q", got, full[:size])
		}
	})
}
