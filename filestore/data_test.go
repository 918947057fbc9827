package filestore

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/keyward/keyward/field"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/token"
)

const zeroHash = "0000000000000000000000000000000000000000000000000000000000000000"

// tokenRecord is a valid token file line for id, without its newline.
func tokenRecord(id string) string {
	return `{"id":"` + id + `","user":"ann","group":"team","hash":"` + zeroHash + `","created":"2025-01-01T00:00:00Z"}`
}

const header = `{"format":"keyward-tokens/1"}`

// scanTokens reads a whole token file as a fresh load does, and returns
// its records, how far it read, and where it stopped.
func scanTokens(raw []byte) (map[string]TokenData, int, logScan, error) {
	var sc logScan
	b := newIndexBuilder()
	n, err := sc.scan(raw, b)
	if err != nil {
		return nil, n, sc, err
	}
	return recordsOf(b.x), n, sc, nil
}

// recordsOf returns every record of x.
func recordsOf(x *tokenIndex) map[string]TokenData {
	out := map[string]TokenData{}
	x.each(func(id token.RawID, e tokenEntry) bool {
		out[id.String()] = x.data(id, e)
		return true
	})
	return out
}

func TestScanTokens(t *testing.T) {
	a, b := tokenRecord("AAAAAAAAAAAAAAAA"), tokenRecord("BBBBBBBBBBBBBBBB")
	revokedA := strings.Replace(a, `"user"`, `"revoked":true,"user"`, 1)
	tests := map[string]struct {
		in      string
		want    []string // ids
		revoked bool     // A is revoked
		rest    int      // bytes left for the next read
	}{
		"empty":                  {in: ""},
		"header only":            {in: header + "\n"},
		"only blank lines":       {in: "\n  \n\t\r\n\n"},
		"one":                    {in: a + "\n", want: []string{"AAAAAAAAAAAAAAAA"}},
		"header and two":         {in: header + "\n" + a + "\n" + b + "\n", want: []string{"AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB"}},
		"blank lines":            {in: "\n" + a + "\n\n   \n" + b + "\n\n", want: []string{"AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB"}},
		"crlf and spaces":        {in: "  " + a + " \r\n\t" + b + "\r\n", want: []string{"AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB"}},
		"a later line wins":      {in: a + "\n" + revokedA + "\n", want: []string{"AAAAAAAAAAAAAAAA"}, revoked: true},
		"deleted":                {in: a + "\n" + b + "\n" + `{"id":"AAAAAAAAAAAAAAAA","deleted":true}` + "\n", want: []string{"BBBBBBBBBBBBBBBB"}},
		"deleted, then again":    {in: a + "\n" + `{"id":"AAAAAAAAAAAAAAAA","deleted":true}` + "\n" + a + "\n", want: []string{"AAAAAAAAAAAAAAAA"}},
		"deleting what is not":   {in: `{"id":"AAAAAAAAAAAAAAAA","deleted":true}` + "\n"},
		"batch":                  {in: `{"batch":2}` + "\n" + a + "\n\n" + b + "\n", want: []string{"AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB"}},
		"unfinished batch waits": {in: a + "\n" + `{"batch":2}` + "\n" + b + "\n", want: []string{"AAAAAAAAAAAAAAAA"}, rest: len(`{"batch":2}` + "\n" + b + "\n")},
		"batch cut in a line":    {in: `{"batch":2}` + "\n" + b + "\n" + a[:20], rest: len(`{"batch":2}` + "\n" + b + "\n" + a[:20])},
		// A hand-written last line without a newline counts; it is read
		// again next time.
		"no final newline": {in: a + "\n" + b, want: []string{"AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB"}, rest: len(b)},
		// A write in progress or cut short waits.
		"half a line":   {in: a + "\n" + b[:30], want: []string{"AAAAAAAAAAAAAAAA"}, rest: 30},
		"half a header": {in: header[:10], rest: 10},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, n, _, err := scanTokens([]byte(tc.in))
			if err != nil {
				t.Fatalf("scan(%q) = %v", tc.in, err)
			}
			if rest := len(tc.in) - n; rest != tc.rest {
				t.Errorf("scan left %d bytes, want %d", rest, tc.rest)
			}
			if len(got) != len(tc.want) {
				t.Errorf("scan gave %d tokens, want %d", len(got), len(tc.want))
			}
			for _, id := range tc.want {
				td, ok := got[id]
				if !ok || td.User != "ann" || td.Group != "team" || td.Hash != zeroHash ||
					!td.Created.Equal(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) || td.Expires != nil {
					t.Errorf("token %s = %+v", id, td)
				}
				if id == "AAAAAAAAAAAAAAAA" && td.Revoked != tc.revoked {
					t.Errorf("token A revoked = %v, want %v", td.Revoked, tc.revoked)
				}
			}
		})
	}

	// Every field set.
	full := `{"id":"AAAAAAAAAAAAAAAA","user":"a","group":"g","name":"n","hash":"` + zeroHash +
		`","created":"2025-01-01T00:00:00Z","expires":"2026-01-01T00:00:00.5+02:00","revoked":true}` + "\n"
	got, _, _, err := scanTokens([]byte(full))
	if err != nil {
		t.Fatal(err)
	}
	td := got["AAAAAAAAAAAAAAAA"]
	if td.User != "a" || td.Group != "g" || td.Name != "n" || !td.Revoked || td.Expires == nil ||
		!td.Expires.Equal(time.Date(2025, 12, 31, 22, 0, 0, 5e8, time.UTC)) {
		t.Errorf("full record = %+v", td)
	}
}

