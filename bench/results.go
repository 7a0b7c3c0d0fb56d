package bench

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"
)

// Results collects one value per row, server and repetition, and the
// failures seen on the way.
type Results struct {
	mu       sync.Mutex
	rows     []*row
	byName   map[string]*row
	failures map[string][]string // server -> messages
	notes    []string            // what was skipped and why
	peakKB   map[string]int64    // server -> peak summed RSS
	idlePSS  map[string]int64    // server -> summed PSS with the most idle clients
}

type row struct {
	Name   string // "1 big: UID FETCH 1:* (FLAGS)"
	Unit   string // "s", "ms", "msgs/s", "KiB"
	Higher bool   // higher values are better
	vals   map[string][]float64
}

func newResults() *Results {
	return &Results{byName: map[string]*row{}, failures: map[string][]string{}, peakKB: map[string]int64{}, idlePSS: map[string]int64{}}
}

// Add records one value for a row (rows keep the order they first appear in).
func (r *Results) Add(server, name, unit string, higher bool, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rw := r.byName[name]
	if rw == nil {
		rw = &row{Name: name, Unit: unit, Higher: higher, vals: map[string][]float64{}}
		r.byName[name] = rw
		r.rows = append(r.rows, rw)
	}
	rw.vals[server] = append(rw.vals[server], v)
}

// AddDuration records a time, in milliseconds so a row never mixes units.
func (r *Results) AddDuration(server, name string, d time.Duration) {
	r.Add(server, name, "ms", false, float64(d)/float64(time.Millisecond))
}

// Fail records a failure or a wrong answer; it is printed with the table.
func (r *Results) Fail(server, what string, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failures[server] = append(r.failures[server], fmt.Sprintf("%s: %v", what, err))
}

// Note records something the reader must know, such as a skipped step.
func (r *Results) Note(server, msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.notes = append(r.notes, server+": "+msg)
}

// Failures returns every failure recorded for server.
func (r *Results) Failures(server string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.failures[server])
}

func (r *Results) peak(server string, kb int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.peakKB[server] = max(r.peakKB[server], kb)
}

func (r *Results) idlePeak(server string, pssKB int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.idlePSS[server] = max(r.idlePSS[server], pssKB)
}

// RowCount is the number of rows with at least one value.
func (r *Results) RowCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.rows)
}

// summary is a row's median and range for one server.
type summary struct {
	n           int
	med, lo, hi float64
}

func summarize(v []float64) (summary, bool) {
	if len(v) == 0 {
		return summary{}, false
	}
	s := slices.Clone(v)
	sort.Float64s(s)
	return summary{n: len(s), med: median(s), lo: s[0], hi: s[len(s)-1]}, true
}

// median of sorted values.
func median(s []float64) float64 {
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// percentile of sorted durations, nearest rank.
func percentile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	return s[min(max(k, 0), len(s)-1)]
}

// num prints v with three significant digits.
func num(v float64) string {
	switch a := math.Abs(v); {
	case a == 0:
		return "0"
	case a >= 1000:
		return fmt.Sprintf("%.0f", v)
	case a >= 100:
		return fmt.Sprintf("%.0f", v)
	case a >= 10:
		return fmt.Sprintf("%.1f", v)
	case a >= 1:
		return fmt.Sprintf("%.2f", v)
	default:
		return fmt.Sprintf("%.3g", v)
	}
}

func (s summary) String() string {
	if s.n == 1 {
		return num(s.med)
	}
	return fmt.Sprintf("%s (%s–%s)", num(s.med), num(s.lo), num(s.hi))
}

// behindBy is the ratio past which a row counts as a gap: below it the
// difference is within this machine's run-to-run noise.
const behindBy = 1.1

// Meta describes the run for the report's header.
type Meta struct {
	Date     time.Time
	Command  string
	Machine  string
	Versions []string
	Data     DataSpec
	Options  string
}

