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

// A digest part whose header has no blank line encloses an empty message
// that ends where the part does, not in the CRLF its delimiter takes.
func TestParseDigestPartWithoutBody(t *testing.T) {
	msg := "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\nX: 0\r\n--d--\r\n"
	root := parseChecked(t, msg)
	if len(root.children) != 1 || root.children[0].msg == nil {
		t.Fatalf("want one message/rfc822 part, got %+v", root.children)
	}
	if c := root.children[0]; msg[c.hdrOff:c.end] != "X: 0" || c.msg.end != c.end {
		t.Errorf("part %q, enclosed message [%d,%d,%d] in [%d,%d]", msg[c.hdrOff:c.end], c.msg.hdrOff, c.msg.bodyOff, c.msg.end, c.hdrOff, c.end)
	}
}

// An empty first part of a nested multipart, cut short by the enclosing
// multipart's delimiter, lies within its parent.
func TestParseNestedMultipartCutShort(t *testing.T) {
	msg := "Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\n" +
		"Content-Type: multipart/mixed; boundary=inner\r\n\r\n--inner\r\n--outer--\r\n"
	root := parseChecked(t, msg)
	inner := root.children[0]
	if len(inner.children) != 1 || !strings.HasSuffix(msg[:inner.end], "--inner") || inner.children[0].end != inner.end {
		t.Errorf("inner multipart %q with %d parts", msg[inner.hdrOff:inner.end], len(inner.children))
	}
}

// A delimiter repeated after the close delimiter is epilogue: the
// message's text runs to its end.
func TestParseRepeatedCloseDelimiter(t *testing.T) {
	msg := "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\none\r\n--b--\r\n--b--\r\nafter\r\n"
	root := parseChecked(t, msg)
	if root.end != int64(len(msg)) || len(root.children) != 1 {
		t.Errorf("root ends at %d of %d, %d parts", root.end, len(msg), len(root.children))
	}
}

// parseChecked parses msg and checks that every part lies within its
// parent.
func parseChecked(t *testing.T, msg string) *part {
	t.Helper()
	root, err := parseMessage(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	checkTree(t, root, 0, int64(len(msg)))
	return root
}
