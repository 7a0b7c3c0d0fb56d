package maildir

import (
	"bufio"
	"fmt"
	"io"
	"os"
)

// crlfReader streams a message file with every bare LF turned into CRLF,
// producing exactly size bytes: a file that ends early is an error, and
// anything beyond size is cut, so callers can trust Message.Size.
type crlfReader struct {
	f      *os.File
	br     *bufio.Reader
	left   int64 // bytes still to produce
	prevCR bool
	pendLF bool // an LF is owed after an inserted CR
	path   string
}

func newCRLFReader(f *os.File, size int64) *crlfReader {
	return &crlfReader{f: f, br: bufio.NewReaderSize(f, 32*1024), left: size, path: f.Name()}
}

func (r *crlfReader) Read(p []byte) (int, error) {
	if r.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := 0
	for n < len(p) {
		if r.pendLF {
			p[n] = '\n'
			n++
			r.pendLF = false
			r.prevCR = false
			continue
		}
		c, err := r.br.ReadByte()
		if err == io.EOF {
			if n > 0 {
				break
			}
			return 0, fmt.Errorf("message file %s is %d bytes shorter than its recorded size: %w", r.path, r.left, io.ErrUnexpectedEOF)
		}
		if err != nil {
			if n > 0 {
				break
			}
			return 0, err
		}
		if c == '\n' && !r.prevCR {
			p[n] = '\r'
			n++
			r.pendLF = true
			continue
		}
		p[n] = c
		n++
		r.prevCR = c == '\r'
	}
	r.left -= int64(n)
	return n, nil
}

func (r *crlfReader) Close() error { return r.f.Close() }
