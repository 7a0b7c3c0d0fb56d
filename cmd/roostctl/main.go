// Command roostctl is Roost's admin tool: quota reports and recalculation,
// user and login checks, password hashes, mailbox summaries, a config check,
// and `deliver`, a local delivery agent for Postfix's mailbox_command or a
// pipe(8) transport.
//
// Output is a table for people and JSON (--json) or CSV (--csv) for
// scripts. Exit status: 0 success, 1 failure, 2 usage error; `deliver`
// uses sysexits codes Postfix understands (67 unknown user, 75 try again
// later, 77 permanent refusal). docs/delivery.md is the reference.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// Exit codes (sysexits.h) that Postfix's local(8) and pipe(8) interpret.
const (
	exitUsage   = 2
	exNoUser    = 67 // EX_NOUSER: bounce, unknown recipient
	exTempFail  = 75 // EX_TEMPFAIL: Postfix keeps the message and retries
	exNoPerm    = 77 // EX_NOPERM: bounce (over quota with quota.permanent)
	exitFailure = 1
	exitSuccess = 0
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	code := exitCode(err)
	if err != nil && !errors.Is(err, errReported) {
		fmt.Fprintln(os.Stderr, "roostctl:", err)
	}
	os.Exit(code)
}

// run executes one roostctl command line. Standard input is os.Stdin
// (passwords, messages for deliver).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	root := newRoot(stdout, stderr, os.Stdin)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// errReported marks a failure whose explanation was already printed (a
// table of problems, a failed login); main prints nothing more.
var errReported = errors.New("failed")

// exitError carries a specific exit status.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// runError marks an error returned by a command's own code, as opposed to
// cobra's argument and flag parsing (a usage error).
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

func exitCode(err error) int {
	if err == nil {
		return exitSuccess
	}
	var ee *exitError
	if errors.As(err, &ee) {
		return ee.code
	}
	var re *runError
	if errors.As(err, &re) {
		return exitFailure
	}
	return exitUsage
}
