package bench

import (
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"
)

// Message text is generated from small word and name pools with a seeded
// PCG, so the same seed gives byte-identical Maildirs on every machine.
// Lines end in LF, as Postfix writes them.

var (
	firstNames = []string{"Anna", "Ben", "Carla", "David", "Elif", "Farid", "Greta", "Hiro",
		"Ines", "Jonas", "Kerstin", "Luis", "Mara", "Nils", "Olga", "Pavel", "Quentin", "Rosa",
		"Sven", "Tanja", "Uwe", "Vera", "Wei", "Xenia", "Yusuf", "Zoe", "Jürgen", "Zoë"}
	lastNames = []string{"Albrecht", "Becker", "Costa", "Dietrich", "Engel", "Fischer",
		"Garcia", "Hoffmann", "Ivanova", "Jansen", "Keller", "Lange", "Müller", "Nowak",
		"Okafor", "Peters", "Quast", "Richter", "Schmidt", "Tanaka", "Ullrich", "Vogel",
		"Weber", "Yilmaz", "Zimmermann"}
	domains = []string{"uni-example.edu", "cs.uni-example.edu", "library.uni-example.edu",
		"example.org", "partner-lab.example", "mail.example.net", "lists.example.org",
		"students.uni-example.edu", "conference.example", "vendor.example.com"}
	words = strings.Fields(`the of and to in a is that for it as was with be by on not
		he this are or his from at which but have an they you were her she there one all
		we their been has would when if so no will can more about them some could into
		time only other new these also two may then first any like now such our over
		people very after most made years where through before should must between
		meeting lecture exam schedule deadline thesis seminar grant budget report draft
		server account password library course student office committee minutes agenda
		review paper submission invoice room building project data results figure table
		question answer please thanks regards attached update reminder tomorrow monday
		friday semester faculty department research colleague proposal
		Prüfung Übung Vorlesung Raum Termin Gebühr straße`)
	subjects = []string{"Meeting on %s", "Re: %s", "Fwd: %s", "Question about %s",
		"%s – updated schedule", "Reminder: %s", "[cs-staff] %s", "Re: Re: %s",
		"AW: %s", "Invitation: %s", "%s (draft)", "Your %s request"}
	topics = []string{"the exam schedule", "room booking", "thesis draft", "grant report",
		"server maintenance", "library account", "course registration", "budget 2026",
		"committee minutes", "conference travel", "lab safety training", "Übungsblatt 7",
		"password reset", "seminar talk", "printer on floor 3"}
)

// message is one generated message and the Maildir name it gets.
type message struct {
	Date  time.Time
	Flags string // Maildir info flags ("S", "FS", …); "" = unread, stored in new/
	Body  []byte // LF line endings
}

// msgGen writes realistic small messages for one mailbox.
type msgGen struct {
	rng    *rand.Rand
	user   string
	start  time.Time
	needle string // planted in the Subject of every NeedleEvery-th message
}

func newMsgGen(seed uint64, user, mailbox string) *msgGen {
	h := uint64(14695981039346656037)
	for _, c := range []byte(user + "/" + mailbox) {
		h = (h ^ uint64(c)) * 1099511628211
	}
	return &msgGen{
		rng:   rand.New(rand.NewPCG(seed, h)),
		user:  user,
		start: time.Date(2024, 1, 8, 7, 0, 0, 0, time.UTC),
	}
}

func (g *msgGen) pick(list []string) string { return list[g.rng.IntN(len(list))] }

func (g *msgGen) person() (name, addr string) {
	f, l := g.pick(firstNames), g.pick(lastNames)
	local := strings.ToLower(asciiFold(f) + "." + asciiFold(l))
	return f + " " + l, local + "@" + g.pick(domains)
}

// asciiFold turns the few non-ASCII letters in the name pools into ASCII
// for address local parts.
func asciiFold(s string) string {
	return strings.NewReplacer("ü", "ue", "ö", "oe", "ä", "ae", "ë", "e", "ß", "ss").Replace(s)
}

// encodeHeader returns s, as an RFC 2047 encoded word when it is not ASCII.
func encodeHeader(s string) string {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return "=?UTF-8?B?" + base64.StdEncoding.EncodeToString([]byte(s)) + "?="
		}
	}
	return s
}

