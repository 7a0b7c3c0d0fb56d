package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// Workloads lists every workload in the order one repetition runs them.
// The order matters: pop3 only reads, mixed changes the small users'
// mailboxes (and knows how), lmtp adds to their INBOXes afterwards.
var Workloads = []string{"big", "large", "pop3", "mixed", "lmtp", "idle"}

var workloadFuncs = map[string]func(context.Context, *env) error{
	"big": runBig, "large": runLarge, "pop3": runPOP3, "mixed": runMixed,
	"lmtp": runLMTP, "idle": runIdle,
}

// workloadProtocols says which servers' listeners each workload uses.
var workloadProtocols = map[string][]string{
	"big": {"imap", "pop3"}, "large": {"imap"}, "pop3": {"pop3"}, "mixed": {"imap"},
	"lmtp": {"lmtp"}, "idle": {"imap"},
}

// Options configure a run. Full and Smoke return complete sets.
type Options struct {
	Workloads []string // subset of Workloads
	Servers   []string // "dovecot", "roost"
	Reps      int
	Data      DataSpec

	MixedClients  int
	MixedDuration time.Duration
	LMTPMessages  int
	LMTPClients   int
	LMTPSizeKB    int
	Idle          []int // idle client counts, measured one after another
	POP3Sessions  int

	// WorkloadTimeout bounds each workload on each server.
	WorkloadTimeout time.Duration
	CacheDir        string // generated data sets, reused between runs
	WorkDir         string // server copies, configs and logs; removed afterwards unless KeepWork
	KeepWork        bool
	BinDir          string // Roost's imapd, pop3d, lmtpd
	FullCopy        bool   // copy message files instead of hard-linking them
	Command         string // the command line, for the report
	Log             io.Writer
}

// Full is the standard run that docs/benchmarks.md reports.
func Full() Options {
	return Options{
		Workloads: Workloads, Servers: []string{"dovecot", "roost"}, Reps: 3,
		Data:         DataSpec{Seed: 1, BigMessages: 100000, Users: 100, LargeMessages: 20, LargeMaxKB: 8192},
		MixedClients: 20, MixedDuration: 30 * time.Second,
		LMTPMessages: 2000, LMTPClients: 4, LMTPSizeKB: 10,
		Idle: []int{1000, 5000}, POP3Sessions: 100,
		WorkloadTimeout: 10 * time.Minute,
		CacheDir:        filepath.Join(os.TempDir(), "roost-bench-cache"),
	}
}

// Smoke is a tiny run that exercises every code path in well under a
// minute; its numbers mean nothing.
func Smoke() Options {
	o := Full()
	o.Reps = 1
	o.Data = DataSpec{Seed: 1, BigMessages: 300, Users: 4, LargeMessages: 2, LargeMaxKB: 256}
	o.MixedClients, o.MixedDuration = 2, 2*time.Second
	o.LMTPMessages, o.LMTPClients = 20, 2
	o.Idle = []int{10}
	o.POP3Sessions = 4
	o.WorkloadTimeout = time.Minute
	return o
}

// env is what a workload needs about the server it runs against.
type env struct {
	srv  server
	root string // the server's copy of the mail data
	spec DataSpec
	opts *Options
	res  *Results
}

func (e *env) time(name string, d time.Duration) { e.res.AddDuration(e.srv.Name(), name, d) }

// restart stops and starts the server on the same data.
func (e *env) restart(ctx context.Context) error {
	e.srv.Stop()
	return e.srv.Start(ctx, e.root)
}

