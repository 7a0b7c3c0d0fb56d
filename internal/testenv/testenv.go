// Package testenv lets tests demand real programs (slapd, Postfix, curl,
// fetchmail, mbsync, python3). Outside CI a missing program skips the test;
// with CI=true it fails, because CI installs everything the tests need.
// StartSlapd runs a private OpenLDAP server on loopback for one test;
// StartPostfix runs the private Postfix, one test at a time across packages.
// It also holds what the benchmarks of several packages share:
// ReportPairedTiming and the Maildirs of SizeBenchMaildirs.
package testenv

import (
	"os"
	"os/exec"
	"testing"
)

// Require returns the path of program, or ends the test: a failure in CI,
// a skip elsewhere. pkg names the Debian package that provides it.
func Require(t testing.TB, program, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(program)
	if err == nil {
		return p
	}
	msg := program + " is not installed: apt-get install -y " + pkg
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}
