package testenv

import (
	"slices"
	"testing"
	"time"
)

// ReportPairedTiming reports the medians of known[i] and unknown[i],
// measured in alternating pairs, their ratio ("unknown/known"), and the
// median of the ratios of each pair ("pair-ratio"), which the load of other
// processes drifting during the run moves less. The auth benchmarks use it
// to show that an unknown user's login costs what a known one's does.
func ReportPairedTiming(b *testing.B, known, unknown []time.Duration) {
	ratios := make([]float64, len(known))
	for i := range known {
		ratios[i] = float64(unknown[i]) / float64(known[i])
	}
	mk, mu := median(known), median(unknown)
	b.ReportMetric(float64(mk.Microseconds()), "known-µs")
	b.ReportMetric(float64(mu.Microseconds()), "unknown-µs")
	b.ReportMetric(float64(mu)/float64(mk), "unknown/known")
	b.ReportMetric(median(ratios), "pair-ratio")
}

func median[T time.Duration | float64](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
