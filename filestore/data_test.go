package filestore

import (
	"testing"
)

// FuzzParseData feeds the store file parser arbitrary input. It must never
// panic, and whatever it accepts must survive the write path: what Update
// marshals is read back, and is still valid.
func FuzzParseData(f *testing.F) {
	seeds := []string{
		"",
		"providers:\n  openai:\n    kind: openai\n    keys: [{id: k1, env: OPENAI_KEY}]\n" +
			"  gw:\n    kind: custom\n    header: X-Key\n    value_template: 'Token {key}'\n    keys: []\n",
		"groups:\n  team: {providers: [openai], models: ['gpt-4o*'], disable_custom_keys: true}\n  off: {disabled: true}\n  empty:\n",
		"users:\n  ann: {role: admin, groups: [team]}\n  bob:\n",
		"tokens:\n  AAAAAAAAAAAAAAAA:\n    user: ann\n    group: team\n    name: laptop\n" +
			"    hash: 0000000000000000000000000000000000000000000000000000000000000000\n" +
			"    created: 2025-01-01T00:00:00Z\n    expires: 2026-01-01T00:00:00.5+02:00\n    revoked: true\n",
		"tokens:\n  x: ~\n",
		"signing_keys:\n  - {id: 1, secret: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=}\n  - {id: 300, secret: x}\n",
		"groups:\n  team:\n    disable: true\n",
		"providers: {a: ~, '': {kind: x}}\n",
		"&a [*a]",
		"groups: !!binary aGVsbG8=\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	empty := func(string) string { return "" }
	f.Fuzz(func(t *testing.T, raw []byte) {
		d, err := parseData(raw)
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
		d2, err := parseData(out)
		if err != nil {
			t.Fatalf("written file does not parse: %v\n%s", err, out)
		}
		if _, err := d2.build(empty); err != nil {
			t.Fatalf("written file does not validate: %v\n%s", err, out)
		}
	})
}
