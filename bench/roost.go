package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"text/template"
)

// CheckRoost reports whether binDir holds the Roost daemons (from
// `make build`) that the workloads need.
func CheckRoost(binDir string, workloads []string) error {
	var missing []string
	for _, b := range daemonsFor(workloads) {
		if st, err := os.Stat(filepath.Join(binDir, b)); err != nil || st.Mode()&0o111 == 0 {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("roost %s %w in %s: run make build", strings.Join(missing, ", "), errMissing, binDir)
	}
	return nil
}

// daemonsFor lists the daemons the workloads talk to, in start order.
func daemonsFor(workloads []string) []string {
	need := map[string]bool{}
	for _, w := range workloads {
		for _, p := range workloadProtocols[w] {
			need[p+"d"] = true
		}
	}
	var out []string
	for _, d := range []string{"imapd", "pop3d", "lmtpd"} {
		if need[d] {
			out = append(out, d)
		}
	}
	return out
}

// roost runs bin/imapd, bin/pop3d and bin/lmtpd (those the workloads need)
// with one config file in the format of cmd/internal/config, pointed at its
// own copy of the data.
type roost struct {
	daemons  []string
	binDir   string
	dir      string
	users    string
	maxConns int
	ports    map[string]int // set by Start, read by workloads after it
	procs    procGroup
}

func newRoost(daemons []string, binDir, dir, users string, maxConns int) *roost {
	return &roost{daemons: daemons, binDir: binDir, dir: dir, users: users, maxConns: maxConns}
}

func (r *roost) Name() string { return "roost" }

func (r *roost) Version() string {
	out, err := exec.Command("git", "-C", r.binDir, "describe", "--always", "--dirty").Output()
	if err != nil {
		return "Roost (commit unknown)"
	}
	return "Roost " + strings.TrimSpace(string(out))
}

func (r *roost) Addr(proto string) string {
	return fmt.Sprintf("127.0.0.1:%d", r.ports[proto])
}

func (r *roost) PIDs() []int { return r.procs.pids() }

// roostConf matches the Dovecot instance: same passwd-file, 250M quota,
// fsync on, an auth cache, plaintext logins on loopback, and connection
// limits out of the way of the idle test. The daemons run as root (the
// harness is root), which security.allow_root permits.
var roostConf = template.Must(template.New("conf").Parse(`# written by roost bench
mail:
  root: {{.Root}}
  fsync: true
quota:
  default: 250M
auth:
  backend: file
  file:
    path: {{.Users}}
  cache:
    ttl: 1h
    negative_ttl: 1h
imap:
  listen: ["127.0.0.1:{{.Port.imap}}"]
  max_user_ip_connections: {{.MaxConns}}
pop3:
  listen: ["127.0.0.1:{{.Port.pop3}}"]
lmtp:
  listen: ["127.0.0.1:{{.Port.lmtp}}"]
  local_domains: [{{.Domain}}]
security:
  allow_plaintext_auth: true
  allow_root: true
  max_connections: {{.MaxConns}}
log:
  level: warn
`))

func (r *roost) Start(ctx context.Context, mailRoot string) error {
	r.ports = map[string]int{}
	for _, proto := range []string{"imap", "pop3", "lmtp"} {
		p, err := freePort()
		if err != nil {
			return err
		}
		r.ports[proto] = p
	}
	if err := os.MkdirAll(r.dir, 0o755); err != nil {
		return err
	}
	var b strings.Builder
	if err := roostConf.Execute(&b, map[string]any{
		"Root": mailRoot, "Users": r.users, "Domain": benchDomain, "Port": r.ports, "MaxConns": r.maxConns,
	}); err != nil {
		return err
	}
	conf := filepath.Join(r.dir, "roost.yaml")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return err
	}
	var errs []error
	for _, name := range r.daemons {
		logPath := filepath.Join(r.dir, name+".log")
		p, err := startProcess(logPath, filepath.Join(r.binDir, name), "--config", conf)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		r.procs.add(p)
		proto := strings.TrimSuffix(name, "d")
		if err := waitListening(ctx, p, logPath, r.Addr(proto)); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		r.Stop()
		return err
	}
	return nil
}

func (r *roost) Stop() { r.procs.stop() }

func cores() int { return runtime.NumCPU() }
