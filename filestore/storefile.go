package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The store file is decoded in two steps: its top level by the YAML
// library, with the mappings of records (providers, groups, users,
// identities) kept as nodes, then those mappings one record at a time
// here. The library
// decodes a mapping into a Go map after comparing every key with every
// other, to refuse a key given twice: time quadratic in the number of
// groups and users (5.75 s at 20,000, minutes at 10^5, most of a large
// store's start-up). Here a key given twice is refused just the same —
// a second record of one name would shadow the first — with a Go map of
// the names seen, and each record, a small mapping, is decoded by the
// library, which compares its few keys itself.
//
// The library's strict mode (unknown fields are errors) is its
// Decoder's, and a node decodes without it, so the records' fields are
// checked against their types here (unknownFields); the errors read as
// the library's.

// storeFile is the store file's top level as the YAML library decodes it.
type storeFile struct {
	Providers   yaml.Node        `yaml:"providers"`
	Groups      yaml.Node        `yaml:"groups"`
	Users       yaml.Node        `yaml:"users"`
	Identities  yaml.Node        `yaml:"identities"`
	SigningKeys []SigningKeyData `yaml:"signing_keys"`
}

// errMergeKey reports a merge key (<<) among a mapping's records, which
// only the library's own decoding of the whole mapping resolves.
var errMergeKey = errors.New("merge key among the records")

// parseStoreFile decodes the store file strictly: unknown fields are
// errors, so a typo (disable: true) cannot silently leave a group enabled,
// and so is a record name given twice in one mapping. It reports whether
// the file held a YAML document at all: keyward never writes one without,
// so a file that is empty or only comments was cut short or emptied.
func parseStoreFile(raw []byte) (*Data, bool, error) {
	if d, ok := decodeSections(raw); ok {
		return d, true, nil
	}
	d, err := decodeStoreFile(raw)
	switch {
	case errors.Is(err, io.EOF):
		return &Data{}, false, nil
	case errors.Is(err, errMergeKey):
		// A hand-written file that merges records into a mapping of
		// them: small, since people write it; the library decodes it.
		d, err = decodeWhole(raw)
	}
	switch {
	case err != nil && hasTokensKey(raw):
		// A hint only: the store file from before token files.
		return nil, true, fmt.Errorf("%w (token records now live in the token file beside the store file, one JSON record per line)", err)
	case err != nil:
		return nil, true, err
	}
	return d, true, nil
}

// decodeStoreFile decodes raw in the two steps described above.
func decodeStoreFile(raw []byte) (*Data, error) {
	var top storeFile
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	var errs []string
	if err := dec.Decode(&top); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, err
		}
		// As the library does, report every field that does not fit,
		// those of the records below included.
		errs = te.Errors
	}
	d := &Data{SigningKeys: top.SigningKeys}
	types := fieldSets{}
	var err error
	if d.Providers, err = decodeRecords[ProviderData](&top.Providers, types, &errs); err != nil {
		return nil, err
	}
	if d.Groups, err = decodeRecords[GroupData](&top.Groups, types, &errs); err != nil {
		return nil, err
	}
	if d.Users, err = decodeRecords[UserData](&top.Users, types, &errs); err != nil {
		return nil, err
	}
	if d.Identities, err = decodeRecords[IdentityData](&top.Identities, types, &errs); err != nil {
		return nil, err
	}
	if len(errs) > 0 {
		return nil, &yaml.TypeError{Errors: errs}
	}
	return d, nil
}

// decodeSections decodes a store file laid out as keyward writes it, one
// top-level section (providers, groups, users, identities, signing_keys) after the
// other, each as a document of its own: the library holds a whole
// document's nodes at once, some 200 MiB for 10^5 groups and as many
// users, and one section's are half that. It reports false for any other
// layout, and for any error: decodeStoreFile then decodes the file whole,
// for the same records or the error with the file's line numbers. (A
// section cut where a key only looked like one, inside a quoted string or
// a flow mapping, leaves that one unclosed: an error.)
func decodeSections(raw []byte) (*Data, bool) {
	sections, ok := splitSections(raw)
	if !ok {
		return nil, false
	}
	d := &Data{}
	for _, sec := range sections {
		part, err := decodeStoreFile(sec)
		if err != nil {
			return nil, false
		}
		d.Providers = firstSet(d.Providers, part.Providers)
		d.Groups = firstSet(d.Groups, part.Groups)
		d.Users = firstSet(d.Users, part.Users)
		d.Identities = firstSet(d.Identities, part.Identities)
		if part.SigningKeys != nil {
			d.SigningKeys = part.SigningKeys
		}
	}
	return d, true
}

