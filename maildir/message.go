package maildir

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"os"
)

// crlfReader streams a message file with every bare LF turned into CRLF,
// producing exactly size bytes: a file that ends early is an error, and
// anything beyond size is cut, so callers can trust MessageSize.
//
// A message not measured yet streams to the file's end instead: a
// delivered file never changes, so that is exactly MessageSize octets,
// and a reader that wants only the header (ENVELOPE) does not read the
// whole file for its size first. Reaching the end reports the size.
type crlfReader struct {
	f       *os.File
	buf     []byte
	r, w    int   // buf[r:w] is read but not yet converted
	left    int64 // bytes still to produce
	prevCR  bool  // the last byte produced was CR
	pendLF  bool  // an LF is owed after an inserted CR
	toEOF   bool  // size unknown: stream to the end of the file
	counted int64 // bytes produced, when toEOF
	phys    int64 // the file's size, when toEOF
	filled  bool  // buf was filled at least once
	sized   func(int64)
}

func newCRLFReader(f *os.File, size int64) *crlfReader {
	// The file is at most size bytes: a small message gets a small buffer
	// (a FETCH of 100,000 headers opens 100,000 of these).
	return &crlfReader{f: f, buf: make([]byte, min(32*1024, max(size, 0)+1)), left: size}
}

// newCRLFReaderToEOF streams a file of unknown CRLF size, physically
// phys bytes, to its end, and then calls sized with the bytes produced.
func newCRLFReaderToEOF(f *os.File, phys int64, sized func(int64)) *crlfReader {
	return &crlfReader{f: f, buf: make([]byte, min(32*1024, max(phys, 0)+1)), left: math.MaxInt64, toEOF: true, phys: phys, sized: sized}
}

func (c *crlfReader) Read(p []byte) (int, error) {
	n, err := c.read(p)
	if c.toEOF {
		c.counted += int64(n)
		if err == io.EOF && c.sized != nil {
			c.sized(c.counted)
			c.sized = nil
		}
	}
	return n, err
}

func (c *crlfReader) read(p []byte) (int, error) {
	if c.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n := 0
	if c.pendLF && len(p) > 0 {
		p[0] = '\n'
		n, c.pendLF, c.prevCR = 1, false, false
	}
	for n < len(p) {
		if c.r == c.w {
			if n > 0 {
				break
			}
			k, err := c.f.Read(c.buf)
			if k == 0 {
				if err == io.EOF && c.toEOF {
					c.left = 0
					return 0, io.EOF
				}
				if err == nil || err == io.EOF {
					return 0, fmt.Errorf("message file %s is %d bytes shorter than its recorded size: %w", c.f.Name(), c.left, io.ErrUnexpectedEOF)
				}
				return 0, err
			}
			c.r, c.w = 0, k
			if c.toEOF && c.sized != nil && !c.filled && int64(k) == c.phys {
				// The whole file came in the first read (most messages
				// do): its size costs a count, even to a reader that
				// wants only the header.
				c.sized(crlfLen(c.buf[:k]))
				c.sized = nil
			}
			c.filled = true
		}
		n += c.convert(p[n:])
	}
	c.left -= int64(n)
	return n, nil
}

// convert moves as much of the buffered input into out as fits, runs
// between line ends copied whole, and returns the bytes produced.
func (c *crlfReader) convert(out []byte) int {
	src := c.buf[c.r:c.w]
	n := 0
	for len(src) > 0 && n < len(out) {
		run := src
		if i := bytes.IndexByte(src, '\n'); i >= 0 {
			run = src[:i]
		}
		if len(run) > 0 {
			k := copy(out[n:], run)
			n += k
			c.prevCR = run[k-1] == '\r'
			src = src[k:]
			continue
		}
		// src starts with LF.
		src = src[1:]
		if c.prevCR {
			out[n] = '\n'
			n++
			c.prevCR = false
			continue
		}
		out[n] = '\r'
		n++
		c.prevCR = false
		if n < len(out) {
			out[n] = '\n'
			n++
		} else {
			c.pendLF = true
		}
	}
	c.r = c.w - len(src)
	return n
}

func (c *crlfReader) Close() error { return c.f.Close() }
