package testenv

import (
	"fmt"
	"net"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

const carolLDIF = `dn: cn=carol,dc=example,dc=edu
objectClass: organizationalRole
cn: carol
`

// searchCarol reads carol's entry as the root DN through the real client.
func searchCarol(t *testing.T, s *Slapd) string {
	t.Helper()
	out, err := exec.Command("ldapsearch", "-x", "-LLL", "-H", s.URL, "-D", SlapdRootDN, "-w", SlapdRootPassword,
		"-b", SlapdSuffix, "(cn=carol)", "dn").CombinedOutput()
	if err != nil {
		t.Fatalf("ldapsearch: %v\n%s", err, out)
	}
	return string(out)
}

// TestSlapdRestartKeepsData: the LDIF is loaded under the suffix entry,
// Stop closes the port, and Restart serves the same data on the same port.
func TestSlapdRestartKeepsData(t *testing.T) {
	s := StartSlapd(t, SlapdOptions{LDIF: carolLDIF})
	if s.LDAPSURL != "" {
		t.Errorf("LDAPSURL %q without TLS options", s.LDAPSURL)
	}
	if out := searchCarol(t, s); !strings.Contains(out, "dn: cn=carol,dc=example,dc=edu") {
		t.Fatalf("carol not loaded:\n%s", out)
	}
	s.Stop()
	if answersLDAP(s.Addr) {
		t.Fatal("slapd still answers after Stop")
	}
	s.Stop() // a second Stop does nothing
	s.Restart()
	if out := searchCarol(t, s); !strings.Contains(out, "dn: cn=carol,dc=example,dc=edu") {
		t.Errorf("carol lost across a restart:\n%s", out)
	}
}

// fatalRecorder stands in for a test so that a failure StartSlapd reports
// can be checked: Fatalf records and ends the goroutine as t.Fatalf does.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// TestSlapdStartOnTakenPort: when another process took the port while
// slapd was down, Start fails and says so instead of taking the other
// process, which accepts but never answers LDAP, for slapd.
func TestSlapdStartOnTakenPort(t *testing.T) {
	s := StartSlapd(t, SlapdOptions{})
	s.Stop()
	l, err := net.Listen("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	rec := &fatalRecorder{TB: t}
	s.t = rec
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.Start()
	}()
	<-done
	s.t = t
	if !strings.Contains(rec.msg, "slapd exited while starting") {
		t.Errorf("Start on a taken port: failure %q", rec.msg)
	}
	if s.cmd != nil {
		t.Error("a failed Start left slapd recorded as running")
	}
}