// firstSet returns a unless it is nil.
func firstSet[M ~map[string]V, V any](a, b M) M {
	if a != nil {
		return a
	}
	return b
}

// topLevel are the store file's top-level keys.
var topLevel = []string{"providers", "groups", "users", "identities", "signing_keys"}

// splitSections cuts raw before each line that starts a top-level key, if
// every line that starts in the first column does (or continues a block
// sequence, or is a comment), each key once.
func splitSections(raw []byte) ([][]byte, bool) {
	if otherBreaks(raw) {
		return nil, false
	}
	var starts []int
	seen := map[string]bool{}
	for off := 0; off < len(raw); {
		line, _, _ := bytes.Cut(raw[off:], []byte("\n"))
		switch {
		case len(line) == 0 || line[0] == ' ' || line[0] == '\t' || line[0] == '\r' || line[0] == '#':
		case line[0] == '-' && (len(line) == 1 || line[1] == ' ' || line[1] == '\t' || line[1] == '\r'):
			if len(starts) == 0 {
				return nil, false
			}
		default:
			key := topKey(line)
			if key == "" || seen[key] {
				return nil, false
			}
			seen[key] = true
			starts = append(starts, off)
		}
		off += len(line) + 1
	}
	if len(starts) == 0 {
		return nil, false
	}
	// Before the first key: comments and blank lines only. They stay in
	// the first section, so that the library reads every byte of the
	// file and refuses there what it refuses whole (a line of a tab and
	// a space, a comment that is not UTF-8: both found by
	// FuzzParseStoreFile when the head was dropped).
	if len(bytes.TrimSpace(stripComments(raw[:starts[0]]))) > 0 {
		return nil, false
	}
	starts[0] = 0
	out := make([][]byte, len(starts))
	for i, start := range starts {
		end := len(raw)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		out[i] = raw[start:end]
	}
	return out, true
}

// otherBreaks reports whether raw breaks a line other than with \n or
// \r\n. The library also starts a line after a lone \r, NEL, LS or PS,
// where a top-level key would hide from splitSections inside the line
// before it (and a second users: pass unseen).
func otherBreaks(raw []byte) bool {
	for rest := raw; ; {
		i := bytes.IndexByte(rest, '\r')
		if i < 0 {
			break
		}
		if i+1 == len(rest) || rest[i+1] != '\n' {
			return true
		}
		rest = rest[i+2:]
	}
	for _, br := range []string{"\u0085", "\u2028", "\u2029"} {
		if bytes.Contains(raw, []byte(br)) {
			return true
		}
	}
	return false
}

// topKey returns the top-level key line starts with, or "".
func topKey(line []byte) string {
	for _, k := range topLevel {
		rest, ok := bytes.CutPrefix(line, []byte(k+":"))
		if ok && (len(rest) == 0 || rest[0] == ' ' || rest[0] == '\t' || rest[0] == '\r') {
			return k
		}
	}
	return ""
}

// stripComments drops the lines of b that are comments.
func stripComments(b []byte) []byte {
	var out []byte
	for line := range bytes.Lines(b) {
		if t := bytes.TrimSpace(line); len(t) > 0 && t[0] != '#' {
			out = append(out, line...)
		}
	}
	return out
}

// decodeWhole decodes raw with the library alone, into Data.
func decodeWhole(raw []byte) (*Data, error) {
	d := &Data{}
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(d); err != nil {
		return nil, err
	}
	return d, nil
}

// decodeRecords decodes a mapping of records by name, in time linear in
// their number, adding what does not fit to errs. It drops each record's
// nodes once decoded, so that the records and the whole tree of nodes
// are not held at once.
func decodeRecords[V any](n *yaml.Node, types fieldSets, errs *[]string) (map[string]*V, error) {
	n = resolveAlias(n)
	switch {
	case n.Kind == 0 || n.ShortTag() == "!!null":
		return nil, nil
	case n.Kind != yaml.MappingNode:
		// Not a mapping: the library says so as it always did.
		var m map[string]*V
		err := n.Decode(&m)
		return nil, typeErrors(err, errs)
	}
	out := make(map[string]*V, len(n.Content)/2)
	// seen holds the line of each key met, as written and as decoded: a
	// key that repeats another either way is refused. The library
	// refuses keys written alike; one that only decodes alike (a and
	// !!binary YQ==) it let overwrite the first.
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.ShortTag() == "!!merge" {
			return nil, errMergeKey
		}
		name, err := keyName(k)
		if err != nil {
			if err := typeErrors(err, errs); err != nil {
				return nil, err
			}
			continue
		}
		if first, dup := seen[k.Value]; dup {
			*errs = append(*errs, fmt.Sprintf("line %d: mapping key %q already defined at line %d", k.Line, k.Value, first))
			continue
		}
		if first, dup := seen[name]; dup && name != k.Value {
			*errs = append(*errs, fmt.Sprintf("line %d: mapping key %q already defined at line %d", k.Line, name, first))
			continue
		}
		seen[k.Value], seen[name] = k.Line, k.Line
		if isNull(k) {
			continue // the library skips a record without a name
		}
		var rec *V
		if err := typeErrors(v.Decode(&rec), errs); err != nil {
			return nil, err
		}
		unknownFields(v, reflect.TypeFor[V](), types, errs)
		out[name] = rec
		n.Content[i], n.Content[i+1] = nil, nil
	}
	return out, nil
}

