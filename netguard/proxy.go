package netguard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalidHeader is wrapped by every ReadHeader error caused by the bytes
// received (as opposed to a read error such as a timeout).
var ErrInvalidHeader = errors.New("invalid PROXY protocol header")

// v2Signature starts every PROXY protocol version 2 header (spec 2.2).
var v2Signature = []byte("\r\n\r\n\x00\r\nQUIT\n")

const (
	v1Prefix = "PROXY "
	v1MaxLen = 107 // spec 2.1: worst case "PROXY UNKNOWN" with IPv6, CRLF included
)

// Header is a parsed PROXY protocol header.
type Header struct {
	// Version is 1 (text) or 2 (binary).
	Version int
	// Local is true for a v2 LOCAL command, a v1 "UNKNOWN" protocol or an
	// address family without IP addresses: the proxy speaks for itself
	// (health checks), so the connection's own addresses stand.
	Local bool
	// Source is the client's address, Destination the address it
	// connected to; both unmapped and valid unless Local.
	Source, Destination netip.AddrPort
}

// ReadHeader reads one PROXY header (v1 or v2) from r, consuming exactly its
// bytes, so that whatever the client sent next is still unread in r.
func ReadHeader(r io.Reader) (Header, error) {
	var first [1]byte
	if _, err := io.ReadFull(r, first[:]); err != nil {
		return Header{}, fmt.Errorf("read PROXY header: %w", err)
	}
	switch first[0] {
	case v1Prefix[0]:
		return readV1(r)
	case v2Signature[0]:
		return readV2(r)
	}
	return Header{}, fmt.Errorf("%w: starts with %q, neither version 1 nor 2", ErrInvalidHeader, first[0])
}

// readV1 reads the rest of a text header after its first byte (spec 2.1).
func readV1(r io.Reader) (Header, error) {
	line := make([]byte, 1, v1MaxLen)
	line[0] = v1Prefix[0]
	var b [1]byte
	for {
		if len(line) == v1MaxLen {
			return Header{}, fmt.Errorf("%w: version 1 line longer than %d bytes", ErrInvalidHeader, v1MaxLen)
		}
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return Header{}, fmt.Errorf("read PROXY header: %w", err)
		}
		line = append(line, b[0])
		if b[0] == '\n' {
			break
		}
		// Fail early on a client speaking another protocol.
		if n := len(line); n <= len(v1Prefix) && line[n-1] != v1Prefix[n-1] {
			return Header{}, fmt.Errorf("%w: does not start with %q", ErrInvalidHeader, v1Prefix)
		}
	}
	return parseV1(line)
}

func parseV1(line []byte) (Header, error) {
	s, ok := strings.CutSuffix(string(line), "\r\n")
	if !ok {
		return Header{}, fmt.Errorf("%w: version 1 line does not end with CRLF", ErrInvalidHeader)
	}
	s, ok = strings.CutPrefix(s, v1Prefix)
	if !ok {
		return Header{}, fmt.Errorf("%w: does not start with %q", ErrInvalidHeader, v1Prefix)
	}
	f := strings.Split(s, " ")
	if f[0] == "UNKNOWN" {
		// The rest of the line is to be ignored (spec 2.1).
		return Header{Version: 1, Local: true}, nil
	}
	if len(f) != 5 {
		return Header{}, fmt.Errorf("%w: version 1 needs protocol, 2 addresses and 2 ports, got %q", ErrInvalidHeader, s)
	}
	var want6 bool
	switch f[0] {
	case "TCP4":
	case "TCP6":
		want6 = true
	default:
		return Header{}, fmt.Errorf("%w: unknown protocol %q", ErrInvalidHeader, f[0])
	}
	h := Header{Version: 1}
	var err error
	if h.Source, err = v1AddrPort(f[1], f[3], want6); err != nil {
		return Header{}, err
	}
	if h.Destination, err = v1AddrPort(f[2], f[4], want6); err != nil {
		return Header{}, err
	}
	return h, nil
}

func v1AddrPort(addr, port string, want6 bool) (netip.AddrPort, error) {
	a, err := netip.ParseAddr(addr)
	if err != nil || a.Zone() != "" || a.Is6() != want6 {
		return netip.AddrPort{}, fmt.Errorf("%w: bad address %q", ErrInvalidHeader, addr)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil || port[0] == '+' || (len(port) > 1 && port[0] == '0') {
		return netip.AddrPort{}, fmt.Errorf("%w: bad port %q", ErrInvalidHeader, port)
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(p)), nil
}

// readV2 reads the rest of a binary header after its first byte (spec 2.2).
func readV2(r io.Reader) (Header, error) {
	var fixed [16]byte
	fixed[0] = v2Signature[0]
	if _, err := io.ReadFull(r, fixed[1:]); err != nil {
		return Header{}, fmt.Errorf("read PROXY header: %w", err)
	}
	if !bytes.Equal(fixed[:12], v2Signature) {
		return Header{}, fmt.Errorf("%w: bad version 2 signature", ErrInvalidHeader)
	}
	verCmd, fam := fixed[12], fixed[13]
	n := binary.BigEndian.Uint16(fixed[14:])
	if verCmd>>4 != 2 {
		return Header{}, fmt.Errorf("%w: version %d in a version 2 header", ErrInvalidHeader, verCmd>>4)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return Header{}, fmt.Errorf("read PROXY header: %w", err)
	}
	return parseV2(verCmd&0x0f, fam, body)
}

func parseV2(cmd, fam byte, body []byte) (Header, error) {
	h := Header{Version: 2, Local: true}
	switch cmd {
	case 0x0: // LOCAL: the proxy's own connection; the address block is ignored
		return h, nil
	case 0x1: // PROXY
	default:
		return Header{}, fmt.Errorf("%w: unknown command %#x", ErrInvalidHeader, cmd)
	}
	var size int
	switch fam {
	case 0x00, 0x30, 0x31, 0x32: // UNSPEC, UNIX: no IP address to use
		return h, nil
	case 0x11: // TCP over IPv4
		size = 12
	case 0x21: // TCP over IPv6
		size = 36
	case 0x12, 0x22:
		return Header{}, fmt.Errorf("%w: UDP is not a mail transport", ErrInvalidHeader)
	default:
		return Header{}, fmt.Errorf("%w: unknown address family %#x", ErrInvalidHeader, fam)
	}
	if len(body) < size {
		return Header{}, fmt.Errorf("%w: address block of %d bytes is too short", ErrInvalidHeader, len(body))
	}
	// The rest of body holds TLVs, which Roost does not use.
	al := (size - 4) / 2
	src, _ := netip.AddrFromSlice(body[:al])
	dst, _ := netip.AddrFromSlice(body[al : 2*al])
	ports := body[2*al:]
	h.Local = false
	h.Source = netip.AddrPortFrom(src.Unmap(), binary.BigEndian.Uint16(ports))
	h.Destination = netip.AddrPortFrom(dst.Unmap(), binary.BigEndian.Uint16(ports[2:]))
	return h, nil
}

// looksLikeHeader reports whether b starts like a PROXY header (used to spot
// one from a peer that is not trusted to send it).
func looksLikeHeader(b []byte) bool {
	for _, p := range []string{"PROXY TCP4 ", "PROXY TCP6 ", "PROXY UNKNOWN"} {
		if bytes.HasPrefix(b, []byte(p)) {
			return true
		}
	}
	return len(b) >= 6 && bytes.HasPrefix(v2Signature, b[:6])
}
