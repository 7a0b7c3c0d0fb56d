package testenv

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The directory every private slapd serves, and its root account, which
// StartSlapd uses to load the test's entries.
const (
	SlapdSuffix       = "dc=example,dc=edu"
	SlapdRootDN       = "cn=admin," + SlapdSuffix
	SlapdRootPassword = "secret"
)

// slapdReadyTimeout bounds how long StartSlapd and Start wait for slapd to
// answer LDAP; a slow shared CI machine needs a few seconds.
const slapdReadyTimeout = 15 * time.Second

// SlapdOptions describes one private OpenLDAP server. The zero value is a
// server holding only the suffix entry, with slapd's default access rules
// and plain LDAP only.
type SlapdOptions struct {
	// Schema lines (attributetype, objectclass) go after the core, cosine,
	// inetorgperson and nis schemas.
	Schema []string
	// ACL lines ("access to ...") go in the database section, in order.
	ACL []string
	// TLSCertFile and TLSKeyFile, when both set, make the server offer
	// StartTLS on URL and listen for ldaps:// on LDAPSURL too.
	TLSCertFile, TLSKeyFile string
	// LDIF is added with the root DN after the suffix entry
	// (dn: dc=example,dc=edu), which StartSlapd always creates.
	LDIF string
}

// Slapd is a private slapd running in the foreground (-d 0), so the test
// owns the process. Its data lives in Dir/db and survives Stop and Start.
type Slapd struct {
	Dir      string // slapd.conf, db/, slapd.log and users.ldif
	Addr     string // 127.0.0.1:port of URL
	URL      string // ldap://127.0.0.1:port
	LDAPSURL string // ldaps://127.0.0.1:port, or "" without TLS options

	t    testing.TB
	path string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the running cmd has exited
}

// StartSlapd starts slapd with opts on free loopback ports, loads the
// suffix entry and opts.LDIF, and stops the server when the test ends.
// Without slapd or ldapadd the test is skipped, or fails with CI=true.
func StartSlapd(t testing.TB, opts SlapdOptions) *Slapd {
	t.Helper()
	path := Require(t, "slapd", "slapd")
	ldapadd := Require(t, "ldapadd", "ldap-utils")
	s := &Slapd{Dir: t.TempDir(), t: t, path: path}
	s.Addr = "127.0.0.1:" + strconv.Itoa(FreePort(t))
	s.URL = "ldap://" + s.Addr
	tls := opts.TLSCertFile != "" && opts.TLSKeyFile != ""
	if !tls && opts.TLSCertFile+opts.TLSKeyFile != "" {
		t.Fatal("testenv: SlapdOptions needs both TLSCertFile and TLSKeyFile, or neither")
	}
	if tls {
		s.LDAPSURL = "ldaps://127.0.0.1:" + strconv.Itoa(FreePort(t))
	}
	if err := os.Mkdir(filepath.Join(s.Dir, "db"), 0o700); err != nil {
		t.Fatal(err)
	}
	var conf strings.Builder
	for _, schema := range []string{"core", "cosine", "inetorgperson", "nis"} {
		fmt.Fprintf(&conf, "include /etc/ldap/schema/%s.schema\n", schema)
	}
	for _, l := range opts.Schema {
		conf.WriteString(l + "\n")
	}
	fmt.Fprintf(&conf, "pidfile %s/slapd.pid\n", s.Dir)
	if tls {
		fmt.Fprintf(&conf, "TLSCertificateFile %s\nTLSCertificateKeyFile %s\n", opts.TLSCertFile, opts.TLSKeyFile)
	}
	fmt.Fprintf(&conf, "modulepath /usr/lib/ldap\nmoduleload back_mdb\ndatabase mdb\n"+
		"suffix %q\nrootdn %q\nrootpw %s\ndirectory %s/db\n", SlapdSuffix, SlapdRootDN, SlapdRootPassword, s.Dir)
	for _, l := range opts.ACL {
		conf.WriteString(l + "\n")
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "slapd.conf"), []byte(conf.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Stop)
	s.Start()

	ldif := filepath.Join(s.Dir, "users.ldif")
	const base = "dn: " + SlapdSuffix + "\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n"
	if err := os.WriteFile(ldif, []byte(base+opts.LDIF), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(ldapadd, "-x", "-H", s.URL, "-D", SlapdRootDN, "-w", SlapdRootPassword, "-f", ldif).CombinedOutput()
	if err != nil {
		t.Fatalf("ldapadd: %v\n%s\nslapd log:\n%s", err, out, s.logTail())
	}
	return s
}

// Start runs slapd again on the same ports and data after Stop, as an
// admin's restart would, and returns once it answers LDAP.
func (s *Slapd) Start() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("testenv: Slapd.Start while slapd is running")
	}
	log, err := os.OpenFile(filepath.Join(s.Dir, "slapd.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		s.t.Fatal(err)
	}
	listen := s.URL + "/"
	if s.LDAPSURL != "" {
		listen += " " + s.LDAPSURL + "/"
	}
	cmd := exec.Command(s.path, "-d", "0", "-f", filepath.Join(s.Dir, "slapd.conf"), "-h", listen)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		s.t.Fatal(err)
	}
	s.cmd, s.log, s.done = cmd, log, make(chan struct{})
	go func(done chan struct{}) {
		cmd.Wait()
		close(done)
	}(s.done)
	// Another process may have taken the free port in the meantime: slapd
	// then exits, and only an LDAP answer proves that slapd is serving.
	for deadline := time.Now().Add(slapdReadyTimeout); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-s.done:
			s.Stop()
			s.t.Fatalf("slapd exited while starting (%v):\n%s", cmd.ProcessState, s.logTail())
		default:
		}
		if answersLDAP(s.Addr) {
			return
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.t.Fatalf("slapd did not listen on %s within %v:\n%s", s.Addr, slapdReadyTimeout, s.logTail())
		}
	}
}

