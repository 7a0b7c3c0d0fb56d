package main

import (
	"bufio"
	"context"
	"github.com/roost-mail/roost/internal/testenv"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestRun starts the daemon from a config file, fetches a message that
// Postfix-style delivery left in the Maildir, and stops it by cancelling.
func TestRun(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "vmail")
	users := filepath.Join(dir, "users")
	if err := os.WriteFile(users, []byte("alice:{PLAIN}wonderland::::::\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "roost.yaml")
	yaml := "mail:\n  root: " + root + "\n  fsync: false\n  special_use: {}\n" +
		"auth:\n  file:\n    path: " + users + "\n" +
		"pop3:\n  listen: [\"127.0.0.1:0\"]\n  uidl_format: \"UID%u-%v\"\n  expire_days: 30\n" +
		"security:\n  allow_plaintext_auth: true\n  allow_root: true\n"
	if err := os.WriteFile(conf, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(root, "alice", "Maildir")
	for _, sub := range []string{"new", "cur", "tmp"} {
		os.MkdirAll(filepath.Join(md, sub), 0o700)
	}
	os.WriteFile(filepath.Join(md, "new", "1700000000.V1I1M1.test"), []byte("Subject: hi\n\nbody\n"), 0o600)

	ctx, cancel := context.WithCancel(context.Background())
	logs := &testenv.LogBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"--config", conf}, os.Stdout, logs) }()

	// The port is the kernel's choice; the daemon logs it.
	listening := regexp.MustCompile(`msg=listening .*addr=(127\.0\.0\.1:\d+)`)
	var addr string
	for deadline := time.Now().Add(10 * time.Second); addr == ""; time.Sleep(20 * time.Millisecond) {
		if m := listening.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			cancel()
			t.Fatalf("pop3d never listened:\n%s", logs)
		}
	}
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	c.Write([]byte("CAPA\r\nUSER alice\r\nPASS wonderland\r\nUIDL\r\nRETR 1\r\nQUIT\r\n"))
	r := bufio.NewReader(c)
	var got []string
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			break
		}
		got = append(got, strings.TrimRight(l, "\r\n"))
	}
	text := strings.Join(got, "\n")
	for _, want := range []string{"EXPIRE 30", "+OK Logged in, 1 messages", "\n1 UID1-", "Subject: hi\n\nbody\n.\n+OK Bye"} {
		if !strings.Contains(text, want) {
			t.Errorf("session lacks %q:\n%s", want, text)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("pop3d did not stop")
	}
	if l := logs.String(); !strings.Contains(l, `msg="pop3 session"`) || !strings.Contains(l, "retr=1") || strings.Contains(l, "wonderland") {
		t.Errorf("daemon log:\n%s", l)
	}
}

func TestRunErrors(t *testing.T) {
	ctx := context.Background()
	var out strings.Builder
	if err := run(ctx, []string{"--config", filepath.Join(t.TempDir(), "missing.yaml")}, &out, &out); err == nil {
		t.Error("a missing config file was accepted")
	}
	if err := run(ctx, []string{"extra"}, &out, &out); err == nil || !strings.Contains(err.Error(), "only --config") {
		t.Errorf("extra argument: %v", err)
	}
	dir := t.TempDir()
	conf := filepath.Join(dir, "roost.yaml")
	os.WriteFile(filepath.Join(dir, "users"), nil, 0o600)
	os.WriteFile(conf, []byte("mail:\n  root: "+dir+"\nauth:\n  file:\n    path: "+filepath.Join(dir, "users")+
		"\npop3:\n  listen: []\n  uidl_format: \"%m\"\n"), 0o600)
	if err := run(ctx, []string{"--config", conf}, &out, &out); err == nil {
		t.Error("empty pop3.listen accepted")
	}
}
