package pop3d

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
)

// Multi-line responses (RFC 1939 section 3): every line ends in CRLF, a
// line that starts with "." gets another "." in front, and ".\r\n" ends
// the response. Messages stream through two fixed buffers; none is ever
// held whole. textproto.DotWriter does the same a byte at a time; here
// each line moves with one IndexByte and one copy, which keeps a 50 MB
// RETR near the speed of copying the file to the socket.

// wireBuffer gathers a long response for few, large socket writes, like a
// bufio.Writer whose buffer the message copier fills directly (appending
// to a bufio.Writer's AvailableBuffer would copy every octet once more).
// It has two buffers: a full one goes to the socket from another
// goroutine while the copier fills the other, so converting a large
// message overlaps with the kernel copying it out. Write errors are
// sticky and returned as *writeError (one buffer late at most).
type wireBuffer struct {
	w       io.Writer
	buf     []byte // buffered octets; cap(buf) is the buffer's size
	spare   []byte // the other buffer, in flight while pending
	pending bool
	done    chan error
	err     error
}

// newWireBuffer returns a buffer of twice size octets, at least 16 each.
func newWireBuffer(size int) *wireBuffer {
	size = max(size, 16)
	return &wireBuffer{buf: make([]byte, 0, size), spare: make([]byte, 0, size), done: make(chan error, 1)}
}

// reset makes b write to w, dropping anything buffered and any error.
func (b *wireBuffer) reset(w io.Writer) {
	b.wait()
	b.w, b.buf, b.err = w, b.buf[:0], nil
}

// handOff starts writing the buffered octets and goes on with the other
// buffer (a full buffer mid-response).
func (b *wireBuffer) handOff() {
	b.wait()
	if b.err == nil && len(b.buf) > 0 {
		out, w := b.buf, b.w
		b.pending = true
		go func() {
			_, err := w.Write(out)
			b.done <- err
		}()
		b.buf, b.spare = b.spare[:0], out
		return
	}
	b.buf = b.buf[:0]
}

// Flush writes everything buffered and waits until it is written.
func (b *wireBuffer) Flush() error {
	b.handOff()
	b.wait()
	return b.err
}

// wait waits for the write in flight, if any.
func (b *wireBuffer) wait() {
	if !b.pending {
		return
	}
	b.pending = false
	if err := <-b.done; err != nil && b.err == nil {
		b.err = &writeError{err}
	}
}

func (b *wireBuffer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && b.err == nil {
		c := copy(b.buf[len(b.buf):cap(b.buf)], p)
		b.buf, p = b.buf[:len(b.buf)+c], p[c:]
		if len(b.buf) == cap(b.buf) {
			b.handOff()
		}
	}
	if b.err != nil {
		return 0, b.err
	}
	return n, nil
}

func (b *wireBuffer) WriteString(s string) (int, error) {
	n := len(s)
	for len(s) > 0 && b.err == nil {
		c := copy(b.buf[len(b.buf):cap(b.buf)], s)
		b.buf, s = b.buf[:len(b.buf)+c], s[c:]
		if len(b.buf) == cap(b.buf) {
			b.handOff()
		}
	}
	if b.err != nil {
		return 0, b.err
	}
	return n, nil
}

func (b *wireBuffer) WriteByte(c byte) error {
	if len(b.buf) == cap(b.buf) {
		b.handOff()
	}
	if b.err != nil {
		return b.err
	}
	b.buf = append(b.buf, c)
	return nil
}

// messageCopier turns a message into the body of a multi-line response:
// exactly size octets of its CRLF form (every bare LF becomes CRLF; CR
// and CRLF stay), dot-stuffed. Its state carries across input chunks, so
// a CR at the end of one chunk and LF at the start of the next are one
// line end, and a "." that starts a chunk after a line end is stuffed.
type messageCopier struct {
	w      *wireBuffer
	left   int64 // octets of the CRLF form still to send
	bol    bool  // the last octet sent ended a line (or none was sent)
	prevCR bool  // the last input octet was CR
}

