// Package deploy holds the tests that keep the operations docs true: the
// links in the guides resolve, and the package graph in
// docs/architecture.md is the one the code has. The deployment files
// themselves are tested in deploy/demo, deploy/systemd, deploy/fail2ban
// and deploy/deb.
package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/roost-mail/roost/"

// guides are the docs this test keeps honest.
var guides = []string{
	"README.md",
	"docs/admin.md",
	"docs/users.md",
	"docs/configuration.md",
	"docs/architecture.md",
	"docs/scaling.md",
	"docs/security.md",
}

var (
	mdLink  = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	heading = regexp.MustCompile(`(?m)^#{1,6} (.+)$`)
)

// anchor is GitHub's heading slug: lower case, punctuation dropped,
// spaces to hyphens.
func anchor(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(h)) {
		switch {
		case r == ' ' || r == '-':
			b.WriteRune('-')
		case r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r > 0x7f:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	set := map[string]bool{}
	for _, m := range heading.FindAllStringSubmatch(string(data), -1) {
		set[anchor(m[1])] = true
	}
	return set
}

// TestGuideLinks checks every relative link in the guides names a file
// of the repository and, with #fragment into a Markdown file, a heading.
func TestGuideLinks(t *testing.T) {
	root := ".."
	for _, g := range guides {
		data, err := os.ReadFile(filepath.Join(root, g))
		if err != nil {
			t.Errorf("%s: %v", g, err)
			continue
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(data), -1) {
			link := m[1]
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			file, frag, _ := strings.Cut(link, "#")
			target := filepath.Join(root, filepath.Dir(g), file)
			if file == "" {
				target = filepath.Join(root, g)
			}
			if _, err := os.Stat(target); err != nil {
				t.Errorf("%s links to %s, which does not exist", g, link)
				continue
			}
			if frag != "" && strings.HasSuffix(target, ".md") && !anchors(t, target)[frag] {
				t.Errorf("%s links to %s: no heading #%s there", g, link, frag)
			}
		}
	}
}

// imports returns, for each package of the module, every package of the
// module it depends on, directly or not.
func imports(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("go", "list", "-e", "-f", `{{.ImportPath}}{{range .Deps}} {{.}}{{end}}`, module+"...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		f := strings.Fields(line)
		pkg := strings.TrimPrefix(f[0], module)
		deps[pkg] = nil
		for _, d := range f[1:] {
			if rel, ok := strings.CutPrefix(d, module); ok {
				deps[pkg] = append(deps[pkg], rel)
			}
		}
	}
	return deps
}

// TestPackageGraph holds the code to the rules docs/architecture.md states.
func TestPackageGraph(t *testing.T) {
	deps := imports(t)
	concrete := []string{"maildir", "auth/fileauth", "auth/ldapauth", "cmd/internal/config", "cmd/internal/daemon"}
	for _, front := range []string{"imapd", "pop3d", "lmtp", "quota"} {
		if _, ok := deps[front]; !ok {
			continue // not written yet
		}
		for _, d := range deps[front] {
			for _, c := range concrete {
				if d == c {
					t.Errorf("%s depends on %s: front ends see only backend and auth interfaces", front, d)
				}
			}
		}
	}
	for _, contract := range []string{"backend", "auth"} {
		if len(deps[contract]) > 0 {
			t.Errorf("%s imports %v: contracts import only the standard library", contract, deps[contract])
		}
	}
	for pkg, ds := range deps {
		if strings.HasPrefix(pkg, "cmd/") || strings.HasPrefix(pkg, "bench") {
			continue
		}
		for _, d := range ds {
			if d == "cmd/internal/config" {
				t.Errorf("%s depends on cmd/internal/config: only cmd/ reads configuration", pkg)
			}
		}
	}
}

// TestNamedTestsExist checks that every test the guides cite as evidence
// (`TestX`, `FuzzX`, the conformance suite's `testX`) is a function in the
// repository, so security.md cannot point at a test that was renamed or
// removed.
func TestNamedTestsExist(t *testing.T) {
	cited := regexp.MustCompile("`((?:Test|Fuzz|test)[A-Z][A-Za-z0-9_]*)`")
	defined := map[string]bool{}
	err := filepath.WalkDir("..", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, m := range regexp.MustCompile(`(?m)^func ((?:Test|Fuzz|test)\w+)\(`).FindAllSubmatch(data, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range guides {
		data, err := os.ReadFile(filepath.Join("..", g))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range cited.FindAllStringSubmatch(string(data), -1) {
			n++
			if !defined[m[1]] {
				t.Errorf("%s cites %s, which is not a function in the repository", g, m[1])
			}
		}
	}
	if n < 50 {
		t.Errorf("the guides cite %d tests; security.md alone cites more: is the pattern broken?", n)
	}
}