// next returns message number i of the mailbox; id goes into X-Bench-Id and
// the Message-ID, so a client can check that what it got is what was
// written.
func (g *msgGen) next(i int, id string, bodyBytes int) message {
	date := g.start.Add(time.Duration(i)*7*time.Minute + time.Duration(g.rng.IntN(300))*time.Second)
	fromName, fromAddr := g.person()
	subject := fmt.Sprintf(g.pick(subjects), g.pick(topics))
	if g.needle != "" && i%needleEvery == 0 {
		subject += " " + g.needle
	}
	var b strings.Builder
	b.Grow(bodyBytes + 1200)
	fmt.Fprintf(&b, "Return-Path: <%s>\n", fromAddr)
	fmt.Fprintf(&b, "X-Original-To: %s@bench.test\nDelivered-To: %s@bench.test\n", g.user, g.user)
	fmt.Fprintf(&b, "Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\n\tby mx.bench.test (Postfix) with ESMTPS id %X\n\tfor <%s@bench.test>; %s\n",
		g.rng.IntN(4), g.pick(domains), g.rng.IntN(4), "example.net", 1+g.rng.IntN(250),
		g.rng.Uint32(), g.user, date.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Date: %s\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "From: %s <%s>\n", encodeHeader(fromName), fromAddr)
	fmt.Fprintf(&b, "To: %s@bench.test\n", g.user)
	if g.rng.IntN(4) == 0 {
		n, a := g.person()
		fmt.Fprintf(&b, "Cc: %s <%s>\n", encodeHeader(n), a)
	}
	fmt.Fprintf(&b, "Subject: %s\n", encodeHeader(subject))
	fmt.Fprintf(&b, "Message-ID: <%s.%08x@%s>\n", id, g.rng.Uint32(), g.pick(domains))
	if g.rng.IntN(3) == 0 {
		fmt.Fprintf(&b, "In-Reply-To: <%08x.%d@%s>\n", g.rng.Uint32(), i, g.pick(domains))
	}
	b.WriteString("MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8; format=flowed\nContent-Transfer-Encoding: 8bit\n")
	fmt.Fprintf(&b, "X-Bench-Id: %s\n\n", id)
	g.text(&b, bodyBytes)
	flags := ""
	switch r := g.rng.IntN(20); {
	case r < 4: // unread
	case r == 4:
		flags = "FS"
	case r == 5:
		flags = "RS"
	default:
		flags = "S"
	}
	return message{Date: date, Flags: flags, Body: []byte(b.String())}
}

// needleEvery plants the search needle in one message of this many.
const needleEvery = 1000

// text writes about n bytes of word-wrapped prose.
func (g *msgGen) text(b *strings.Builder, n int) {
	line := 0
	for written := 0; written < n; {
		w := g.pick(words)
		if line+len(w)+1 > 72 {
			b.WriteByte('\n')
			written++
			line = 0
			if g.rng.IntN(6) == 0 {
				b.WriteByte('\n')
				written++
			}
		} else if line > 0 {
			b.WriteByte(' ')
			written++
			line++
		}
		b.WriteString(w)
		written += len(w)
		line += len(w)
	}
	b.WriteString("\n")
}

// smallSize draws a body size: most messages are a few KB, a few are long.
func (g *msgGen) smallSize() int {
	switch r := g.rng.IntN(100); {
	case r < 60:
		return 300 + g.rng.IntN(1500)
	case r < 95:
		return 1800 + g.rng.IntN(4000)
	default:
		return 6000 + g.rng.IntN(20000)
	}
}

// large returns a multipart/mixed message of about size bytes: a text part,
// a multipart/alternative and base64 attachments.
func (g *msgGen) large(i int, id string, size int) message {
	date := g.start.Add(time.Duration(i) * 3 * time.Hour)
	fromName, fromAddr := g.person()
	var b strings.Builder
	b.Grow(size + 4096)
	outer, alt := fmt.Sprintf("=_outer_%08x", g.rng.Uint32()), fmt.Sprintf("=_alt_%08x", g.rng.Uint32())
	fmt.Fprintf(&b, "Return-Path: <%s>\nDate: %s\nFrom: %s <%s>\nTo: %s@bench.test\n", fromAddr,
		date.Format(time.RFC1123Z), encodeHeader(fromName), fromAddr, g.user)
	fmt.Fprintf(&b, "Subject: %s\nMessage-ID: <%s.%08x@%s>\nMIME-Version: 1.0\n",
		encodeHeader(fmt.Sprintf("Files for %s", g.pick(topics))), id, g.rng.Uint32(), g.pick(domains))
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\nX-Bench-Id: %s\n\nThis is a multi-part message in MIME format.\n", outer, id)
	fmt.Fprintf(&b, "--%s\nContent-Type: multipart/alternative; boundary=\"%s\"\n\n", outer, alt)
	fmt.Fprintf(&b, "--%s\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n", alt)
	g.text(&b, 1500)
	fmt.Fprintf(&b, "--%s\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n<html><body><p>\n", alt)
	g.text(&b, 2000)
	fmt.Fprintf(&b, "</p></body></html>\n--%s--\n", alt)
	types := []string{"application/pdf", "image/jpeg", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "application/zip"}
	parts := 1 + g.rng.IntN(3)
	raw := make([]byte, 57)
	for p := 0; p < parts; p++ {
		fmt.Fprintf(&b, "--%s\nContent-Type: %s; name=\"attachment-%d\"\nContent-Disposition: attachment; filename=\"attachment-%d\"\nContent-Transfer-Encoding: base64\n\n",
			outer, g.pick(types), p, p)
		for n := (size / parts) / 78; n > 0; n-- {
			for k := range raw {
				raw[k] = byte(g.rng.Uint32())
			}
			b.WriteString(base64.StdEncoding.EncodeToString(raw))
			b.WriteByte('\n')
		}
	}
	fmt.Fprintf(&b, "--%s--\n", outer)
	return message{Date: date, Flags: "S", Body: []byte(b.String())}
}
