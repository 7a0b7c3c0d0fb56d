package fail2ban

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/roost-mail/roost/deploy/internal/opstest"
	"github.com/roost-mail/roost/internal/testenv"
)

// TestFilterMatchesLiveDaemons runs the real imapd and pop3d, fails logins
// with curl, and checks the filter finds exactly those failures in what
// the daemons logged, in both log formats. This keeps the filter and the
// daemons' log lines from drifting apart.
func TestFilterMatchesLiveDaemons(t *testing.T) {
	testenv.Require(t, "fail2ban-regex", "fail2ban")
	curl := testenv.Require(t, "curl", "curl")
	bin := opstest.Build(t, "imapd", "pop3d")
	for _, format := range []string{"text", "json"} {
		t.Run(format, func(t *testing.T) {
			dir := t.TempDir()
			users := filepath.Join(dir, "users")
			if err := os.WriteFile(users, []byte("alice:{PLAIN}right-password::::::\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			imapPort, pop3Port := testenv.FreePort(t), testenv.FreePort(t)
			cfg := filepath.Join(dir, "roost.yaml")
			conf := fmt.Sprintf(`mail: {root: %s/mail}
auth: {backend: file, file: {path: %s}}
imap: {listen: ["127.0.0.1:%d"]}
pop3: {listen: ["127.0.0.1:%d"]}
security: {allow_root: true, auth_penalty_max: 1s}
log: {format: %s}
`, dir, users, imapPort, pop3Port, format)
			if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
				t.Fatal(err)
			}
			logFile := filepath.Join(dir, "roost.log")
			logs, err := os.Create(logFile)
			if err != nil {
				t.Fatal(err)
			}
			defer logs.Close()
			for _, d := range []string{"imapd", "pop3d"} {
				cmd := exec.Command(filepath.Join(bin, d), "--config", cfg)
				cmd.Stdout, cmd.Stderr = logs, logs
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					cmd.Process.Signal(syscall.SIGTERM)
					cmd.Wait()
				})
			}
			opstest.WaitFor(t, "imapd and pop3d", func() bool {
				return opstest.Listening(imapPort) && opstest.Listening(pop3Port)
			})

			try := func(url, password string) {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				exec.CommandContext(ctx, curl, "-s", "--user", "alice:"+password, url).Run()
			}
			imapURL := fmt.Sprintf("imap://127.0.0.1:%d/", imapPort)
			pop3URL := fmt.Sprintf("pop3://127.0.0.1:%d/", pop3Port)
			try(imapURL, "right-password")
			try(pop3URL, "right-password")
			for i := 0; i < 2; i++ {
				try(imapURL, "wrong")
				try(pop3URL, "wrong")
			}
			logs.Sync()
			got := banned(t, logFile)
			want := []string{"127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1"}
			if !slices.Equal(got, want) {
				data, _ := os.ReadFile(logFile)
				t.Errorf("fail2ban found %v in the daemons' %s log, want 4 failures from 127.0.0.1:\n%s", got, format, data)
			}
		})
	}
}
