package bench

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/template"
)

// server is one mail server under test.
type server interface {
	Name() string
	// Start starts the server on mailRoot (its own copy of the data).
	Start(ctx context.Context, mailRoot string) error
	// Stop kills every process the server started; safe to call twice.
	Stop()
	// Addr returns host:port for "imap", "pop3" or "lmtp".
	Addr(proto string) string
	// PIDs lists the server's processes now.
	PIDs() []int
	// Version describes the server for the report.
	Version() string
}

// mailUID is the uid and gid Dovecot's mail processes run as: Dovecot
// refuses to access mail as root. 65534 is Debian's nobody/nogroup.
const mailUID = 65534

// DovecotPrograms are the programs the reference server needs, with the
// Debian packages that provide them.
var DovecotPrograms = [][2]string{
	{"dovecot", "dovecot-core"},
	{"/usr/lib/dovecot/imap", "dovecot-imapd"},
	{"/usr/lib/dovecot/pop3", "dovecot-pop3d"},
	{"/usr/lib/dovecot/lmtp", "dovecot-lmtpd"},
}

// CheckDovecot reports which Dovecot pieces are missing and how to install
// them. The harness never installs anything itself.
func CheckDovecot() error {
	var missing []string
	for _, p := range DovecotPrograms {
		if _, err := exec.LookPath(p[0]); err != nil {
			missing = append(missing, p[1])
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("dovecot %w: run apt-get install -y %s", errMissing, strings.Join(missing, " "))
	}
	return nil
}

// dovecot is a private Dovecot instance: its own config, base_dir and
// state_dir under dir, loopback ports, started as root with -F.
type dovecot struct {
	dir      string
	users    string // passwd-file shared with Roost
	maxConns int
	ports    map[string]int // set by Start, read by workloads after it
	procs    procGroup
}

func newDovecot(dir, users string, maxConns int) *dovecot {
	return &dovecot{dir: dir, users: users, maxConns: maxConns}
}

func (d *dovecot) Name() string { return "dovecot" }

func (d *dovecot) Version() string {
	out, err := exec.Command("dovecot", "--version").Output()
	if err != nil {
		return "dovecot (version unknown)"
	}
	return "Dovecot " + strings.TrimSpace(string(out))
}

func (d *dovecot) Addr(proto string) string {
	return fmt.Sprintf("127.0.0.1:%d", d.ports[proto])
}

func (d *dovecot) PIDs() []int { return d.procs.pids() }

// dovecotConf follows Dovecot's performance advice
// (doc.dovecot.org "Login processes", "Authentication cache"): login
// processes in high-performance mode (service_count = 0, one per core kept
// ready) and an auth cache. mail_fsync stays at its default (optimized).
// The quota plugin enforces the same 250M as Roost's quota.default, so both
// keep maildirsize up to date. The namespace uses "/" like Roost's default.
// User names are cut to the local part (%n), so LMTP's user@bench.test is
// the same user as an IMAP login as user, like Roost's lmtp.local_domains.
var dovecotConf = template.Must(template.New("conf").Parse(`# written by roost bench; private instance
instance_name = roost-bench-{{.Port.imap}}
base_dir = {{.Dir}}/run
state_dir = {{.Dir}}/state
log_path = {{.Dir}}/dovecot.log
protocols = imap pop3 lmtp
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_username_format = %n
auth_cache_size = 10M
auth_cache_ttl = 1 hour
auth_cache_negative_ttl = 1 hour
passdb {
  driver = passwd-file
  args = scheme=PLAIN {{.Users}}
}
userdb {
  driver = passwd-file
  args = {{.Users}}
  default_fields = uid={{.UID}} gid={{.UID}} home={{.Root}}/%u
}
mail_location = maildir:{{.Root}}/%u/Maildir
first_valid_uid = 100
mail_max_userip_connections = {{.MaxConns}}
mail_plugins = quota
plugin {
  quota = maildir:User quota
  quota_rule = *:storage=250M
}
namespace inbox {
  inbox = yes
  separator = /
  prefix =
}
default_process_limit = {{.MaxConns}}
default_client_limit = {{.MaxConns}}
default_vsz_limit = 1G
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = {{.Port.imap}}
  }
  inet_listener imaps {
    port = 0
  }
  service_count = 0
  process_min_avail = {{.Cores}}
}
service pop3-login {
  inet_listener pop3 {
    address = 127.0.0.1
    port = {{.Port.pop3}}
  }
  inet_listener pop3s {
    port = 0
  }
  service_count = 0
  process_min_avail = {{.Cores}}
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = {{.Port.lmtp}}
  }
}
service imap {
  process_limit = {{.MaxConns}}
}
service pop3 {
  process_limit = {{.MaxConns}}
}
service auth {
  client_limit = {{.AuthClients}}
}
service anvil {
  client_limit = {{.AuthClients}}
}
`))

func (d *dovecot) Start(ctx context.Context, mailRoot string) error {
	d.ports = map[string]int{}
	for _, proto := range []string{"imap", "pop3", "lmtp"} {
		p, err := freePort()
		if err != nil {
			return err
		}
		d.ports[proto] = p
	}
	for _, sub := range []string{"run", "state"} {
		if err := os.MkdirAll(filepath.Join(d.dir, sub), 0o755); err != nil {
			return err
		}
	}
	var b strings.Builder
	err := dovecotConf.Execute(&b, map[string]any{
		"Dir": d.dir, "Users": d.users, "Root": mailRoot, "UID": mailUID, "Port": d.ports,
		"MaxConns": d.maxConns, "Cores": cores(), "AuthClients": 5*d.maxConns + 100,
	})
	if err != nil {
		return err
	}
	conf := filepath.Join(d.dir, "dovecot.conf")
	if err := os.WriteFile(conf, []byte(b.String()), 0o644); err != nil {
		return err
	}
	logPath := filepath.Join(d.dir, "dovecot.log")
	proc, err := startProcess(filepath.Join(d.dir, "stderr.log"), "dovecot", "-F", "-c", conf)
	if err != nil {
		return err
	}
	d.procs.add(proc)
	if err := waitListening(ctx, proc, logPath, d.Addr("imap"), d.Addr("pop3"), d.Addr("lmtp")); err != nil {
		d.Stop()
		return fmt.Errorf("dovecot: %w\n%s", err, tail(filepath.Join(d.dir, "stderr.log"), 10))
	}
	return nil
}

func (d *dovecot) Stop() { d.procs.stop() }
