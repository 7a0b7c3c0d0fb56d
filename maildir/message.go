package maildir

import (
	"bufio"
	"bytes"
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
			r.pendLF, r.prevCR = false, false
			continue
		}
		// Copy whole runs up to the next LF from the buffer: converting a
		// byte at a time made large RETRs CPU-bound.
		buf, err := r.br.Peek(min(r.br.Buffered(), len(p)-n))
		if len(buf) == 0 {
			if _, err = r.br.Peek(1); err != nil {
				if n > 0 {
					break
				}
				if err == io.EOF {
					return 0, fmt.Errorf("message file %s is %d bytes shorter than its recorded size: %w", r.path, r.left, io.ErrUnexpectedEOF)
				}
				return 0, err
			}
			continue
		}
		run := buf
		if i := bytes.IndexByte(buf, '\n'); i >= 0 {
			run = buf[:i]
		}
		if len(run) > 0 {
			copy(p[n:], run)
			n += len(run)
			r.prevCR = run[len(run)-1] == '\r'
			r.br.Discard(len(run))
			continue
		}
		// buf starts with LF.
		r.br.Discard(1)
		if r.prevCR {
			p[n] = '\n'
			n++
			r.prevCR = false
			continue
		}
		p[n] = '\r'
		n++
		r.pendLF = true
	}
	r.left -= int64(n)
	return n, nil
}

func (r *crlfReader) Close() error { return r.f.Close() }
