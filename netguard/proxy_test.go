package netguard

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// v1 encodes a version 1 header as a proxy would send it. A proxy on IPv6
// sends IPv4 clients as mapped addresses.
func v1(src, dst netip.AddrPort) []byte {
	proto, sa, da := "TCP4", src.Addr(), dst.Addr()
	if sa.Is6() || da.Is6() {
		proto, sa, da = "TCP6", as6(sa), as6(da)
	}
	return fmt.Appendf(nil, "PROXY %s %s %s %d %d\r\n", proto, sa, da, src.Port(), dst.Port())
}

func as6(a netip.Addr) netip.Addr { return netip.AddrFrom16(a.As16()) }

// v2 encodes a version 2 PROXY command with optional trailing TLV bytes.
func v2(src, dst netip.AddrPort, tlv []byte) []byte {
	b := append([]byte(nil), v2Signature...)
	fam, sa, da := byte(0x11), src.Addr(), dst.Addr()
	if sa.Is6() || da.Is6() {
		fam, sa, da = 0x21, as6(sa), as6(da)
	}
	addrs := append(sa.AsSlice(), da.AsSlice()...)
	addrs = binary.BigEndian.AppendUint16(addrs, src.Port())
	addrs = binary.BigEndian.AppendUint16(addrs, dst.Port())
	addrs = append(addrs, tlv...)
	b = append(b, 0x21, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)))
	return append(b, addrs...)
}

// v2Local encodes a version 2 LOCAL command (health check).
func v2Local() []byte {
	return append(append([]byte(nil), v2Signature...), 0x20, 0x00, 0, 0)
}

var (
	src4 = netip.MustParseAddrPort("192.0.2.10:51234")
	dst4 = netip.MustParseAddrPort("198.51.100.1:993")
	src6 = netip.MustParseAddrPort("[2001:db8::10]:51234")
	dst6 = netip.MustParseAddrPort("[2001:db8::1]:143")
)

func TestReadHeader(t *testing.T) {
	tlv := []byte{0x04, 0x00, 0x02, 'x', 'y'} // PP2_TYPE_NOOP
	for _, tc := range []struct {
		name string
		in   []byte
		want Header
	}{
		{"v1 tcp4", v1(src4, dst4), Header{Version: 1, Source: src4, Destination: dst4}},
		{"v1 tcp6", v1(src6, dst6), Header{Version: 1, Source: src6, Destination: dst6}},
		{"v1 unknown", []byte("PROXY UNKNOWN\r\n"), Header{Version: 1, Local: true}},
		{"v1 unknown with addresses", []byte("PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n"), Header{Version: 1, Local: true}},
		{"v1 ports 0 and 65535", []byte("PROXY TCP4 192.0.2.10 198.51.100.1 0 65535\r\n"),
			Header{Version: 1, Source: netip.MustParseAddrPort("192.0.2.10:0"), Destination: netip.MustParseAddrPort("198.51.100.1:65535")}},
		{"v1 mapped client, ipv6 proxy", []byte("PROXY TCP6 ::ffff:192.0.2.10 2001:db8::1 51234 143\r\n"),
			Header{Version: 1, Source: src4, Destination: dst6}},
		{"v2 tcp4", v2(src4, dst4, nil), Header{Version: 2, Source: src4, Destination: dst4}},
		{"v2 tcp6", v2(src6, dst6, nil), Header{Version: 2, Source: src6, Destination: dst6}},
		{"v2 tcp4 with TLVs", v2(src4, dst4, tlv), Header{Version: 2, Source: src4, Destination: dst4}},
		{"v2 local", v2Local(), Header{Version: 2, Local: true}},
		{"v2 unspec", append(append([]byte(nil), v2Signature...), 0x21, 0x00, 0, 0), Header{Version: 2, Local: true}},
		{"v2 unix", append(append(append([]byte(nil), v2Signature...), 0x21, 0x31, 0, 216), make([]byte, 216)...), Header{Version: 2, Local: true}},
		{"v2 mapped tcp6", v2(netip.MustParseAddrPort("[::ffff:192.0.2.10]:51234"), netip.MustParseAddrPort("[::ffff:198.51.100.1]:993"), nil),
			Header{Version: 2, Source: src4, Destination: dst4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The client's first bytes follow the header and must stay unread.
			r := bytes.NewReader(append(append([]byte(nil), tc.in...), "a1 CAPABILITY\r\n"...))
			h, err := ReadHeader(r)
			if err != nil {
				t.Fatal(err)
			}
			if h != tc.want {
				t.Errorf("got %+v, want %+v", h, tc.want)
			}
			if rest, _ := io.ReadAll(r); string(rest) != "a1 CAPABILITY\r\n" {
				t.Errorf("left %q unread, want the client's command", rest)
			}
		})
	}
}