func TestScanTokensErrors(t *testing.T) {
	a, b := tokenRecord("AAAAAAAAAAAAAAAA"), tokenRecord("BBBBBBBBBBBBBBBB")
	tests := map[string]struct {
		in    string
		want  string // substring of the error
		field string // the first field it names, if a record's
		name  bool   // a bad name: record.ErrInvalidName
	}{
		"bad json":              {in: a + "\n{\"id\":\n", want: "token file line 2: unexpected EOF"},
		"bad json after blanks": {in: "\n\n" + a + "\n\n" + `{"id":"x",}` + "\n", want: "token file line 5: invalid character '}'"},
		"not an object":         {in: "[1]\n", want: "token file line 1: json: cannot unmarshal array"},
		"yaml":                  {in: "AAAAAAAAAAAAAAAA:\n  user: a\n", want: "token file line 1: invalid character 'A'"},
		"unknown field":         {in: a + "\n" + `{"id":"BBBBBBBBBBBBBBBB","expiry":"2025-01-01T00:00:00Z"}` + "\n", want: `token file line 2: json: unknown field "expiry"`},
		"wrong type":            {in: `{"id":"AAAAAAAAAAAAAAAA","revoked":"yes"}`, want: "token file line 1: json: cannot unmarshal string"},
		"bad time":              {in: `{"id":"AAAAAAAAAAAAAAAA","created":"2025-01-01"}`, want: "token file line 1: parsing time"},
		"two records on a line": {in: a + " " + b + "\n", want: "token file line 1: more than one record"},
		"two records no space":  {in: b + "\n" + a + b + "\n", want: "token file line 2: more than one record"},
		"trailing brace":        {in: a + "}\n", want: "token file line 1: text after the record"},
		"trailing bracket":      {in: "\n" + a + "]\n", want: "token file line 2: text after the record"},
		"trailing comma":        {in: a + ",\n" + b + "\n", want: "token file line 1:"},
		"trailing text":         {in: a + " x\n", want: "token file line 1:"},
		"record over two lines": {in: "{\n" + a[1:] + "\n", want: "token file line 1: unexpected EOF"},
		"bad record":            {in: a + "\n" + tokenRecord("nope") + "\n", want: "token file line 2: ", field: "tokens.nope", name: true},
		"null":                  {in: "null\n", want: "token file line 1: ", field: "tokens..group"},
		"header not first":      {in: a + "\n" + header + "\n", want: "token file line 2: a header line may only come first"},
		"another file's header": {in: `{"format":"keyward-credentials/1"}` + "\n", want: `token file line 1: format "keyward-credentials/1": not a token file`},
		"header with a record":  {in: `{"format":"keyward-tokens/1","id":"AAAAAAAAAAAAAAAA"}` + "\n", want: "token file line 1: a header line"},
		"deleted with data":     {in: `{"id":"AAAAAAAAAAAAAAAA","deleted":true,"user":"a"}` + "\n", want: "token file line 1: a deleted line holds a token id and nothing else"},
		"deleted bad id":        {in: `{"id":"nope","deleted":true}` + "\n", want: "token file line 1: a deleted line"},
		"negative batch":        {in: `{"batch":-1}` + "\n", want: "token file line 1: a batch of -1 lines"},
		"batch of batches":      {in: `{"batch":1}` + "\n" + `{"batch":1}` + "\n" + a + "\n", want: "token file line 2: a batch holds token lines only"},
		"bad line in a batch":   {in: a + "\n" + `{"batch":2}` + "\n" + b + "\n\n" + tokenRecord("bad") + "\n", want: "token file line 5: ", field: "tokens.bad", name: true},
		"bad unterminated line": {in: a + "\n" + tokenRecord("bad"), want: "token file line 2: ", field: "tokens.bad", name: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, _, _, err := scanTokens([]byte(tc.in))
			if err == nil {
				t.Fatalf("scan(%q) = %d tokens, want an error", tc.in, len(got))
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			var fe *field.Error
			if tc.field != "" && (!errors.As(err, &fe) || fe.Path != tc.field) {
				t.Errorf("error %q: field %+v, want %s", err, fe, tc.field)
			}
			if tc.name && !errors.Is(err, record.ErrInvalidName) {
				t.Errorf("error %q is not record.ErrInvalidName", err)
			}
		})
	}
}

