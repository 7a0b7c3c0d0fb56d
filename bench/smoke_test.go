package bench

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roost-mail/roost/internal/testenv"
)

// TestSmoke runs the whole harness on tiny data against Dovecot, and
// against Roost when `make build` has produced its daemons, and checks that
// the table came out with every workload's rows. It asserts no time.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Dovecot and Roost; skipped with -short")
	}
	for _, p := range DovecotPrograms {
		testenv.Require(t, p[0], p[1])
	}
	if os.Geteuid() != 0 {
		t.Skip("the reference Dovecot must start as root")
	}
	o := Smoke()
	o.CacheDir = t.TempDir()
	o.Servers = []string{"dovecot"}
	bin, err := filepath.Abs("../bin")
	if err != nil {
		t.Fatal(err)
	}
	o.BinDir = bin
	if err := CheckRoost(bin, o.Workloads); err != nil {
		t.Logf("measuring Dovecot alone: %v", err)
	} else {
		o.Servers = append(o.Servers, "roost")
	}
	var log strings.Builder
	o.Log = &log
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, report, err := Run(ctx, o)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	t.Log("\n" + report)
	for _, want := range []string{"| workload | unit | dovecot |", "1 big: UID FETCH 1:* (FLAGS)",
		"1 large: FETCH 1:* (BODYSTRUCTURE)", "2 mixed: commands/s", "3 lmtp: delivery",
		"4 idle: RSS per connection", "5 pop3: messages/s, again", "## Peak memory"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	// Every check must pass against both servers: against Dovecot a failure
	// is a harness bug, against Roost it is a wrong answer to a client.
	for _, name := range o.Servers {
		for _, f := range res.Failures(name) {
			t.Errorf("%s: %s", name, f)
		}
	}
	if t.Failed() {
		t.Log(log.String())
	}
}