// Markdown renders the table: medians with min–max per server, and the
// Roost/Dovecot ratio of the medians.
func (r *Results) Markdown(m Meta, servers []string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b strings.Builder
	fmt.Fprintf(&b, "# Roost vs Dovecot, %s\n\n", m.Date.UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "Command: `%s`\n\n", m.Command)
	fmt.Fprintf(&b, "- Machine: %s\n", m.Machine)
	for _, v := range m.Versions {
		fmt.Fprintf(&b, "- %s\n", v)
	}
	fmt.Fprintf(&b, "- Data: seed %d; big INBOX %d messages; %d users × %d messages in %d folders; %d large MIME messages up to %d KB\n",
		m.Data.Seed, m.Data.BigMessages, m.Data.Users, smallTotal(), len(smallFolders), m.Data.LargeMessages, m.Data.LargeMaxKB)
	fmt.Fprintf(&b, "- Run: %s\n\n", m.Options)
	b.WriteString("Each cell is the median over repetitions, with min–max. The servers ran one at a time, alternating, each on its own copy of the data. Ratio = Roost/Dovecot of the medians; the last column says which direction is better.\n\n")
	has := func(s string) bool { return slices.Contains(servers, s) }
	b.WriteString("| workload | unit |")
	for _, s := range servers {
		fmt.Fprintf(&b, " %s |", s)
	}
	if has("roost") && has("dovecot") {
		b.WriteString(" Roost/Dovecot |")
	}
	b.WriteString(" better |\n|---|---|")
	for range servers {
		b.WriteString("---:|")
	}
	if has("roost") && has("dovecot") {
		b.WriteString("---:|")
	}
	b.WriteString("---|\n")
	// Rows appear grouped by workload number, in the order first seen.
	rows := slices.Clone(r.rows)
	slices.SortStableFunc(rows, func(a, b *row) int { return strings.Compare(a.Name[:1], b.Name[:1]) })
	var behind []string
	for _, rw := range rows {
		fmt.Fprintf(&b, "| %s | %s |", rw.Name, rw.Unit)
		sums := map[string]summary{}
		for _, s := range servers {
			sm, ok := summarize(rw.vals[s])
			if !ok {
				b.WriteString(" – |")
				continue
			}
			sums[s] = sm
			fmt.Fprintf(&b, " %s |", sm)
		}
		if has("roost") && has("dovecot") {
			rs, ok1 := sums["roost"]
			ds, ok2 := sums["dovecot"]
			if ok1 && ok2 && ds.med != 0 {
				ratio := rs.med / ds.med
				fmt.Fprintf(&b, " %.2f |", ratio)
				if (rw.Higher && ratio < 1/behindBy) || (!rw.Higher && ratio > behindBy) {
					behind = append(behind, fmt.Sprintf("- %s: Roost %s, Dovecot %s %s (%.2f×)", rw.Name, num(rs.med), num(ds.med), rw.Unit, ratio))
				}
			} else {
				b.WriteString(" – |")
			}
		}
		if rw.Higher {
			b.WriteString(" higher |\n")
		} else {
			b.WriteString(" lower |\n")
		}
	}
	if has("roost") && has("dovecot") {
		fmt.Fprintf(&b, "\n## Where Roost is behind\n\nRows whose median is more than %.0f%% worse than Dovecot's:\n\n", (behindBy-1)*100)
		if len(behind) == 0 {
			b.WriteString("None.\n")
		}
		for _, l := range behind {
			b.WriteString(l + "\n")
		}
	}
	b.WriteString("\n## Peak memory\n\nPeak RSS is the summed RSS of all the server's processes, sampled every 250 ms over the whole run; " +
		"it counts shared pages (libraries, Dovecot's mapped indexes) once per process. PSS splits shared pages between the processes " +
		"that map them, so its sum is the memory the server really holds; it is taken with the most idle clients connected.\n\n" +
		"| server | peak RSS | PSS with idle clients |\n|---|---:|---:|\n")
	mib := func(kb int64) string {
		if kb == 0 {
			return "–"
		}
		return fmt.Sprintf("%.1f MiB", float64(kb)/1024)
	}
	for _, s := range servers {
		fmt.Fprintf(&b, "| %s | %s | %s |\n", s, mib(r.peakKB[s]), mib(r.idlePSS[s]))
	}
	if len(r.notes) > 0 {
		b.WriteString("\n## Notes\n\n")
		for _, n := range r.notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
	}
	b.WriteString("\n## Failures and wrong answers\n\n")
	anyFail := false
	for _, s := range servers {
		f := r.failures[s]
		if len(f) == 0 {
			continue
		}
		anyFail = true
		fmt.Fprintf(&b, "%s (%d):\n", s, len(f))
		for i, msg := range f {
			if i == 20 {
				fmt.Fprintf(&b, "- … and %d more\n", len(f)-20)
				break
			}
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(msg, "\n", " "))
		}
		b.WriteString("\n")
	}
	if !anyFail {
		b.WriteString("None: every response was checked and right.\n")
	}
	return b.String()
}

func smallTotal() int {
	n := 0
	for _, f := range smallFolders {
		n += f.Count
	}
	return n
}
