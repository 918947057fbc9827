package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	defer func(v, c string) { version, commit = v, c }(version, commit)
	for name, tc := range map[string]struct {
		version, commit string
		want            string
	}{
		"unstamped": {version: "dev", commit: "unknown", want: "keyward dev (commit "},
		"stamped":   {version: "v1.2.3", commit: "0123456789abcdef", want: "keyward v1.2.3 (commit 0123456789abcdef, go"},
	} {
		version, commit = tc.version, tc.commit
		for _, args := range [][]string{{"--version"}, {"-version"}, {"version"}} {
			var out, errOut bytes.Buffer
			if err := run(context.Background(), args, &out, &errOut, func(string) string { return "" }); err != nil {
				t.Fatalf("%s: keyward %s: %v\n%s", name, args[0], err, errOut.String())
			}
			if !strings.HasPrefix(out.String(), tc.want) || strings.Count(out.String(), "\n") != 1 {
				t.Errorf("%s: keyward %s printed %q, want a line starting %q", name, args[0], out.String(), tc.want)
			}
		}
	}
	if _, _, err := (&cli{t: t}).runBare("version", "extra"); err == nil {
		t.Error("keyward version extra: no error")
	}
}

// runBare runs a command without -config.
func (c *cli) runBare(args ...string) (stdout, stderr string, err error) {
	var out, errOut bytes.Buffer
	err = run(context.Background(), args, &out, &errOut, func(string) string { return "" })
	return out.String(), errOut.String(), err
}
