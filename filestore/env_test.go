package filestore_test

import (
	"maps"
	"regexp"
	"strings"
	"testing"

	"github.com/keyward/keyward/filestore"
)

// secret is what a provider key looks like; no error may contain it.
const secret = "sk-live-0123456789abcdefSECRET"

func TestParseEnv(t *testing.T) {
	tests := map[string]struct {
		in   string
		want map[string]string
	}{
		"empty":              {in: "", want: map[string]string{}},
		"plain":              {in: "A=1\nB=two\n", want: map[string]string{"A": "1", "B": "two"}},
		"no final newline":   {in: "A=1", want: map[string]string{"A": "1"}},
		"crlf":               {in: "A=1\r\nB=2\r\n", want: map[string]string{"A": "1", "B": "2"}},
		"comments and blank": {in: "# keys\n\n   \n  # indented comment\nA=1\n\n", want: map[string]string{"A": "1"}},
		"export prefix":      {in: "export A=1\nexport  B=2\n", want: map[string]string{"A": "1", "B": "2"}},
		"spaces around":      {in: "  A = 1  \n", want: map[string]string{"A": "1"}},
		"empty value":        {in: "A=\nB=''\nC=\"\"\n", want: map[string]string{"A": "", "B": "", "C": ""}},
		"later wins":         {in: "A=1\nA=2\n", want: map[string]string{"A": "2"}},
		"names":              {in: "a=1\n_B=2\nC_3=3\n", want: map[string]string{"a": "1", "_B": "2", "C_3": "3"}},
		"equals in value":    {in: "A=b=c==\n", want: map[string]string{"A": "b=c=="}},
		"base64 value":       {in: "A=c2stbGl2ZQ==\n", want: map[string]string{"A": "c2stbGl2ZQ=="}},
		"inline comment":     {in: "A=value # the key\n", want: map[string]string{"A": "value"}},
		"hash without space": {in: "A=val#ue\n", want: map[string]string{"A": "val#ue"}},
		"single quotes literal": {
			in: `A='a \n "b" \\ # c $D'` + "\n", want: map[string]string{"A": `a \n "b" \\ # c $D`},
		},
		"double quotes escapes": {
			in: `A="line1\nline2 \"q\" back\\slash"` + "\n", want: map[string]string{"A": "line1\nline2 \"q\" back\\slash"},
		},
		"escaped backslash then n": {in: `A="\\n"` + "\n", want: map[string]string{"A": `\n`}},
		"double quotes keep #":     {in: `A="a # b"` + "\n", want: map[string]string{"A": "a # b"}},
		"double quotes keep =":     {in: `A="a=b"` + "\n", want: map[string]string{"A": "a=b"}},
		"quoted then comment":      {in: `A="x" # the key` + "\n", want: map[string]string{"A": "x"}},
		"quoted then #":            {in: `A='x'#c` + "\n", want: map[string]string{"A": "x"}},
		"comment with quotes": {
			in: `A="x" # say "hi"` + "\n" + `B='y' # it's B` + "\n", want: map[string]string{"A": "x", "B": "y"},
		},
		"quoted spaces kept": {in: "A=' x '\n", want: map[string]string{"A": " x "}},
		"other quote inside": {in: `A="it's"` + "\nB='say \"hi\"'\n", want: map[string]string{"A": "it's", "B": `say "hi"`}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := filestore.ParseEnv([]byte(tc.in))
			if err != nil {
				t.Fatalf("ParseEnv(%q) = %v", tc.in, err)
			}
			if !maps.Equal(got, tc.want) {
				t.Errorf("ParseEnv(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseEnvErrors(t *testing.T) {
	tests := map[string]struct {
		in   string
		want string // substring of the error
	}{
		"no equals":           {in: "A=1\n" + secret + "\n", want: "line 2: want NAME=value"},
		"space in name":       {in: "MY KEY=" + secret + "\n", want: "line 1: want NAME=value"},
		"digit first":         {in: "# c\n1KEY=" + secret + "\n", want: "line 2: want NAME=value"},
		"dash in name":        {in: "MY-KEY=" + secret + "\n", want: "line 1: want NAME=value"},
		"empty name":          {in: "=" + secret + "\n", want: "line 1: want NAME=value"},
		"export only":         {in: "export " + secret + "\n", want: "line 1: want NAME=value"},
		"secret as name":      {in: secret + "=1\n", want: "line 1: want NAME=value"},
		"unterminated double": {in: "KEY=\"" + secret + "\n", want: `line 1 (KEY): unterminated " quote`},
		"unterminated single": {in: "\nKEY='" + secret + "\n", want: "line 2 (KEY): unterminated ' quote"},
		"escaped closing":     {in: `KEY="` + secret + `\"` + "\n", want: `line 1 (KEY): unterminated " quote`},
		"text after double":   {in: `KEY="` + secret + `" ` + secret + "\n", want: "line 1 (KEY): text after the closing quote"},
		"text after single":   {in: `KEY='` + secret + `'x` + "\n", want: "line 1 (KEY): text after the closing quote"},
		"second quoted part":  {in: `KEY="` + secret + `" "b"` + "\n", want: "line 1 (KEY): text after the closing quote"},
		"line too long":       {in: "KEY=" + strings.Repeat(secret, 1024*1024/len(secret)+1) + "\n", want: "too long"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := filestore.ParseEnv([]byte(tc.in))
			if err == nil {
				t.Fatalf("ParseEnv succeeded with %q, want an error", got)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) || strings.Contains(err.Error(), "SECRET") {
				t.Errorf("error %q contains the value", err)
			}
		})
	}
}

// envErr is every error ParseEnv may return: a line number, at most a
// variable name (a valid name, never part of a value) and a fixed reason.
var envErr = regexp.MustCompile(`^(line \d+: want NAME=value|` +
	`line \d+ \([A-Za-z_][A-Za-z0-9_]*\): (unterminated ["'] quote|text after the closing quote)|` +
	`bufio.Scanner: token too long)$`)

func FuzzParseEnv(f *testing.F) {
	seeds := []string{
		"",
		"A=1\n# c\n\nexport B='x y'\nC=\"a\\nb\\\"c\\\\\" # d\nD=e=f # g\n",
		"A=\"unterminated\n",
		"A='x' y\n",
		"A=\"x\" # say \"hi\"\n",
		"bad name=1\n",
		"1A=2\n",
		"export\n",
		"A=\"\\\"\n",
		"\r\n\tA\t=\t'\t'\t\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		vars, err := filestore.ParseEnv(data)
		if err != nil {
			if vars != nil {
				t.Errorf("ParseEnv returned vars %q with error %v", vars, err)
			}
			if !envErr.MatchString(err.Error()) {
				t.Errorf("unexpected error text %q: it may carry a value", err)
			}
			return
		}
		for k := range vars {
			if k == "" || strings.ContainsAny(k, "= \t\r\n#'\"") {
				t.Errorf("ParseEnv returned a bad name %q", k)
			}
		}
	})
}
