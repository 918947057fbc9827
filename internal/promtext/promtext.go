// Package promtext reads the samples of a Prometheus text exposition, for
// tests that scrape keyward's /metrics.
package promtext

import (
	"fmt"
	"strconv"
	"strings"
)

// Samples returns the value of every sample in body whose metric name
// starts with prefix ("" for all), keyed by the series as written
// (`name{label="value",…}`). Comments and blank lines are skipped.
func Samples(body, prefix string) (map[string]float64, error) {
	out := map[string]float64{}
	for line := range strings.Lines(body) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") || !strings.HasPrefix(line, prefix) {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			return nil, fmt.Errorf("sample %q: no value", line)
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return nil, fmt.Errorf("sample %q: %w", line, err)
		}
		out[line[:i]] = v
	}
	return out, nil
}
