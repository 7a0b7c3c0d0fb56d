// Command roostbench runs Roost and a private Dovecot side by side on the
// same generated Maildirs and prints a Markdown table of the results.
// bench/run (and make bench) builds and calls it; see docs/benchmarks.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/roost-mail/roost/bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "roostbench:", err)
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("roostbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	smoke := fs.Bool("smoke", false, "tiny data and one repetition: checks the harness, measures nothing")
	workloads := fs.String("workloads", "", "comma-separated subset of "+strings.Join(bench.Workloads, ","))
	servers := fs.String("servers", "", "comma-separated: dovecot,roost (default: both, roost only if built)")
	reps := fs.Int("reps", 0, "repetitions per server (default 3, smoke 1)")
	big := fs.Int("big", -1, "messages in the big INBOX (default 100000)")
	users := fs.Int("users", -1, "small users (default 100)")
	large := fs.Int("large", -1, "large MIME messages (default 20)")
	seed := fs.Uint64("seed", 1, "data generator seed")
	mixedClients := fs.Int("mixed-clients", 0, "concurrent mixed-load clients (default 20)")
	mixedDur := fs.Duration("mixed-duration", 0, "mixed-load duration (default 30s)")
	lmtpMsgs := fs.Int("lmtp-messages", 0, "messages to deliver over LMTP (default 2000)")
	idle := fs.String("idle", "", "idle client counts (default 1000,5000; a count the free memory cannot take is skipped)")
	pop3 := fs.Int("pop3-sessions", 0, "concurrent POP3 download sessions (default 100)")
	binDir := fs.String("bin", "bin", "directory with Roost's imapd, pop3d, lmtpd")
	cache := fs.String("cache", "", "where generated data sets are kept (default $TMPDIR/roost-bench-cache)")
	out := fs.String("out", "", "also write the report to this file")
	keep := fs.Bool("keep", false, "keep the work directory (configs, logs) for inspection")
	fullCopy := fs.Bool("full-copy", false, "copy message files for each server instead of hard-linking them")
	if err := fs.Parse(args); err != nil {
		return err
	}
	o := bench.Full()
	if *smoke {
		o = bench.Smoke()
	}
	o.Log = stderr
	o.Command = "bench/run " + strings.Join(args, " ")
	o.KeepWork, o.FullCopy = *keep, *fullCopy
	o.Data.Seed = *seed
	setInt := func(dst *int, v, unset int) {
		if v != unset {
			*dst = v
		}
	}
	setInt(&o.Reps, *reps, 0)
	setInt(&o.Data.BigMessages, *big, -1)
	setInt(&o.Data.Users, *users, -1)
	setInt(&o.Data.LargeMessages, *large, -1)
	setInt(&o.MixedClients, *mixedClients, 0)
	setInt(&o.LMTPMessages, *lmtpMsgs, 0)
	setInt(&o.POP3Sessions, *pop3, 0)
	if *mixedDur > 0 {
		o.MixedDuration = *mixedDur
	}
	if *cache != "" {
		o.CacheDir = *cache
	}
	if *workloads != "" {
		o.Workloads = strings.Split(*workloads, ",")
	}
	if *idle != "" {
		o.Idle = nil
		for _, s := range strings.Split(*idle, ",") {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				return fmt.Errorf("-idle %q: want counts like 1000,5000", *idle)
			}
			o.Idle = append(o.Idle, n)
		}
	}
	abs, err := filepath.Abs(*binDir)
	if err != nil {
		return err
	}
	o.BinDir = abs
	if *servers != "" {
		o.Servers = strings.Split(*servers, ",")
	} else if err := bench.CheckRoost(o.BinDir, o.Workloads); err != nil {
		fmt.Fprintf(stderr, "roostbench: %v; measuring Dovecot alone\n", err)
		o.Servers = []string{"dovecot"}
	}
	start := time.Now()
	res, report, err := bench.Run(ctx, o)
	if err != nil {
		return err
	}
	fmt.Fprint(stdout, report)
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(*out, []byte(report), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "roostbench: report written to %s\n", *out)
	}
	fmt.Fprintf(stderr, "roostbench: %d rows in %s\n", res.RowCount(), time.Since(start).Round(time.Second))
	return nil
}