// Stop kills slapd and waits for it, as a crash would; connections drop at
// once. Stopping a stopped server does nothing.
func (s *Slapd) Stop() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Kill()
	<-s.done
	s.log.Close()
	s.cmd, s.log = nil, nil
}

// Restart stops slapd and starts it again on the same ports and data.
func (s *Slapd) Restart() {
	s.t.Helper()
	s.Stop()
	s.Start()
}

// answersLDAP reports whether addr answers an anonymous LDAPv3 bind with a
// BindResponse (RFC 4511 section 4.2.2), whatever its result code.
func answersLDAP(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	// SEQUENCE { messageID 1, [APPLICATION 0] { version 3, name "", simple "" } }
	bind := []byte{0x30, 0x0c, 0x02, 0x01, 0x01, 0x60, 0x07, 0x02, 0x01, 0x03, 0x04, 0x00, 0x80, 0x00}
	if _, err := c.Write(bind); err != nil {
		return false
	}
	r := bufio.NewReader(c)
	// BER lengths may be long form: 0x8n and n length bytes (OpenLDAP
	// sends 0x84).
	length := func() (int, bool) {
		b, err := r.ReadByte()
		if err != nil || b == 0x80 || b > 0x84 {
			return 0, false
		}
		if b < 0x80 {
			return int(b), true
		}
		n := 0
		for range b & 0x7f {
			d, err := r.ReadByte()
			if err != nil {
				return 0, false
			}
			n = n<<8 | int(d)
		}
		return n, true
	}
	if tag, err := r.ReadByte(); err != nil || tag != 0x30 { // LDAPMessage
		return false
	}
	if _, ok := length(); !ok {
		return false
	}
	if tag, err := r.ReadByte(); err != nil || tag != 0x02 { // messageID
		return false
	}
	n, ok := length()
	if !ok {
		return false
	}
	if _, err := r.Discard(n); err != nil {
		return false
	}
	tag, err := r.ReadByte()
	return err == nil && tag == 0x61 // BindResponse
}

// logTail is the end of slapd's output, for failure messages.
func (s *Slapd) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.Dir, "slapd.log"))
	const keep = 16 << 10
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}

// FreePort returns a loopback TCP port that nothing listened on a moment
// ago, for a server that must be told its port before it starts.
func FreePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
