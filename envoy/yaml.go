package envoy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// MarshalYAML renders b as YAML that `envoy -c file.yaml` loads. The output
// is deterministic (keys sorted, two-space indent, snake_case field names) so
// it can be compared with golden files: protojson's own output varies its
// whitespace on purpose, so it is decoded and re-encoded here.
func MarshalYAML(b *bootstrapv3.Bootstrap) ([]byte, error) {
	if b == nil {
		return nil, errors.New("marshal bootstrap: nil bootstrap")
	}
	js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("marshal bootstrap to JSON: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.UseNumber() // keep integers integers (ports, byte limits)
	var tree any
	if err := dec.Decode(&tree); err != nil {
		return nil, fmt.Errorf("decode bootstrap JSON: %w", err)
	}
	var out bytes.Buffer
	enc := yaml.NewEncoder(&out)
	enc.SetIndent(2)
	// yaml sorts map[string]any keys, which gives the stable order.
	if err := enc.Encode(numbers(tree)); err != nil {
		return nil, fmt.Errorf("encode bootstrap YAML: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode bootstrap YAML: %w", err)
	}
	return out.Bytes(), nil
}

// numbers replaces json.Number (a string type, which yaml would quote) with
// int64 or float64 so numbers stay YAML numbers.
func numbers(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			v[k] = numbers(e)
		}
	case []any:
		for i, e := range v {
			v[i] = numbers(e)
		}
	case json.Number:
		if n, err := v.Int64(); err == nil {
			return n
		}
		if f, err := v.Float64(); err == nil {
			return f
		}
		return v.String()
	}
	return v
}