func TestParseStoreFileRejectsTokensKey(t *testing.T) {
	const hint = "token records now live in the token file"
	for name, tc := range map[string]struct {
		yaml string
		hint bool
	}{
		"tokens key":         {yaml: "tokens:\n  AAAAAAAAAAAAAAAA: {user: a, group: g}\n", hint: true},
		"null tokens key":    {yaml: "groups: {}\ntokens:\n", hint: true},
		"another key":        {yaml: "token:\n  AAAAAAAAAAAAAAAA: {user: a, group: g}\n"},
		"tokens in a group":  {yaml: "groups:\n  g:\n    tokens: []\n"},
		"tokens as a value":  {yaml: "users: tokens\n"},
		"tokens in a list":   {yaml: "- tokens\n"},
		"tokens in bad yaml": {yaml: "tokens: [\n"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := parseStoreFile([]byte(tc.yaml))
			if err == nil || strings.Contains(err.Error(), hint) != tc.hint {
				t.Errorf("parseStoreFile = %v, want the token file hint: %v", err, tc.hint)
			}
		})
	}
}

// TestEncodeTokenFileOrder checks that a token file written whole lists
// tokens oldest first, then by id, after its header.
func TestEncodeTokenFileOrder(t *testing.T) {
	day := func(n int) time.Time { return time.Date(2025, 1, n, 0, 0, 0, 0, time.UTC) }
	records := []tokenChange{
		{"CCCCCCCCCCCCCCCC", &TokenData{User: "a", Group: "g", Hash: zeroHash, Created: day(1)}},
		{"AAAAAAAAAAAAAAAA", &TokenData{User: "a", Group: "g", Hash: zeroHash, Created: day(3)}},
		{"BBBBBBBBBBBBBBBB", &TokenData{User: "a", Group: "g", Hash: zeroHash, Created: day(2)}},
		{"DDDDDDDDDDDDDDDD", &TokenData{User: "a", Group: "g", Hash: zeroHash, Created: day(2)}},
	}
	out, err := encodeTokenFile(records)
	if err != nil {
		t.Fatal(err)
	}
	first, rest, _ := bytes.Cut(out, []byte("\n"))
	if string(first) != header {
		t.Errorf("first line %q, want the header %s", first, header)
	}
	var ids []string
	for line := range bytes.Lines(rest) {
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
	if empty, err := encodeTokenFile(nil); err != nil || string(empty) != header+"\n" {
		t.Errorf("encodeTokenFile of no tokens = %q, %v; want the header alone", empty, err)
	}
}

// TestTokenIndex checks that token records survive the compact index,
// that a derived index leaves its base as it was, and that the index gives
// the garbage collector nothing to scan.
func TestTokenIndex(t *testing.T) {
	var lines strings.Builder
	ids := []string{"AAAAAAAAAAAAAAAA", "BBBBBBBBBBBBBBBB", "CCCCCCCCCCCCCCCC"}
	for _, id := range ids {
		lines.WriteString(tokenRecord(id) + "\n")
	}
	far := `{"id":"DDDDDDDDDDDDDDDD","user":"bo","group":"g2","name":"ci runner","hash":"` + strings.Repeat("ab", 32) +
		`","created":"2026-01-02T03:04:05.000000006Z","expires":"9999-12-31T23:59:59.999999999Z","revoked":true,"last4":"wxyz","replaced_by":"AAAAAAAAAAAAAAAA"}`
	lines.WriteString(far + "\n")
	var sc logScan
	b := newIndexBuilder()
	if _, err := sc.scan([]byte(lines.String()), b); err != nil {
		t.Fatal(err)
	}
	x := b.x
	want, _, _, err := scanTokens([]byte(lines.String()))
	if err != nil {
		t.Fatal(err)
	}
	for id, w := range want {
		got, ok := x.get(id)
		if !ok {
			t.Fatalf("token %s missing", id)
		}
		if got.ID != id || got.User != w.User || got.Group != w.Group || got.Name != w.Name || got.Last4 != w.Last4 || got.ReplacedBy != w.ReplacedBy ||
			!got.Created.Equal(w.Created) || got.Revoked != w.Revoked || HashString(got.Hash) != w.Hash {
			t.Errorf("token %s: got %+v, want %+v", id, got, w)
		}
		if (w.Expires == nil) != got.Expires.IsZero() || w.Expires != nil && !got.Expires.Equal(*w.Expires) {
			t.Errorf("token %s: expires %v, want %v", id, got.Expires, w.Expires)
		}
	}
	if d := want["DDDDDDDDDDDDDDDD"]; d.Expires == nil || d.Expires.Year() != 9999 || d.Created.Nanosecond() != 6 {
		t.Errorf("times past 2262 or to the nanosecond do not survive: %+v", d)
	}
	if _, ok := x.get("EEEEEEEEEEEEEEEE"); ok {
		t.Error("found a token that is not there")
	}
	if _, ok := x.get("not-an-id"); ok {
		t.Error("found a malformed id")
	}
	if len(x.all()) != 4 || x.len() != 4 {
		t.Errorf("all() = %d records, len() = %d", len(x.all()), x.len())
	}
	if len(x.names) != 4 { // users ann, bo; groups team, g2
		t.Errorf("names %q: want each user and group once", x.names)
	}

	// A derived index changes; its base does not.
	d := deriveIndexBuilder(x, b.intern)
	a, _ := token.ParseID("AAAAAAAAAAAAAAAA")
	d.remove(a)
	e, _ := token.ParseID("EEEEEEEEEEEEEEEE")
	d.set(e, &TokenData{User: "cy", Group: "team", Hash: zeroHash})
	if _, ok := d.x.get("AAAAAAAAAAAAAAAA"); ok || d.x.len() != 4 {
		t.Errorf("derived index: A still there or %d records", d.x.len())
	}
	if got, ok := d.x.get("EEEEEEEEEEEEEEEE"); !ok || got.User != "cy" {
		t.Errorf("derived index: E = %+v, %v", got, ok)
	}
	if !maps.EqualFunc(recordsOf(x), want, func(a, b TokenData) bool { return sameToken(&a, &b) }) {
		t.Error("deriving an index changed its base")
	}
	for _, typ := range []reflect.Type{reflect.TypeFor[token.RawID](), reflect.TypeFor[tokenEntry]()} {
		if hasPointers(typ) {
			t.Errorf("%v holds pointers: the GC would scan every token", typ)
		}
	}
}

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

// tokenFileErr is every error a token file scan may return.
var tokenFileErr = regexp.MustCompile(`^token file line (\d+): `)

// FuzzScanTokens feeds the token file reader arbitrary input. It must never
// panic; its errors must give a line the input has; what it accepts, read
// in two parts (as a serving process reads what was appended since its
// last look) must give the records it gives read whole; and a file written
// whole from those records must read back the same, and write the same.
func FuzzScanTokens(f *testing.F) {
	a := tokenRecord("AAAAAAAAAAAAAAAA")
	seeds := []string{
		"",
		"\n\n \r\n",
		header + "\n" + a + "\n",
		"\n" + a + "\n\n" + tokenRecord("BBBBBBBBBBBBBBBB"),
		`{"id":"AAAAAAAAAAAAAAAA","user":"a","group":"g","name":"n","hash":"` + zeroHash +
			`","created":"2025-01-01T00:00:00Z","expires":"2026-01-01T00:00:00.5+02:00","revoked":true}` + "\n",
		a + "\n" + strings.Replace(a, `"user"`, `"revoked":true,"user"`, 1) + "\n",
		a + "\n" + `{"id":"AAAAAAAAAAAAAAAA","deleted":true}` + "\n",
		`{"batch":2}` + "\n" + a + "\n" + tokenRecord("BBBBBBBBBBBBBBBB") + "\n",
		`{"batch":2}` + "\n" + a + "\n",
		a + a + "\n",
		a + "}\n",
		a + "]",
		`{"id":"x","expiry":1}`,
		`{"id":"x","user":"\u2028<&>\ud800"}`,
		"null\n",
		"{}\n",
		`{"ID":"x","Revoked":true}`,
		`{"id":"AAAAAAAAAAAAAAAA","user":"a","group":"g","hash":"` + zeroHash + `","created":"9999-12-31T23:59:59-01:00"}` + "\n",
		"[1,2]\n{",
	}
	for i, s := range seeds {
		f.Add([]byte(s), uint16(i*7))
	}
	f.Fuzz(func(t *testing.T, raw []byte, cut uint16) {
		whole, n, _, err := scanTokens(raw)
		// Read in chunks of any size, as a load reads the file: the same
		// records or the same error, and the same place to go on from.
		var l tokenLog
		cb := newIndexBuilder()
		if _, cerr := l.read(bytes.NewReader(raw), cb, 1+int(cut)%61); fmt.Sprint(cerr) != fmt.Sprint(err) {
			t.Fatalf("read in chunks of %d: %v; read whole: %v", 1+int(cut)%61, cerr, err)
		}
		if err == nil {
			if got := recordsOf(cb.x); !maps.EqualFunc(got, whole, func(a, b TokenData) bool { return sameToken(&a, &b) }) {
				t.Fatalf("read in chunks: %v\nread whole: %v", got, whole)
			}
			if l.off != int64(n) || l.size != int64(len(raw)) || !bytes.Equal(l.tail, keepTail(raw[:n])) {
				t.Fatalf("read in chunks: off %d, size %d; read whole: %d, %d; tails equal: %v", l.off, l.size, n, len(raw), bytes.Equal(l.tail, keepTail(raw[:n])))
			}
		}
		if err != nil {
			m := tokenFileErr.FindStringSubmatch(err.Error())
			if m == nil {
				t.Fatalf("error %q does not give the line", err)
			}
			no, _ := strconv.Atoi(m[1])
			if lines := bytes.Count(raw, []byte("\n")) + 1; no < 1 || no > lines {
				t.Errorf("error %q names line %d of %d", err, no, lines)
			}
			return
		}
		if n > len(raw) || n > 0 && raw[n-1] != '\n' {
			t.Fatalf("scan stopped at %d, not after a line", n)
		}
		// Read in two parts, the first cut anywhere.
		var sc logScan
		b := newIndexBuilder()
		first := raw[:int(cut)%(len(raw)+1)]
		m, err := sc.scan(first, b)
		if err != nil {
			t.Fatalf("the first part fails where the whole does not: %v", err)
		}
		d := deriveIndexBuilder(b.x, b.intern)
		if _, err := sc.scan(raw[m:], d); err != nil {
			t.Fatalf("the rest fails where the whole does not: %v", err)
		}
		if got := recordsOf(d.x); !maps.EqualFunc(got, whole, func(a, b TokenData) bool { return sameToken(&a, &b) }) {
			t.Fatalf("read in two parts: %v\nread whole: %v", got, whole)
		}
		var all []tokenChange
		for id, td := range whole {
			all = append(all, tokenChange{id, &td})
		}
		out, err := encodeTokenFile(all)
		if err != nil {
			t.Fatalf("encodeTokenFile of read tokens: %v", err)
		}
		back, _, _, err := scanTokens(out)
		if err != nil {
			t.Fatalf("written token file does not read: %v\n%s", err, out)
		}
		if !maps.EqualFunc(back, whole, func(a, b TokenData) bool { return sameToken(&a, &b) }) {
			t.Fatalf("written token file reads back otherwise:\n%s", out)
		}
		var again []tokenChange
		for id, td := range back {
			again = append(again, tokenChange{id, &td})
		}
		if out2, err := encodeTokenFile(again); err != nil || !bytes.Equal(out2, out) {
			t.Fatalf("token file round trip changed it: %v\n%s\n%s", err, out, out2)
		}
	})
}

// TestStoreFileSections checks that a store file as keyward writes it is
// read a section at a time (what keeps the YAML library's nodes for 10^5
// groups and as many users from being held at once), and that a layout
// that cannot be cut so is read whole, to the same records.
func TestStoreFileSections(t *testing.T) {
	written, err := (&Data{
		Providers:   map[string]*ProviderData{"openai": {Kind: record.KindOpenAI, Keys: []KeyData{{ID: "k", Env: "K"}}}},
		Groups:      map[string]*GroupData{"team": {Models: []string{"gpt-4o*"}}},
		Users:       map[string]*UserData{"ann": {Groups: []string{"team"}}},
		SigningKeys: []SigningKeyData{{ID: 1, Secret: "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}},
	}).marshal()
	if err != nil {
		t.Fatal(err)
	}
	tests := map[string]struct {
		raw      string
		sections int // 0: read whole
	}{
		"as keyward writes it":         {string(written), 4},
		"alias across sections":        {"groups:\n  g: &x {}\nusers:\n  u: *x\n", 0},
		"key inside a flow mapping":    {"groups: {a: {},\nusers: {}}\n", 0},
		"key inside a quoted string":   {"groups: \"x\nusers: y\"\n", 0},
		"unknown top-level key":        {"groups: {}\ntokens: {}\n", 0},
		"document marker":              {"---\ngroups: {}\n", 0},
		"sequence in the first column": {"signing_keys:\n- {id: 1, secret: x}\ngroups: {}\n", 2},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := 0
			if secs, ok := splitSections([]byte(tc.raw)); ok {
				if _, read := decodeSections([]byte(tc.raw)); read {
					got = len(secs)
				}
			}
			if got != tc.sections {
				t.Errorf("read as %d sections (0: whole), want %d", got, tc.sections)
			}
			d, _, err := parseStoreFile([]byte(tc.raw))
			sameAsLibrary(t, []byte(tc.raw), d, err)
		})
	}
}

// sameAsLibrary fails unless parseStoreFile's result, d or err, is the
// YAML library's own strict decoding of raw into Data: the same records,
// or an error for both. parseStoreFile may refuse what the library
// takes in one case: two keys of a mapping of records that differ as
// written but name the same record ("a" and !!binary YQ==), which the
// library let the second overwrite.
func sameAsLibrary(t *testing.T, raw []byte, d *Data, err error) {
	t.Helper()
	want, werr := decodeWhole(raw)
	if errors.Is(werr, io.EOF) {
		want, werr = &Data{}, nil
	}
	switch {
	case werr != nil && err == nil:
		t.Fatalf("parseStoreFile takes what the library refuses (%v):\n%s", werr, raw)
	case werr == nil && err != nil && !strings.Contains(err.Error(), "already defined"):
		t.Fatalf("parseStoreFile refuses (%v) what the library takes:\n%s", err, raw)
	case werr == nil && err == nil && !reflect.DeepEqual(d, want):
		t.Fatalf("parseStoreFile: %+v\nthe library: %+v\n%s", d, want, raw)
	}
}

// FuzzParseStoreFile feeds the store file parser arbitrary input. It must
// never panic, and whatever it accepts must survive the write path: what
// Update marshals is read back, is still valid, and marshals to the same
// bytes (else Update would rewrite unchanged files).
func FuzzParseStoreFile(f *testing.F) {
	seeds := []string{
		"",
		"# only a comment\n",
		"providers:\n  openai:\n    kind: openai\n    keys: [{id: k1, env: OPENAI_KEY}]\n" +
			"  gw:\n    kind: custom\n    header: X-Key\n    value_template: 'Token {key}'\n    keys: []\n",
		"groups:\n  team: {providers: [openai], models: ['gpt-4o*'], disable_custom_keys: true, requests_per_minute: 60}\n  off: {disabled: true}\n  empty:\n",
		"users:\n  ann: {role: admin, groups: [team]}\n  bob:\n",
		"tokens:\n  AAAAAAAAAAAAAAAA:\n    user: ann\n    group: team\n    hash: " + zeroHash + "\n",
		"signing_keys:\n  - {id: 1, secret: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=}\n  - {id: 300, secret: x}\n",
		"signing_keys:\n  - {id: 1, secret: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=}\n",
		"groups:\n  team:\n    disable: true\n",
		"providers: {a: ~, '': {kind: x}}\n",
		"&a [*a]",
		"groups: !!binary aGVsbG8=\n",
		// Several sections, read one at a time when they can be.
		"# c\nproviders: {}\ngroups:\n  team: {}\nusers:\n  ann: {groups: [team]}\n",
		"signing_keys:\n- {id: 1, secret: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=}\ngroups:\n  g: {}\n",
		"groups:\n  g: &x {}\nusers:\n  u: *x\n",
		"groups: {a: {},\nusers: {}}\n",
		"groups: \"x\nusers: y\"\n",
		"users: {}\nusers: {}\n",
		"  # indented comment\ngroups:\n  g:\n    disabled: true\nproviders:\n",
		// Line breaks the library knows and a reader of \n would not:
		// a second users: must not pass.
		"groups:\n\rusers: {a: {}}\nusers: {}\n",
		"groups: {}\u2028users: {a: {}}\nusers: {}\n",
		"groups: {}\u0085users: {a: {}}\r\nusers: {}\r\n",
		"# c\r\ngroups:\r\n  g: {}\r\nusers: {}\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	empty := func(string) string { return "" }
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, _, err := parseStoreFile(raw)
		sameAsLibrary(t, raw, d, err)
		if err != nil {
			return
		}
		if d == nil {
			t.Fatal("parseStoreFile returned nil data and nil error")
		}
		if _, err := d.buildPolicy(empty); err != nil {
			return
		}
		out, err := d.marshal()
		if err != nil {
			t.Fatalf("marshal of valid data: %v", err)
		}
		d2, doc, err := parseStoreFile(out)
		if err != nil || !doc {
			t.Fatalf("written file does not parse (document %v): %v\n%s", doc, err, out)
		}
		if _, err := d2.buildPolicy(empty); err != nil {
			t.Fatalf("written file does not validate: %v\n%s", err, out)
		}
		out2, err := d2.marshal()
		if err != nil || !bytes.Equal(out2, out) {
			t.Fatalf("store file round trip changed it: %v\n%s\n%s", err, out, out2)
		}
	})
}
