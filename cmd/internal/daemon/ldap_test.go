package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/auth"
	"github.com/roost-mail/roost/internal/testenv"
)

const ldapUsers = `dn: dc=example,dc=edu
objectClass: dcObject
objectClass: organization
o: Example
dc: example

dn: cn=roost,dc=example,dc=edu
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: roost
userPassword: service-secret

dn: uid=alice,dc=example,dc=edu
objectClass: inetOrgPerson
uid: alice
cn: Alice
sn: Liddell
userPassword: alice-pw
`

// startSlapd runs a private slapd on a loopback port in the foreground
// (-d 0) and returns its URL. Only the service account may search.
func startSlapd(t *testing.T) string {
	t.Helper()
	slapd := testenv.Require(t, "slapd", "slapd")
	ldapadd := testenv.Require(t, "ldapadd", "ldap-utils")
	dir := t.TempDir()
	os.Mkdir(filepath.Join(dir, "db"), 0o700)
	conf := `include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile ` + dir + `/slapd.pid
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
suffix "dc=example,dc=edu"
rootdn "cn=admin,dc=example,dc=edu"
rootpw secret
directory ` + dir + `/db
access to attrs=userPassword by anonymous auth by * none
access to * by dn.exact="cn=roost,dc=example,dc=edu" read by anonymous auth by * none
`
	os.WriteFile(filepath.Join(dir, "slapd.conf"), []byte(conf), 0o600)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := fmt.Sprintf("ldap://127.0.0.1:%d", ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	cmd := exec.Command(slapd, "-d", "0", "-f", filepath.Join(dir, "slapd.conf"), "-h", url+"/")
	var out syncBuf
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	os.WriteFile(filepath.Join(dir, "users.ldif"), []byte(ldapUsers), 0o600)
	var addOut []byte
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		addOut, err = exec.Command(ldapadd, "-x", "-H", url, "-D", "cn=admin,dc=example,dc=edu", "-w", "secret",
			"-f", filepath.Join(dir, "users.ldif")).CombinedOutput()
		if err == nil {
			return url
		}
	}
	t.Fatalf("ldapadd: %v\n%s\nslapd: %s", err, addOut, out.String())
	return ""
}

// The service password comes from bind_password_file, one line with its
// newline: the right file lets alice in, a wrong one is "could not check".
func TestOpenLDAPBindPasswordFile(t *testing.T) {
	url := startSlapd(t)
	for _, tc := range []struct {
		secret string
		mode   os.FileMode
		want   error
	}{
		{"service-secret\n", 0o640, nil},
		{"service-secret\r\n", 0o644, nil},
		{"wrong\n", 0o600, auth.ErrUnavailable},
	} {
		secret := filepath.Join(t.TempDir(), "ldap.secret")
		os.WriteFile(secret, []byte(tc.secret), 0o600)
		os.Chmod(secret, tc.mode)
		path, root := writeConfig(t, "  backend: ldap\n  ldap:\n    urls: ["+url+"]\n"+
			"    base_dn: dc=example,dc=edu\n    bind_dn: cn=roost,dc=example,dc=edu\n"+
			"    bind_password_file: "+secret+"\n    timeout: 5s\n", "")
		var logs syncBuf
		e, err := Open(context.Background(), path, "imapd", &logs)
		if err != nil {
			t.Fatal(err)
		}
		if warned := strings.Contains(logs.String(), "readable by every user"); warned != (tc.mode&0o004 != 0) {
			t.Errorf("mode %v: warned %v", tc.mode, warned)
		}
		id, err := e.Auth.Authenticate(context.Background(), "alice", "alice-pw")
		if !errors.Is(err, tc.want) {
			t.Errorf("secret %q: Authenticate = %v, want %v", tc.secret, err, tc.want)
		}
		if err == nil && id.Maildir != filepath.Join(root, "alice", "Maildir") {
			t.Errorf("alice's Maildir %q: site defaults not applied", id.Maildir)
		}
		if err == nil {
			if _, err := e.Auth.Authenticate(context.Background(), "alice", "nope"); !errors.Is(err, auth.ErrInvalidCredentials) {
				t.Errorf("wrong user password: %v", err)
			}
		}
		if err != nil && strings.Contains(err.Error(), "service-secret") {
			t.Errorf("error reveals the service password: %v", err)
		}
		e.Close()
	}
}