// copyMessage copies the message r, size octets in CRLF form, to w
// dot-stuffed, reading through in, and terminates the response (adding a
// line end first if the message lacks a final one). r may be the file as
// stored, with LF or CRLF line ends, or its CRLF form already (as
// backend.Mailbox.OpenMessage returns it): converting costs no more than
// searching CRLF text for lines that start with ".". An r with more than
// size octets is cut there, one with fewer is an error: the recorded size
// is what LIST promised, and a short file must not pass for a whole
// message. It returns the number of message octets sent. Errors writing
// to w are *writeError.
func copyMessage(w *wireBuffer, r io.Reader, in []byte, size int64) (int64, error) {
	c := messageCopier{w: w, left: size, bol: true}
	for c.left > 0 {
		n, rerr := r.Read(in)
		c.convert(in[:n])
		if w.err != nil {
			return size - c.left, w.err
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return size - c.left, rerr
		}
	}
	if c.left > 0 {
		return size - c.left, fmt.Errorf("message ends %d octets short of its recorded size %d: %w", c.left, size, io.ErrUnexpectedEOF)
	}
	return size, terminate(w, c.bol)
}

// convert sends a chunk of input. Its wire form is at most twice as
// long (a bare LF or a leading "." each add one octet), so convertRun
// works on as much as fits in the wire buffer and in what is left of the
// size, without checking either per line.
func (c *messageCopier) convert(p []byte) {
	b := c.w
	for len(p) > 0 && c.left > 0 && b.err == nil {
		free := int64(cap(b.buf) - len(b.buf))
		n := min(int64(len(p)), free/2, c.left/2)
		if n == 0 {
			if free < 2 {
				b.handOff()
				continue
			}
			c.lastOctet(p[0])
			return
		}
		before := len(b.buf)
		var dots int
		b.buf, dots = convertRun(b.buf, p[:n], c.bol, c.prevCR)
		c.left -= int64(len(b.buf) - before - dots)
		c.bol, c.prevCR = p[n-1] == '\n', p[n-1] == '\r'
		p = p[n:]
	}
}

// convertRun appends the wire form of in to out, which has room for
// 2*len(in) octets; bol and prevCR describe the input before in. It
// returns out and the number of dots it stuffed. Each line costs one
// IndexByte and one copy: the loop is what RETR's speed depends on.
func convertRun(out, in []byte, bol, prevCR bool) ([]byte, int) {
	dots := 0
	if bol && in[0] == '.' {
		out = append(out, '.')
		dots++
	}
	start := 0
	for {
		i := bytes.IndexByte(in[start:], '\n')
		if i < 0 {
			break
		}
		lf := start + i
		out = append(out, in[start:lf]...)
		if lf > 0 && in[lf-1] != '\r' || lf == 0 && !prevCR {
			out = append(out, '\r')
		}
		out = append(out, '\n')
		start = lf + 1
		if start < len(in) && in[start] == '.' {
			out = append(out, '.')
			dots++
		}
	}
	return append(out, in[start:]...), dots
}

// lastOctet sends the one octet of the CRLF form still owed when the
// recorded size ends inside the file: o's, or the CR a bare LF gets.
func (c *messageCopier) lastOctet(o byte) {
	if c.bol && o == '.' {
		c.w.WriteByte('.')
	}
	if o == '\n' && !c.prevCR {
		o = '\r'
	}
	c.w.WriteByte(o)
	c.left, c.bol = 0, o == '\n'
}

// terminate ends a dot-stuffed response; bol says whether the data ended
// with a line end.
func terminate(w *wireBuffer, bol bool) error {
	end := ".\r\n"
	if !bol {
		end = "\r\n.\r\n"
	}
	_, err := w.WriteString(end)
	return err
}

// copyTop copies the header, the blank line after it and the first lines
// lines of the body of message r (in CRLF form) to w, dot-stuffed and
// terminated (RFC 1939 TOP). It returns the number of message octets sent.
func copyTop(w *wireBuffer, r io.Reader, lines int64) (int64, error) {
	br := bufio.NewReaderSize(r, 8<<10)
	var total int64
	bol, header := true, true
	for {
		chunk, rerr := br.ReadSlice('\n')
		if len(chunk) > 0 {
			if bol {
				if header && (bytes.Equal(chunk, []byte("\r\n")) || bytes.Equal(chunk, []byte("\n"))) {
					header = false
				} else if !header {
					if lines == 0 {
						break
					}
					lines--
				}
				if chunk[0] == '.' {
					w.WriteByte('.')
				}
			}
			if _, err := w.Write(chunk); err != nil {
				return total, err
			}
			total += int64(len(chunk))
			bol = chunk[len(chunk)-1] == '\n'
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil && !errors.Is(rerr, bufio.ErrBufferFull) {
			return total, rerr
		}
	}
	return total, terminate(w, bol)
}
