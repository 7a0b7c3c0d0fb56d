package main

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// outMsg is one message for the Python sender.
type outMsg struct {
	From string   `json:"from"`
	To   []string `json:"to"`
	ID   string   `json:"id"`
	Body int      `json:"body"` // body size in bytes
}

// sendSMTP sends msgs to Postfix's smtpd on 127.0.0.1:port with Python's
// smtplib over `clients` concurrent connections and fails the test if any
// is refused.
func sendSMTP(t *testing.T, port, clients int, msgs []outMsg) {
	t.Helper()
	script := filepath.Join(t.TempDir(), "send.py")
	if err := os.WriteFile(script, []byte(senderPy), 0o600); err != nil {
		t.Fatal(err)
	}
	in, _ := json.Marshal(map[string]any{"port": port, "clients": clients, "messages": msgs})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "python3", script)
	cmd.Stdin = strings.NewReader(string(in))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("python smtplib sender: %v\n%s", err, out)
	}
}

// senderPy sends the messages described on stdin; each body ends with an
// END marker line so truncation is visible.
const senderPy = `
import json, smtplib, sys, threading
job = json.load(sys.stdin)
msgs = job["messages"]
errors = []
def work(part):
    s = smtplib.SMTP("127.0.0.1", job["port"], timeout=60)
    for i, m in enumerate(part):
        body = ("x" * 75 + "\n") * (m["body"] // 76) + "END " + m["id"] + "\n"
        data = ("From: <%s>\nTo: <%s>\nSubject: test %s\nMessage-ID: <%s>\n\n" % (m["from"], m["to"][0], m["id"], m["id"])) + body
        try:
            refused = s.sendmail(m["from"], m["to"], data)
            if refused:
                errors.append("%s: refused %r" % (m["id"], refused))
        except Exception as e:
            errors.append("%s: %r" % (m["id"], e))
        if i % 100 == 99:
            s.quit()
            s = smtplib.SMTP("127.0.0.1", job["port"], timeout=60)
    s.quit()
n = job["clients"]
threads = [threading.Thread(target=work, args=(msgs[k::n],)) for k in range(n)]
for t in threads: t.start()
for t in threads: t.join()
if errors:
    print("\n".join(errors)); sys.exit(1)
`

func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