func TestReadHeaderInvalid(t *testing.T) {
	long := "PROXY TCP4 " + strings.Repeat("1", 100) + "\r\n"
	badVer := v2(src4, dst4, nil)
	badVer[12] = 0x11
	badCmd := v2(src4, dst4, nil)
	badCmd[12] = 0x22
	udp := v2(src4, dst4, nil)
	udp[13] = 0x12
	short := v2(src4, dst4, nil)
	short[15] = 4 // length 4 < 12 address bytes
	short = short[:16+4]
	badSig := v2(src4, dst4, nil)
	badSig[5] = 'X'
	for _, tc := range []struct {
		name string
		in   string
	}{
		{"imap client", "a1 LOGIN alice secret\r\n"},
		{"tls hello", "\x16\x03\x01\x02\x00\x01"},
		{"v1 too long", long},
		{"v1 LF only", "PROXY TCP4 192.0.2.10 198.51.100.1 1 2\n"},
		{"v1 missing field", "PROXY TCP4 192.0.2.10 198.51.100.1 1\r\n"},
		{"v1 extra field", "PROXY TCP4 192.0.2.10 198.51.100.1 1 2 3\r\n"},
		{"v1 double space", "PROXY TCP4  192.0.2.10 198.51.100.1 1 2\r\n"},
		{"v1 tcp4 with ipv6", "PROXY TCP4 2001:db8::1 2001:db8::2 1 2\r\n"},
		{"v1 tcp6 with ipv4", "PROXY TCP6 192.0.2.10 198.51.100.1 1 2\r\n"},
		{"v1 zone", "PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n"},
		{"v1 port range", "PROXY TCP4 192.0.2.10 198.51.100.1 65536 2\r\n"},
		{"v1 port leading zero", "PROXY TCP4 192.0.2.10 198.51.100.1 01 2\r\n"},
		{"v1 port sign", "PROXY TCP4 192.0.2.10 198.51.100.1 +1 2\r\n"},
		{"v1 udp", "PROXY UDP4 192.0.2.10 198.51.100.1 1 2\r\n"},
		{"v1 lowercase", "proxy TCP4 192.0.2.10 198.51.100.1 1 2\r\n"},
		{"v2 bad signature", string(badSig)},
		{"v2 bad version", string(badVer)},
		{"v2 bad command", string(badCmd)},
		{"v2 udp", string(udp)},
		{"v2 short address block", string(short)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ReadHeader(strings.NewReader(tc.in))
			if !errors.Is(err, ErrInvalidHeader) {
				t.Errorf("got %+v, %v; want ErrInvalidHeader", h, err)
			}
		})
	}
}

func TestReadHeaderTruncated(t *testing.T) {
	for _, full := range [][]byte{v1(src4, dst4), v2(src6, dst6, []byte{1, 0, 0})} {
		for n := range len(full) {
			_, err := ReadHeader(bytes.NewReader(full[:n]))
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%q: %v, want an EOF error (a read error, not a bad header)", full[:n], err)
			}
		}
	}
}

func TestLooksLikeHeader(t *testing.T) {
	for in, want := range map[string]bool{
		string(v1(src4, dst4)):     true,
		string(v1(src6, dst6)):     true,
		"PROXY UNKNOWN\r\n":        true,
		string(v2Local()):          true,
		string(v2Signature[:6]):    true,
		"a1 LOGIN PROXY x\r\n":     false,
		"PROXY LOGIN alice pw\r\n": false, // an IMAP tag may be "PROXY"
		"USER alice\r\n":           false,
		"\x16\x03\x01\x02\x00\x01": false,
		"\r\n":                     false,
		"LHLO mx.example.edu\r\n":  false,
		string(v2Signature[:5]):    false, // too short to tell
	} {
		if got := looksLikeHeader([]byte(in)); got != want {
			t.Errorf("looksLikeHeader(%q) = %v, want %v", in, got, want)
		}
	}
}

// FuzzReadHeader checks that no input panics or over-reads, and that every
// accepted header means what it says: encoding it again parses the same.
func FuzzReadHeader(f *testing.F) {
	// Seeds are also checked in under testdata/fuzz/FuzzReadHeader.
	f.Add(v1(src4, dst4))
	f.Add(v2(src6, dst6, []byte{4, 0, 1, 0}))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bytes.NewReader(in)
		h, err := ReadHeader(r)
		if err != nil {
			return
		}
		consumed := len(in) - r.Len()
		if h.Version == 1 && consumed > v1MaxLen {
			t.Fatalf("version 1 header of %d bytes accepted", consumed)
		}
		if h.Local {
			return
		}
		if !h.Source.Addr().IsValid() || h.Source.Addr().Is4In6() || h.Source.Addr().Zone() != "" {
			t.Fatalf("bad source %v", h.Source)
		}
		var again []byte
		if h.Version == 1 {
			again = v1(h.Source, h.Destination)
		} else {
			again = v2(h.Source, h.Destination, nil)
		}
		h2, err := ReadHeader(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("re-encoded %+v as %q: %v", h, again, err)
		}
		if h2 != h {
			t.Fatalf("round trip: %+v became %+v", h, h2)
		}
	})
}

// BenchmarkReadHeaderTCP measures reading a header from a real loopback
// socket: version 1 is read a byte at a time (so no client byte after it
// is consumed), version 2 in two reads.
func BenchmarkReadHeaderTCP(b *testing.B) {
	for _, tc := range []struct {
		name string
		hdr  []byte
	}{{"v1", v1(src6, dst6)}, {"v2", v2(src6, dst6, nil)}} {
		b.Run(tc.name, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer ln.Close()
			go func() {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				for {
					if _, err := c.Write(tc.hdr); err != nil {
						return
					}
				}
			}()
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			for b.Loop() {
				if _, err := ReadHeader(c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
