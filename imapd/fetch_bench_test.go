package imapd_test

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"testing"

	"github.com/roost-mail/roost/bench"
)

// rawSession is an IMAP connection read without a client library, so that
// a benchmark of it measures the server: a client that parses every
// response costs as much CPU as the server that writes them.
type rawSession struct {
	c   net.Conn
	r   *bufio.Reader
	tag int
}

func rawLogin(b *testing.B, addr, user string) *rawSession {
	b.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	s := &rawSession{c: c, r: bufio.NewReaderSize(c, 256<<10)}
	if _, err := s.r.ReadSlice('\n'); err != nil { // greeting
		b.Fatal(err)
	}
	s.run(b, "LOGIN "+user+" "+bench.Password(user), nil)
	s.run(b, "SELECT INBOX", nil)
	return s
}

// run sends cmd and reads up to its tagged OK, writing every response
// line (literals included) to out if it is not nil. It returns the number
// of octets read.
func (s *rawSession) run(b *testing.B, cmd string, out *bytes.Buffer) int {
	b.Helper()
	s.tag++
	tag := fmt.Sprintf("T%d ", s.tag)
	if _, err := fmt.Fprintf(s.c, "%s%s\r\n", tag, cmd); err != nil {
		b.Fatal(err)
	}
	n := 0
	for {
		line, err := s.r.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			return s.fail(b, cmd, "line longer than 256 KiB")
		}
		if err != nil {
			b.Fatal(err)
		}
		n += len(line)
		if out != nil {
			out.Write(line)
		}
		if bytes.HasPrefix(line, []byte(tag)) {
			if !bytes.HasPrefix(line[len(tag):], []byte("OK")) {
				return s.fail(b, cmd, string(line))
			}
			return n
		}
		// A literal ends the line: "{123}\r\n" is followed by 123 octets.
		if k := bytes.LastIndexByte(line, '{'); k >= 0 && bytes.HasSuffix(line, []byte("}\r\n")) {
			var size int
			if _, err := fmt.Sscanf(string(line[k:]), "{%d}", &size); err == nil {
				lit := make([]byte, size)
				if _, err := io.ReadFull(s.r, lit); err != nil {
					b.Fatal(err)
				}
				n += size
				if out != nil {
					out.Write(lit)
				}
			}
		}
	}
}

func (s *rawSession) fail(b *testing.B, cmd, why string) int {
	b.Helper()
	b.Fatalf("%s: %s", cmd, why)
	return 0
}

// BenchmarkFetchWire times the whole-mailbox FETCHes of the bench
// harness's "big" workload from the server's side: the client reads the
// responses without parsing them. cpu-ms/op is the CPU time of the server
// and this thin client together. With ROOST_BENCH_DUMP set to a directory,
// the responses of each command are written there once (to compare two
// builds byte for byte) and their SHA-256 is logged.
func BenchmarkFetchWire(b *testing.B) {
	root, users := harnessData(b)
	addr, stop := benchServer(b, root, users) // builds the store's index once
	harnessLogin(b, addr, "big").Logout().Wait()
	stop()
	dump := func(b *testing.B, name string, s *rawSession, cmd string) {
		dir := os.Getenv("ROOST_BENCH_DUMP")
		if dir == "" {
			return
		}
		var out bytes.Buffer
		s.run(b, cmd, &out)
		// The tag differs from run to run; the rest must not.
		body := out.Bytes()[:bytes.LastIndex(out.Bytes()[:out.Len()-2], []byte("\r\n"))+2]
		sum := sha256.Sum256(body)
		b.Logf("%s: %d octets, sha256 %s", name, len(body), hex.EncodeToString(sum[:]))
		if err := os.WriteFile(dir+"/"+name, body, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	timed := func(b *testing.B, name, cmd string, warm bool) {
		addr, stop := benchServer(b, root, users)
		defer stop()
		s := rawLogin(b, addr, "big")
		defer s.c.Close()
		if warm {
			s.run(b, cmd, nil)
		}
		dump(b, name, s, cmd)
		var cpu cpuClock
		var octets int
		b.ResetTimer()
		cpu.begin(b)
		for i := 0; i < b.N; i++ {
			octets = s.run(b, cmd, nil)
		}
		cpu.end(b)
		cpu.report(b)
		b.SetBytes(int64(octets))
	}
	b.Run("UIDFetchFlags", func(b *testing.B) {
		timed(b, "UIDFetchFlags", "UID FETCH 1:* (FLAGS)", false)
	})
	b.Run("FetchEnvelopeFirst", func(b *testing.B) {
		onFreshServers(b, root, users, func(addr string) (run, end func()) {
			s := rawLogin(b, addr, "big")
			return func() { s.run(b, "FETCH 1:* (ENVELOPE)", nil) }, func() { s.c.Close() }
		})
	})
	b.Run("FetchEnvelopeSecond", func(b *testing.B) {
		timed(b, "FetchEnvelope", "FETCH 1:* (ENVELOPE)", true)
	})
}
