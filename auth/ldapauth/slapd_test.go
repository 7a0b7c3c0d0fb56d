package ldapauth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
)

// slapd is a private OpenLDAP server for one test, on loopback ports, with
// the users below and a CA-signed certificate for StartTLS and ldaps://.
type slapd struct {
	*testenv.Slapd
	caFile  string
	otherCA string // a CA that did not sign the server certificate
}

const (
	suffix    = testenv.SlapdSuffix
	serviceDN = "cn=roost,ou=services,dc=example,dc=edu"
	servicePW = "service-secret"
)

// users: alice has every attribute; bob a Maildir and a byte quota; carol
// bad values (a relative Maildir, a quota without a number); dave a
// Dovecot-style location with options and may not read his own entry
// (only the service account may); "*" is
// a real uid that only an unescaped filter would confuse; twin1/twin2 share
// a mail address so a filter on mail is ambiguous.
const usersLDIF = `dn: ou=people,dc=example,dc=edu
objectClass: organizationalUnit
ou: people

dn: ou=services,dc=example,dc=edu
objectClass: organizationalUnit
ou: services

dn: cn=roost,ou=services,dc=example,dc=edu
objectClass: organizationalRole
objectClass: simpleSecurityObject
cn: roost
userPassword: service-secret

dn: uid=alice,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: roostMailUser
uid: alice
cn: Alice
sn: Liddell
mail: alice@example.edu
userPassword: alice-pw
uidNumber: 1001
gidNumber: 100
homeDirectory: /home/alice
mailQuota: 250M

dn: uid=bob,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
objectClass: roostMailUser
uid: bob
cn: Bob
sn: B
mail: bob@example.edu
userPassword: {SSHA}rEk9YF6gpZP4r1zE8HiH/dzb6w+glWGM
mailMessageStore: maildir:/srv/mail/bob
mailQuota: 1048576

dn: uid=carol,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: roostMailUser
uid: carol
cn: Carol
sn: C
userPassword: carol-pw
uidNumber: 1003
gidNumber: 100
homeDirectory: /home//carol/
mailMessageStore: maildir:Maildir:INDEX=/idx
mailQuota: lots

dn: uid=dave,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
objectClass: roostMailUser
uid: dave
cn: Dave
sn: D
userPassword: dave-pw
mailMessageStore: maildir:/srv/mail/dave:INDEX=/idx/dave

dn: uid=*,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
uid: *
cn: Star
sn: S
userPassword: star-pw

dn: uid=twin1,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
uid: twin1
cn: Twin
sn: T
mail: twins@example.edu
userPassword: twin-pw

dn: uid=twin2,ou=people,dc=example,dc=edu
objectClass: inetOrgPerson
uid: twin2
cn: Twin
sn: T
mail: twins@example.edu
userPassword: twin-pw
`

// startSlapd starts slapd with the Roost test schema, ACLs under which
// only the service account may read dave, and the users above (or skips or
// fails via testenv); it stops when the test ends.
func startSlapd(t testing.TB) *slapd {
	t.Helper()
	s := &slapd{}
	var cert, key string
	s.caFile, s.otherCA, cert, key = writeCerts(t, t.TempDir())
	s.Slapd = testenv.StartSlapd(t, testenv.SlapdOptions{
		Schema: []string{
			"attributetype ( 1.3.6.1.4.1.99999.1.1 NAME 'mailQuota' EQUALITY caseIgnoreMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )",
			"attributetype ( 1.3.6.1.4.1.99999.1.2 NAME 'mailMessageStore' EQUALITY caseExactIA5Match SYNTAX 1.3.6.1.4.1.1466.115.121.1.26 SINGLE-VALUE )",
			"objectclass ( 1.3.6.1.4.1.99999.2.1 NAME 'roostMailUser' SUP top AUXILIARY MAY ( mailQuota $ mailMessageStore ) )",
		},
		ACL: []string{
			"access to attrs=userPassword by self write by anonymous auth by * none",
			`access to dn.exact="uid=dave,ou=people,dc=example,dc=edu" by dn.exact="cn=roost,ou=services,dc=example,dc=edu" read by * none`,
			"access to * by users read by * none",
		},
		TLSCertFile: cert,
		TLSKeyFile:  key,
		LDIF:        usersLDIF,
	})
	return s
}

// writeCerts makes a CA, a server certificate for 127.0.0.1 signed by it,
// and an unrelated CA; it returns the two CA files and the server's pair.
func writeCerts(t testing.TB, dir string) (caFile, otherCAFile, certFile, keyFile string) {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newCA := func(name string) (*x509.Certificate, *ecdsa.PrivateKey, []byte) {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		return c, k, der
	}
	ca, caKey, caDER := newCA("Roost test CA")
	_, _, otherDER := newCA("Unrelated CA")
	sk := newKey()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &sk.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(sk)
	if err != nil {
		t.Fatal(err)
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("other-ca.pem", "CERTIFICATE", otherDER),
		write("server.pem", "CERTIFICATE", der), write("server.key", "PRIVATE KEY", kder)
}