func isNull(n *yaml.Node) bool { return resolveAlias(n).ShortTag() == "!!null" }

// keyName decodes a record's name as the library decodes a map key into
// a string.
func keyName(k *yaml.Node) (string, error) {
	if k.Kind == yaml.ScalarNode && k.Tag == "!!str" {
		return k.Value, nil // the common case, without a decoder
	}
	var name string
	err := k.Decode(&name)
	return name, err
}

// typeErrors adds the library's type errors to errs; any other error is
// returned.
func typeErrors(err error, errs *[]string) error {
	var te *yaml.TypeError
	if errors.As(err, &te) {
		*errs = append(*errs, te.Errors...)
		return nil
	}
	return err
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// fieldSets holds the YAML field names of each struct type met, and the
// field types, for one decoding.
type fieldSets map[reflect.Type]map[string]reflect.Type

// of returns t's fields by YAML name, as the library names them: the
// tag's name, else the field's name in lower case; inline structs'
// fields are the struct's own.
func (fs fieldSets) of(t reflect.Type) map[string]reflect.Type {
	if m, ok := fs[t]; ok {
		return m
	}
	m := map[string]reflect.Type{}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch {
		case name == "-":
			continue
		case strings.Contains(opts, "inline") && f.Type.Kind() == reflect.Struct:
			for k, v := range fs.of(f.Type) {
				m[k] = v
			}
			continue
		case name == "":
			name = strings.ToLower(f.Name)
		}
		m[name] = f.Type
	}
	fs[t] = m
	return m
}

// unknownFields adds an error to errs for each key of n, a node the
// library decoded into a t, that names no field of the struct it fills,
// as the library's strict mode would.
func unknownFields(n *yaml.Node, t reflect.Type, types fieldSets, errs *[]string) {
	n = resolveAlias(n)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && n.Kind == yaml.MappingNode:
		fields := types.of(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.ShortTag() == "!!merge" {
				// The merged mappings' keys are this struct's.
				for _, m := range mergedMappings(v) {
					unknownFields(m, t, types, errs)
				}
				continue
			}
			if isNull(k) {
				continue // the library skips it
			}
			name, err := keyName(k)
			if err != nil {
				continue // the library reported it
			}
			ft, ok := fields[name]
			if !ok {
				*errs = append(*errs, fmt.Sprintf("line %d: field %s not found in type %s", k.Line, name, t))
				continue
			}
			unknownFields(v, ft, types, errs)
		}
	case (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) && n.Kind == yaml.SequenceNode:
		for _, e := range n.Content {
			unknownFields(e, t.Elem(), types, errs)
		}
	case t.Kind() == reflect.Map && n.Kind == yaml.MappingNode:
		for i := 1; i < len(n.Content); i += 2 {
			unknownFields(n.Content[i], t.Elem(), types, errs)
		}
	}
}

// mergedMappings returns the mappings a merge key's value merges: one, or
// a sequence of them.
func mergedMappings(v *yaml.Node) []*yaml.Node {
	v = resolveAlias(v)
	if v.Kind == yaml.SequenceNode {
		return v.Content
	}
	return []*yaml.Node{v}
}

// hasTokensKey reports whether raw is a YAML mapping with a top-level
// tokens key, as store files from before token files had.
func hasTokensKey(raw []byte) bool {
	var doc yaml.Node
	if yaml.Unmarshal(raw, &doc) != nil || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return false
	}
	top := doc.Content[0].Content
	for i := 0; i+1 < len(top); i += 2 {
		if top[i].Value == "tokens" {
			return true
		}
	}
	return false
}
