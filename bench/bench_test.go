package bench

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// treeDigest hashes every path, mtime and content under root.
func treeDigest(t *testing.T, root string) (string, int) {
	t.Helper()
	h := sha256.New()
	n := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		st, _ := d.Info()
		h.Write([]byte(rel + "\x00" + st.ModTime().UTC().String() + "\x00"))
		h.Write(b)
		n++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(h.Sum(nil)), n
}

func TestDataIsReproducible(t *testing.T) {
	spec := DataSpec{Seed: 7, BigMessages: 50, Users: 2, LargeMessages: 2, LargeMaxKB: 100}
	noLog := func(string, ...any) {}
	a, err := EnsureData(t.TempDir(), spec, noLog)
	if err != nil {
		t.Fatal(err)
	}
	b, err := EnsureData(t.TempDir(), spec, noLog)
	if err != nil {
		t.Fatal(err)
	}
	da, na := treeDigest(t, a)
	db, _ := treeDigest(t, b)
	if da != db {
		t.Fatal("two generations from the same seed differ")
	}
	// big + large + per user every folder's messages, plus maildirfolder markers.
	want := 50 + 2 + 2*(smallTotal()+len(smallFolders)-1)
	if na != want {
		t.Fatalf("%d files, want %d", na, want)
	}
	spec.Seed = 8
	c, err := EnsureData(t.TempDir(), spec, noLog)
	if err != nil {
		t.Fatal(err)
	}
	if dc, _ := treeDigest(t, c); dc == da {
		t.Fatal("a different seed gave the same data")
	}
}