// Run runs every repetition and returns the results and their report.
func Run(ctx context.Context, o Options) (*Results, string, error) {
	logf := func(format string, a ...any) {
		if o.Log != nil {
			fmt.Fprintf(o.Log, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, a...)...)
		}
	}
	for _, w := range o.Workloads {
		if workloadFuncs[w] == nil {
			return nil, "", fmt.Errorf("unknown workload %q (have %s)", w, strings.Join(Workloads, ", "))
		}
	}
	if o.Reps < 1 || len(o.Servers) == 0 {
		return nil, "", errors.New("need at least one repetition and one server")
	}
	for _, s := range o.Servers {
		if s != "dovecot" && s != "roost" {
			return nil, "", fmt.Errorf("unknown server %q (have dovecot, roost)", s)
		}
	}
	if slices.Contains(o.Servers, "dovecot") {
		if err := CheckDovecot(); err != nil {
			return nil, "", err
		}
	}
	if slices.Contains(o.Servers, "roost") {
		if err := CheckRoost(o.BinDir, o.Workloads); err != nil {
			return nil, "", err
		}
	}
	root, err := EnsureData(o.CacheDir, o.Data, logf)
	if err != nil {
		return nil, "", fmt.Errorf("generate data: %w", err)
	}
	work := o.WorkDir
	if work == "" {
		if work, err = os.MkdirTemp("", "roost-bench-"); err != nil {
			return nil, "", err
		}
	}
	if !o.KeepWork {
		defer os.RemoveAll(work)
	}
	// Dovecot's mail processes run as mailUID and read the users file.
	if err := os.Chmod(work, 0o755); err != nil {
		return nil, "", err
	}
	users := filepath.Join(work, "users")
	if err := writeUsers(users, o.Data.UserList()); err != nil {
		return nil, "", err
	}
	maxConns := 1000
	for _, n := range o.Idle {
		maxConns = max(maxConns, n+500)
	}
	servers := map[string]server{
		"dovecot": newDovecot(filepath.Join(work, "dovecot"), users, maxConns),
		"roost":   newRoost(daemonsFor(o.Workloads), o.BinDir, filepath.Join(work, "roost"), users, maxConns),
	}
	res := newResults()
	loadBefore := loadAvg()
	for rep := 0; rep < o.Reps; rep++ {
		// Alternate which server goes first.
		order := slices.Clone(o.Servers)
		if rep%2 == 1 {
			slices.Reverse(order)
		}
		for _, name := range order {
			if err := ctx.Err(); err != nil {
				return nil, "", err
			}
			logf("rep %d/%d: %s", rep+1, o.Reps, name)
			if err := runServer(ctx, &o, servers[name], work, root, res, logf); err != nil {
				res.Fail(name, fmt.Sprintf("rep %d", rep+1), err)
				logf("%s: %v", name, err)
			}
		}
	}
	meta := Meta{
		Date: time.Now(), Command: o.Command, Data: o.Data,
		// Other work on the machine shows in every number: say how busy it was.
		Machine: fmt.Sprintf("%s; load average %s before, %s after", machine(), loadBefore, loadAvg()),
		Options: fmt.Sprintf("%d repetitions; workloads %s; mixed %d clients × %s; LMTP %d × %d KB over %d connections; idle %v; POP3 %d sessions",
			o.Reps, strings.Join(o.Workloads, ", "), o.MixedClients, o.MixedDuration, o.LMTPMessages, o.LMTPSizeKB, o.LMTPClients, o.Idle, o.POP3Sessions),
	}
	for _, name := range o.Servers {
		meta.Versions = append(meta.Versions, servers[name].Version())
	}
	meta.Versions = append(meta.Versions, runtime.Version())
	return res, res.Markdown(meta, o.Servers), nil
}

// runServer copies the data for one server, starts it, runs the workloads
// and stops it. A failing workload is recorded and the next one runs on a
// freshly restarted server.
func runServer(ctx context.Context, o *Options, srv server, work, master string, res *Results, logf func(string, ...any)) error {
	name := srv.Name()
	root := filepath.Join(work, name, "mail")
	if err := os.RemoveAll(root); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(root), 0o755); err != nil {
		return err
	}
	uid := -1
	if name == "dovecot" {
		uid = mailUID
	}
	t := time.Now()
	if err := copyTree(master, root, uid, uid, !o.FullCopy); err != nil {
		return fmt.Errorf("copy data: %w", err)
	}
	logf("%s: data copied in %s", name, time.Since(t).Round(time.Millisecond))
	if !o.KeepWork {
		defer os.RemoveAll(root)
	}
	if err := srv.Start(ctx, root); err != nil {
		return err
	}
	defer srv.Stop()
	mem := sampleMemory(srv.PIDs, 250*time.Millisecond)
	defer func() { res.peak(name, mem.Stop()) }()
	e := &env{srv: srv, root: root, spec: o.Data, opts: o, res: res}
	for _, w := range o.Workloads {
		wctx, cancel := context.WithTimeout(ctx, o.WorkloadTimeout)
		t := time.Now()
		err := workloadFuncs[w](wctx, e)
		cancel()
		logf("%s: %s done in %s", name, w, time.Since(t).Round(time.Millisecond))
		if err != nil {
			res.Fail(name, w, err)
			logf("%s: %s: %v", name, w, err)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err := e.restart(ctx); err != nil {
				return fmt.Errorf("restart after %s failed: %w", w, err)
			}
		}
	}
	return nil
}

// writeUsers writes a Dovecot-compatible passwd-file that both servers
// read; Dovecot adds uid, gid and home through userdb default_fields.
func writeUsers(path string, users []string) error {
	var b strings.Builder
	for _, u := range users {
		fmt.Fprintf(&b, "%s:{PLAIN}%s::::::\n", u, Password(u))
	}
	return os.WriteFile(path, []byte(b.String()), 0o644)
}

// loadAvg returns the 1-minute load average.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	kernel, _ := exec.Command("uname", "-r").Output()
	var mem string
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		mem = strings.Fields(strings.SplitN(string(b), "\n", 2)[0])[1]
		var kb int64
		fmt.Sscan(mem, &kb)
		mem = fmt.Sprintf("%.0f GiB RAM", float64(kb)/(1<<20))
	}
	return fmt.Sprintf("%s, %d cores, %s, Linux %s", model, runtime.NumCPU(), mem, strings.TrimSpace(string(kernel)))
}
