package imapd_test

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"

	"github.com/emersion/go-imap/v2"
)

// BenchmarkBodyStructureLarge fetches BODYSTRUCTURE of an 8 MB message
// with the cache disabled, so every iteration parses it again.
func BenchmarkBodyStructureLarge(b *testing.B) {
	root, users := largeMaildir(b, 0)
	var msg bytes.Buffer
	msg.WriteString("Subject: large\nContent-Type: multipart/mixed; boundary=xyz\n\n--xyz\nContent-Type: text/plain\n\nsee attachment\n--xyz\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\n")
	enc := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte("0123456789abcdef"), 8<<20/16))
	for len(enc) > 76 {
		msg.WriteString(enc[:76] + "\n")
		enc = enc[76:]
	}
	msg.WriteString(enc + "\n--xyz--\n")
	if err := os.WriteFile(filepath.Join(root, "alice", "Maildir", "cur", "1.M1P1.big:2,S"), msg.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	addr, stop := benchServer(b, root, users, -1)
	defer stop()
	c := benchLogin(b, addr)
	defer func() { c.Logout().Wait() }()
	b.SetBytes(int64(msg.Len()))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		drain(b, c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodyStructure: &imap.FetchItemBodyStructure{Extended: true}}))
	}
}
