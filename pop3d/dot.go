package pop3d

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// Dot-stuffing (RFC 1939 section 3): a line that starts with "." gets
// another "." in front, and the response ends with ".\r\n". These copiers
// stream; they never hold a whole message. textproto.DotWriter does the
// same byte by byte; searching for "\n." lets large messages move in big
// chunks instead.

var lfDot = []byte("\n.")

// copyDotStuffed copies the message r to w dot-stuffed, reading through
// buf, adds a line end if the message lacks a final one, and writes the
// terminating ".\r\n". It returns the number of message octets read.
// Errors writing to w are *writeError.
func copyDotStuffed(w *bufio.Writer, r io.Reader, buf []byte) (int64, error) {
	var total int64
	bol := true // at the beginning of a line
	for {
		n, rerr := r.Read(buf)
		total += int64(n)
		p := buf[:n]
		for len(p) > 0 {
			if bol && p[0] == '.' {
				w.WriteByte('.')
			}
			j := bytes.Index(p, lfDot)
			if j < 0 {
				if _, err := w.Write(p); err != nil {
					return total, &writeError{err}
				}
				bol = p[len(p)-1] == '\n'
				break
			}
			// Write through the "\n"; the "." starts the next round.
			if _, err := w.Write(p[:j+1]); err != nil {
				return total, &writeError{err}
			}
			p, bol = p[j+1:], true
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return total, rerr
		}
	}
	return total, terminate(w, bol)
}

// terminate ends a dot-stuffed response; bol says whether the data ended
// with a line end.
func terminate(w *bufio.Writer, bol bool) error {
	end := ".\r\n"
	if !bol {
		end = "\r\n.\r\n"
	}
	if _, err := w.WriteString(end); err != nil {
		return &writeError{err}
	}
	return nil
}

// copyTop copies the header, the blank line after it and the first lines
// lines of the body of message r to w, dot-stuffed and terminated (RFC
// 1939 TOP). It returns the number of message octets sent.
func copyTop(w *bufio.Writer, r io.Reader, lines int64) (int64, error) {
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
				return total, &writeError{err}
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