func TestGeneratedMessagesArePostfixStyle(t *testing.T) {
	spec := DataSpec{Seed: 1, BigMessages: 2000, Users: 1}
	root, err := EnsureData(t.TempDir(), spec, func(string, ...any) {})
	if err != nil {
		t.Fatal(err)
	}
	needle, wantHits := spec.needle()
	hits, count := 0, 0
	for _, sub := range []string{"new", "cur"} {
		dir := filepath.Join(maildirPath(root, "big", "INBOX"), sub)
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			count++
			b, err := os.ReadFile(filepath.Join(dir, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(b, []byte("\r")) {
				t.Fatalf("%s has CR: Postfix writes LF", e.Name())
			}
			if strings.Contains(e.Name(), ",S=") || (sub == "new") == strings.Contains(e.Name(), ":2,") {
				t.Fatalf("%s/%s is not a Postfix-style name in the right directory", sub, e.Name())
			}
			head, _, _ := bytes.Cut(b, []byte("\n\n"))
			if !bytes.Contains(head, []byte("\nX-Bench-Id: big-INBOX-")) || !bytes.Contains(head, []byte("\nMessage-ID: <big-INBOX-")) {
				t.Fatalf("%s lacks its ids", e.Name())
			}
			if bytes.Contains(head, []byte("Subject: ")) && bytes.Contains(head, []byte(needle)) {
				hits++
			}
		}
	}
	if count != 2000 || hits != wantHits {
		t.Fatalf("%d messages with %d needles, want 2000 and %d", count, hits, wantHits)
	}
}

func TestCopyTreeLinksFilesAndMakesNewDirs(t *testing.T) {
	src, dst := t.TempDir(), filepath.Join(t.TempDir(), "copy")
	if err := os.MkdirAll(filepath.Join(src, "u", "cur"), 0o755); err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(src, "u", "cur", "1.a:2,S")
	if err := os.WriteFile(f, []byte("x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := copyTree(src, dst, -1, -1, true); err != nil {
		t.Fatal(err)
	}
	// Renaming or removing in the copy must leave the source alone.
	if err := os.Rename(filepath.Join(dst, "u", "cur", "1.a:2,S"), filepath.Join(dst, "u", "cur", "1.a:2,FS")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(f); err != nil {
		t.Fatalf("source changed by a rename in the copy: %v", err)
	}
}

func TestPercentileAndMedian(t *testing.T) {
	d := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{50, 5}, {95, 10}, {99, 10}, {10, 1}, {0, 1}} {
		if got := percentile(d, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if m := median([]float64{1, 2, 3, 10}); m != 2.5 {
		t.Errorf("median = %v", m)
	}
}

func TestMarkdownRatios(t *testing.T) {
	r := newResults()
	for _, v := range []float64{10, 12, 11} {
		r.Add("dovecot", "1 big: x", "ms", false, v)
	}
	for _, v := range []float64{5, 6, 7} {
		r.Add("roost", "1 big: x", "ms", false, v)
	}
	r.Add("dovecot", "3 lmtp: y", "msgs/s", true, 100)
	if md := r.Markdown(Meta{}, []string{"dovecot", "roost"}); !strings.Contains(md, "## Where Roost is behind\n\nRows whose median is more than 10% worse than Dovecot's:\n\nNone.") {
		t.Errorf("a faster Roost row is listed as behind:\n%s", md)
	}
	r.Add("roost", "1 big: z", "ms", false, 20)
	r.Add("dovecot", "1 big: z", "ms", false, 10)
	if md := r.Markdown(Meta{}, []string{"dovecot", "roost"}); !strings.Contains(md, "- 1 big: z: Roost 20.0, Dovecot 10.0 ms (2.00×)") {
		t.Errorf("a slower Roost row is not listed as behind:\n%s", md)
	}
	r.Fail("roost", "mixed", os.ErrNotExist)
	md := r.Markdown(Meta{Date: time.Unix(0, 0)}, []string{"dovecot", "roost"})
	for _, want := range []string{"| 1 big: x | ms | 11.0 (10.0–12.0) | 6.00 (5.00–7.00) | 0.55 | lower |",
		"| 3 lmtp: y | msgs/s | 100 | – | – | higher |", "roost (1):\n- mixed: file does not exist"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

func TestPOP3Parsing(t *testing.T) {
	r := bufio.NewReader(strings.NewReader("1 120\r\n2 3400\r\n.\r\n"))
	var buf bytes.Buffer
	if _, err := readMultiline(r, &buf); err != nil {
		t.Fatal(err)
	}
	m, err := parseListing(buf.Bytes())
	if err != nil || len(m) != 2 || m[2] != "3400" {
		t.Fatalf("listing %v, %v", m, err)
	}
	r = bufio.NewReader(strings.NewReader("a\r\n..b\r\n.\r\n"))
	buf.Reset()
	if n, err := readMultiline(r, &buf); err != nil || buf.String() != "a\r\n.b\r\n" || n != 7 {
		t.Fatalf("dot-unstuffing gave %q (%d), %v", buf.String(), n, err)
	}
	if _, err := parseStatus([]byte("-ERR [IN-USE] locked")); err == nil {
		t.Fatal("-ERR parsed as success")
	}
	if n, size, err := parseStat("3 1024"); err != nil || n != 3 || size != 1024 {
		t.Fatalf("STAT: %d %d %v", n, size, err)
	}
	if _, err := parseListing([]byte("1 10\r\n1 11\r\n")); err == nil {
		t.Fatal("duplicate message number accepted")
	}
}

// FuzzPOP3Response feeds arbitrary server output to the client's parsers:
// they must return an error or a result, never panic or loop.
func FuzzPOP3Response(f *testing.F) {
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		if line, err := readLine(r); err == nil {
			parseStatus(line)
			parseStat(string(line))
		}
		var buf bytes.Buffer
		readMultiline(r, &buf)
		parseListing(buf.Bytes())
	})
}

// TestStopKillsTheWholeGroup checks that a server's children die with it,
// even ones that ignore SIGTERM.
func TestStopKillsTheWholeGroup(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "child")
	p, err := startProcess(filepath.Join(t.TempDir(), "log"), "sh", "-c",
		`sh -c 'trap "" TERM; echo $$ > `+pidFile+`; while :; do sleep 1; done' & wait`)
	if err != nil {
		t.Fatal(err)
	}
	var child int
	for i := 0; i < 100 && child == 0; i++ {
		time.Sleep(20 * time.Millisecond)
		b, _ := os.ReadFile(pidFile)
		child, _ = strconv.Atoi(strings.TrimSpace(string(b)))
	}
	if child == 0 {
		t.Fatal("child did not start")
	}
	var g procGroup
	g.add(p)
	if pids := g.pids(); len(pids) < 2 {
		t.Fatalf("pids %v: the child is missing", pids)
	}
	g.stop()
	for i := 0; i < 100; i++ {
		if _, err := os.Stat(filepath.Join("/proc", strconv.Itoa(child))); os.IsNotExist(err) {
			return
		}
		b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(child), "stat"))
		if strings.Contains(string(b), ") Z ") {
			return // a zombie waiting for init: dead
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("child %d survived stop", child)
}
