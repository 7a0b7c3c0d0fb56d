package imapd

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
)

// largeMIME is a multipart message with an 8 MB base64 attachment.
func largeMIME() []byte {
	var b bytes.Buffer
	b.WriteString("Subject: large\r\nContent-Type: multipart/mixed; boundary=xyz\r\n\r\n--xyz\r\nContent-Type: text/plain\r\n\r\nsee attachment\r\n--xyz\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n")
	raw := bytes.Repeat([]byte("0123456789abcdef"), 8<<20/16)
	enc := base64.StdEncoding.EncodeToString(raw)
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n--xyz--\r\n")
	return b.Bytes()
}

func TestParseLarge(t *testing.T) {
	msg := largeMIME()
	root, err := parseMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if len(root.children) != 2 || root.end != int64(len(msg)) {
		t.Fatalf("children %d, end %d of %d", len(root.children), root.end, len(msg))
	}
	att := root.children[1]
	if !strings.HasPrefix(string(msg[att.bodyOff:]), "MDEy") || string(msg[att.end:att.end+9]) != "\r\n--xyz--" {
		t.Fatalf("attachment range [%d,%d)", att.bodyOff, att.end)
	}
}

func BenchmarkParseMessage8MB(b *testing.B) {
	msg := largeMIME()
	b.SetBytes(int64(len(msg)))
	for i := 0; i < b.N; i++ {
		if _, err := parseMessage(bytes.NewReader(msg)); err != nil {
			b.Fatal(err)
		}
	}
}
