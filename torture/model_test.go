package torture

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
)

// allowed is the set of counts a message may have in a folder: an
// acknowledged operation makes it exact, an interrupted one leaves both.
type allowed uint8

const (
	mayBeAbsent  allowed = 1
	mayBePresent allowed = 2
	exactlyOne           = mayBePresent
	zeroOrOne            = mayBeAbsent | mayBePresent
)

func (a allowed) permits(n int) bool {
	return n == 0 && a&mayBeAbsent != 0 || n == 1 && a&mayBePresent != 0
}

// model is what the clients were told: for each message in each folder,
// which counts the Maildir may show. Absent keys must have count 0.
// busy ids are being worked on by one client; no other client picks them.
type model struct {
	mu    sync.Mutex
	want  map[key]allowed
	busy  map[string]bool
	pairs [][2]key // interrupted MOVEs: at least one side must hold it
	seq   int
	rng   *rand.Rand
	stats map[string]int
}

func newModel(seed uint64) *model {
	return &model{want: map[key]allowed{}, busy: map[string]bool{}, stats: map[string]int{},
		rng: rand.New(rand.NewPCG(seed, seed^0x5eed))}
}

func (m *model) intn(n int) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.rng.IntN(n)
}

// newID returns a fresh message id, marked busy.
func (m *model) newID(prefix string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	id := fmt.Sprintf("%s%06d", prefix, m.seq)
	m.busy[id] = true
	return id
}

func (m *model) count(stat string) {
	m.mu.Lock()
	m.stats[stat]++
	m.mu.Unlock()
}

// set records what may now be in a folder; mayBeAbsent (surely gone)
// removes the key.
func (m *model) set(k key, a allowed) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a == mayBeAbsent {
		delete(m.want, k)
		return
	}
	m.want[k] = a
}

func (m *model) release(id string) {
	m.mu.Lock()
	delete(m.busy, id)
	m.mu.Unlock()
}

func (m *model) addPair(a, b key) {
	m.mu.Lock()
	m.pairs = append(m.pairs, [2]key{a, b})
	m.mu.Unlock()
}

// pick marks busy and returns one id of candidates that is surely (and
// only) in folder and not busy, and that is absent from dest if dest is
// not "". ok is false when there is none.
func (m *model) pick(folder string, candidates []string, dest string) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ok []string
	for _, id := range candidates {
		if m.busy[id] || m.want[key{folder, id}] != exactlyOne {
			continue
		}
		if _, there := m.want[key{dest, id}]; dest != "" && there {
			continue
		}
		ok = append(ok, id)
	}
	if len(ok) == 0 {
		return "", false
	}
	id := ok[m.rng.IntN(len(ok))]
	m.busy[id] = true
	return id, true
}

// inFolder counts the messages surely in folder.
func (m *model) inFolder(folder string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for k, a := range m.want {
		if k.folder == folder && a == exactlyOne {
			n++
		}
	}
	return n
}

// check compares the model with counts seen on disk and returns every
// violation; then it settles the model to what was seen (nothing is in
// flight while it runs).
func (m *model) check(seen map[key]int) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var bad []string
	for k, a := range m.want {
		if n := seen[k]; !a.permits(n) {
			what := "lost"
			if n > 1 {
				what = "duplicated"
			} else if n == 1 {
				what = "present after an acknowledged removal"
			}
			bad = append(bad, fmt.Sprintf("%s in %s: %s (count %d, allowed %s)", k.id, k.folder, what, n, a))
		}
	}
	for k, n := range seen {
		if _, ok := m.want[k]; !ok && n > 0 {
			bad = append(bad, fmt.Sprintf("%s in %s: present %d times but never acknowledged there nor in flight", k.id, k.folder, n))
		}
	}
	for _, p := range m.pairs {
		switch {
		case seen[p[0]]+seen[p[1]] == 0:
			bad = append(bad, fmt.Sprintf("%s lost by an interrupted MOVE from %s to %s", p[0].id, p[0].folder, p[1].folder))
		case seen[p[0]] == 1 && seen[p[1]] == 1:
			m.stats["interrupted MOVE left both copies"]++
		}
	}
	m.pairs = nil
	for k, a := range m.want {
		if a == zeroOrOne {
			if seen[k] == 1 {
				m.stats["interrupted op: message present"]++
			} else {
				m.stats["interrupted op: message absent"]++
			}
		}
	}
	m.want = map[key]allowed{}
	for k, n := range seen {
		if n > 0 {
			m.want[k] = exactlyOne
		}
	}
	sort.Strings(bad)
	return bad
}

func (a allowed) String() string {
	var s []string
	if a&mayBeAbsent != 0 {
		s = append(s, "0")
	}
	if a&mayBePresent != 0 {
		s = append(s, "1")
	}
	return "{" + strings.Join(s, ",") + "}"
}

func (m *model) statsString() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ks []string
	for k := range m.stats {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	var b strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&b, "  %-45s %d\n", k, m.stats[k])
	}
	return b.String()
}
