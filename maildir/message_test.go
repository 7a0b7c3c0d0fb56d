package maildir

import (
	"bytes"
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
		for _, oneByte := range []bool{false, true} {
			p := filepath.Join(dir, "m")
			if err := os.WriteFile(p, in, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			var r io.Reader = newCRLFReader(f, int64(len(want)))
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			got, err := io.ReadAll(r)
			f.Close()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("case %d (one byte %v): err %v, got %d bytes, want %d", i, oneByte, err, len(got), len(want))
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
