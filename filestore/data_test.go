package filestore

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/token"
)

const zeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// tokenRecord is a valid token file line for id.
func tokenRecord(id string) string {
	return `{"id":"` + id + `","user":"ann","group":"team","hash":"` + zeroHash + `","created":"2025-01-01T00:00:00Z"}`
}

func TestParseTokens(t *testing.T) {
	a, b := tokenRecord("AAAAAAAAAAAAAAAA"), tokenRecord("BBBBBBBBBBBBBBBB")
	tests := map[string]struct {
		in   string
		want []string // ids
	}{
		"empty":            {in: ""},
		"only blank lines": {in: "\n  \n\t\r\n\n"},
		"one":              {in: a + "\n", want: []string{"AAAAAAAAAAAAAAAA"}},
		"no final newline": {in: a + "\n" + b, want: []string{"AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB"}},
		"blank lines":      {in: "\n" + a + "\n\n   \n" + b + "\n\n", want: []string{"AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB"}},
		"crlf and spaces":  {in: "  " + a + " \r\n\t" + b + "\r\n", want: []string{"AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseTokens([]byte(tc.in))
			if err != nil {
				t.Fatalf("parseTokens(%q) = %v", tc.in, err)
			}
			if len(got) != len(tc.want) {
				t.Errorf("parseTokens gave %d tokens, want %d", len(got), len(tc.want))
			}
			for _, id := range tc.want {
				td := got[id]
				if td == nil || td.User != "ann" || td.Group != "team" || td.Hash != zeroHash ||
					!td.Created.Equal(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) || td.Expires != nil || td.Revoked {
					t.Errorf("token %s = %+v", id, td)
				}
			}
		})
	}

	// Every field set.
	full := `{"id":"AAAAAAAAAAAAAAAA","user":"a","group":"g","name":"n","hash":"` + zeroHash +
		`","created":"2025-01-01T00:00:00Z","expires":"2026-01-01T00:00:00.5+02:00","revoked":true}`
	got, err := parseTokens([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	td := got["AAAAAAAAAAAAAAAA"]
	if td == nil || td.User != "a" || td.Group != "g" || td.Name != "n" || !td.Revoked || td.Expires == nil ||
		!td.Expires.Equal(time.Date(2025, 12, 31, 22, 0, 0, 5e8, time.UTC)) {
		t.Errorf("full record = %+v", td)
	}
}

func TestParseTokensErrors(t *testing.T) {
	a, b := tokenRecord("AAAAAAAAAAAAAAAA"), tokenRecord("BBBBBBBBBBBBBBBB")
	tests := map[string]struct {
		in   string
		want string // substring of the error
	}{
		"bad json":              {in: a + "\n{\"id\":\n", want: "token file line 2: unexpected EOF"},
		"bad json after blanks": {in: "\n\n" + a + "\n\n" + `{"id":"x",}` + "\n", want: "token file line 5: invalid character '}'"},
		"not an object":         {in: "[1]\n", want: "token file line 1: json: cannot unmarshal array"},
		"yaml":                  {in: "AAAAAAAAAAAAAAAA:\n  user: a\n", want: "token file line 1: invalid character 'A'"},
		"unknown field":         {in: a + "\n" + `{"id":"BBBBBBBBBBBBBBBB","expiry":"2025-01-01T00:00:00Z"}` + "\n", want: `token file line 2: json: unknown field "expiry"`},
		"wrong type":            {in: `{"id":"AAAAAAAAAAAAAAAA","revoked":"yes"}`, want: "token file line 1: json: cannot unmarshal string"},
		"bad time":              {in: `{"id":"AAAAAAAAAAAAAAAA","created":"2025-01-01"}`, want: "token file line 1: parsing time"},
		"duplicate id":          {in: a + "\n" + b + "\n\n" + a + "\n", want: `token file line 4: token "AAAAAAAAAAAAAAAA" listed twice`},
		"two records on a line": {in: a + " " + b + "\n", want: "token file line 1: more than one record"},
		"two records no space":  {in: b + "\n" + a + b + "\n", want: "token file line 2: more than one record"},
		"trailing brace":        {in: a + "}\n", want: "token file line 1: text after the record"},
		"trailing bracket":      {in: "\n" + a + "]\n", want: "token file line 2: text after the record"},
		"trailing comma":        {in: a + ",\n" + b + "\n", want: "token file line 1:"},
		"trailing text":         {in: a + " x\n", want: "token file line 1:"},
		"record over two lines": {in: "{\n" + a[1:] + "\n", want: "token file line 1: unexpected EOF"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := parseTokens([]byte(tc.in))
			if err == nil {
				t.Fatalf("parseTokens(%q) = %d tokens, want an error", tc.in, len(got))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestParseDataRejectsTokensKey(t *testing.T) {
	_, err := parseData([]byte("tokens:\n  AAAAAAAAAAAAAAAA: {user: a, group: g}\n"), nil)
	if err == nil || !strings.Contains(err.Error(), "field tokens not found") {
		t.Errorf("parseData with a tokens key = %v, want an unknown field error", err)
	}
}

// TestMarshalTokensOrder checks that the token file lists tokens oldest
// first, then by id, so that a new token is one appended line.
func TestMarshalTokensOrder(t *testing.T) {
	day := func(n int) time.Time { return time.Date(2025, 1, n, 0, 0, 0, 0, time.UTC) }
	d := &Data{Tokens: map[string]*TokenData{
		"CCCCCCCCCCCCCCCC": {User: "a", Group: "g", Hash: zeroHash, Created: day(1)},
		"AAAAAAAAAAAAAAAA": {User: "a", Group: "g", Hash: zeroHash, Created: day(3)},
		"BBBBBBBBBBBBBBBB": {User: "a", Group: "g", Hash: zeroHash, Created: day(2)},
		"DDDDDDDDDDDDDDDD": {User: "a", Group: "g", Hash: zeroHash, Created: day(2)},
	}}
	out, err := d.marshalTokens()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for line := range bytes.Lines(out) {
		var l tokenLine
		if err := json.Unmarshal(line, &l); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		ids = append(ids, l.ID)
	}
	want := []string{"CCCCCCCCCCCCCCCC", "BBBBBBBBBBBBBBBB", "DDDDDDDDDDDDDDDD", "AAAAAAAAAAAAAAAA"}
	if strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Errorf("token file order = %v, want %v", ids, want)
	}
	if empty, err := (&Data{}).marshalTokens(); err != nil || len(empty) != 0 {
		t.Errorf("marshalTokens of no tokens = %q, %v; want nothing", empty, err)
	}
}

// TestTokenTable checks that token records survive the compact table and
// that the table gives the garbage collector nothing to scan.
func TestTokenTable(t *testing.T) {
	var lines strings.Builder
	ids := []string{"AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB", "CCCCCCCCCCCCCCCC"}
	for _, id := range ids {
		lines.WriteString(tokenRecord(id) + "\n")
	}
	lines.WriteString(`{"id":"DDDDDDDDDDDDDDDD","user":"bo","group":"g2","name":"ci runner","hash":"` + strings.Repeat("ab", 32) +
		`","created":"2026-01-02T03:04:05.000000006Z","expires":"2027-01-01T00:00:00Z","revoked":true}` + "\n")
	d, err := parseData(nil, []byte(lines.String()))
	if err != nil {
		t.Fatal(err)
	}
	s, err := d.build(func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	for id, want := range d.Tokens {
		got, ok := s.tokens.get(id)
		if !ok {
			t.Fatalf("token %s missing", id)
		}
		if got.ID != id || got.User != want.User || got.Group != want.Group || got.Name != want.Name ||
			!got.Created.Equal(want.Created) || got.Revoked != want.Revoked || hexString(got.Hash) != want.Hash {
			t.Errorf("token %s: got %+v, want %+v", id, got, want)
		}
		if (want.Expires == nil) != got.Expires.IsZero() || want.Expires != nil && !got.Expires.Equal(*want.Expires) {
			t.Errorf("token %s: expires %v, want %v", id, got.Expires, want.Expires)
		}
	}
	if _, ok := s.tokens.get("EEEEEEEEEEEEEEEE"); ok {
		t.Error("found a token that is not there")
	}
	if _, ok := s.tokens.get("not-an-id"); ok {
		t.Error("found a malformed id")
	}
	if len(s.tokens.all()) != 4 {
		t.Errorf("all() = %d records", len(s.tokens.all()))
	}
	if len(s.tokens.names) != 4 { // users ann, bo; groups team, g2
		t.Errorf("names %q: want each user and group once", s.tokens.names)
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[token.RawID](), reflect.TypeFor[tokenEntry]()} {
		if hasPointers(typ) {
			t.Errorf("%v holds pointers: the GC would scan every token", typ)
		}
	}
}

func hexString(h [32]byte) string { return HashString(h) }

func hasPointers(t reflect.Type) bool {
	switch t.Kind() {
	case reflect.Array:
		return hasPointers(t.Elem())
	case reflect.Struct:
		for i := range t.NumField() {
			if hasPointers(t.Field(i).Type) {
				return true
			}
		}
		return false
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return false
	}
	return true
}

// tokenFileErr is every error parseTokens may return.
var tokenFileErr = regexp.MustCompile(`^token file line (\d+): `)

// FuzzParseTokens feeds the token file parser arbitrary input. It must never
// panic, its errors must give a line the input has, and whatever it accepts
// must be one JSON object on each non-blank line and survive a round trip
// through marshalTokens unchanged.
func FuzzParseTokens(f *testing.F) {
	a := tokenRecord("AAAAAAAAAAAAAAAA")
	seeds := []string{
		"",
		"\n\n \r\n",
		a + "\n",
		"\n" + a + "\n\n" + tokenRecord("BBBBBBBBBBBBBBBB"),
		`{"id":"AAAAAAAAAAAAAAAA","user":"a","group":"g","name":"n","hash":"` + zeroHash +
			`","created":"2025-01-01T00:00:00Z","expires":"2026-01-01T00:00:00.5+02:00","revoked":true}` + "\n",
		a + "\n" + a + "\n",
		a + a + "\n",
		a + "}\n",
		a + "]",
		`{"id":"x","expiry":1}`,
		`{"id":"x","user":"\u2028<&>\ud800"}`,
		"null\n",
		"{}\n",
		`{"ID":"x","Revoked":true}`,
		`{"id":"x","created":"9999-12-31T23:59:59-01:00"}`,
		"[1,2]\n{",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		tokens, err := parseTokens(raw)
		if err != nil {
			if tokens != nil {
				t.Errorf("parseTokens returned tokens with error %v", err)
			}
			m := tokenFileErr.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("error %q does not give the line", err)
			}
			n, _ := strconv.Atoi(m[1])
			if lines := bytes.Count(raw, []byte("\n")) + 1; n < 1 || n > lines {
				t.Errorf("error %q names line %d of %d", err, n, lines)
			}
			return
		}
		records := 0
		for line := range bytes.Lines(raw) {
			line = bytes.TrimSpace(line)
			if len(line) == 0 {
				continue
			}
			records++
			if !json.Valid(line) || line[0] != '{' && !bytes.Equal(line, []byte("null")) {
				t.Errorf("accepted line %q is not one JSON object", line)
			}
		}
		if len(tokens) != records {
			t.Errorf("parseTokens gave %d tokens for %d records", len(tokens), records)
		}
		d := &Data{Tokens: tokens}
		out, err := d.marshalTokens()
		if err != nil {
			// Times that JSON cannot hold (years past 9999 once in UTC)
			// cannot come from a parsed file in their own zone.
			t.Fatalf("marshalTokens of parsed tokens: %v", err)
		}
		back, err := parseTokens(out)
		if err != nil {
			t.Fatalf("written token file does not parse: %v\n%s", err, out)
		}
		again, err := (&Data{Tokens: back}).marshalTokens()
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("token file round trip changed it: %v\n%s\n%s", err, out, again)
		}
	})
}

// FuzzParseData feeds the store file and token file parser arbitrary input.
// It must never panic, and whatever it accepts must survive the write path:
// what Update marshals is read back, is still valid, and marshals to the
// same bytes (else Update would rewrite unchanged files).
func FuzzParseData(f *testing.F) {
	seeds := []struct{ yaml, tokens string }{
		{"", ""},
		{"providers:\n  openai:\n    kind: openai\n    keys: [{id: k1, env: OPENAI_KEY}]\n" +
			"  gw:\n    kind: custom\n    header: X-Key\n    value_template: 'Token {key}'\n    keys: []\n", ""},
		{"groups:\n  team: {providers: [openai], models: ['gpt-4o*'], disable_custom_keys: true, requests_per_minute: 60}\n  off: {disabled: true}\n  empty:\n", ""},
		{"users:\n  ann: {role: admin, groups: [team]}\n  bob:\n", tokenRecord("AAAAAAAAAAAAAAAA") + "\n"},
		{"", `{"id":"AAAAAAAAAAAAAAAA","user":"ann","group":"team","name":"laptop","hash":"` + zeroHash +
			`","created":"2025-01-01T00:00:00Z","expires":"2026-01-01T00:00:00.5+02:00","revoked":true}` + "\n"},
		{"tokens:\n  AAAAAAAAAAAAAAAA:\n    user: ann\n    group: team\n    hash: " + zeroHash + "\n", ""},
		{"", "null\n"},
		{"", tokenRecord("short") + "\n"},
		{"", tokenRecord("AAAAAAAAAAAAAAAA") + "\n" + tokenRecord("AAAAAAAAAAAAAAAA") + "\n"},
		{"signing_keys:\n  - {id: 1, secret: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=}\n  - {id: 300, secret: x}\n", ""},
		{"signing_keys:\n  - {id: 1, secret: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=}\n", tokenRecord("AAAAAAAAAAAAAAAA")},
		{"groups:\n  team:\n    disable: true\n", ""},
		{"providers: {a: ~, '': {kind: x}}\n", ""},
		{"&a [*a]", ""},
		{"groups: !!binary aGVsbG8=\n", ""},
	}
	for _, s := range seeds {
		f.Add([]byte(s.yaml), []byte(s.tokens))
	}
	empty := func(string) string { return "" }
	f.Fuzz(func(t *testing.T, raw, tokens []byte) {
		d, err := parseData(raw, tokens)
		if err != nil {
			return
		}
		if d == nil {
			t.Fatal("parseData returned nil data and nil error")
		}
		if _, err := d.build(empty); err != nil {
			return
		}
		out, err := d.marshal()
		if err != nil {
			t.Fatalf("marshal of valid data: %v", err)
		}
		outTokens, err := d.marshalTokens()
		if err != nil {
			t.Fatalf("marshalTokens of valid data: %v", err)
		}
		d2, err := parseData(out, outTokens)
		if err != nil {
			t.Fatalf("written files do not parse: %v\n%s\n%s", err, out, outTokens)
		}
		if _, err := d2.build(empty); err != nil {
			t.Fatalf("written files do not validate: %v\n%s\n%s", err, out, outTokens)
		}
		if len(d2.Tokens) != len(d.Tokens) {
			t.Fatalf("round trip kept %d of %d tokens", len(d2.Tokens), len(d.Tokens))
		}
		out2, err := d2.marshal()
		if err != nil || !bytes.Equal(out2, out) {
			t.Fatalf("store file round trip changed it: %v\n%s\n%s", err, out, out2)
		}
		outTokens2, err := d2.marshalTokens()
		if err != nil || !bytes.Equal(outTokens2, outTokens) {
			t.Fatalf("token file round trip changed it: %v\n%s\n%s", err, outTokens, outTokens2)
		}
	})
}
