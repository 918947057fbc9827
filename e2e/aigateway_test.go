package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	filelogv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/keyward/keyward/authz"
	"github.com/keyward/keyward/envoy"
)

// nomapPrefix is the second route to the openai provider that has no
// metadata→header mapping: whatever reaches the provider there came from
// keyward's header mutations alone.
const nomapPrefix = "/nomap"

// TestAIGatewayMetadata checks the contract of key_delivery: metadata
// with the real Envoy. Envoy AI Gateway cannot run here, so its consumer
// of the metadata is emulated the way its credentialOverride
// fromDynamicMetadata reads it: the openai route sets Authorization:
// Bearer from %DYNAMIC_METADATA(envoy.filters.http.ext_authz:x-aigw-api-key)%
// (route-level request_headers_to_add, applied by the router after
// ext_authz). A second route to the same provider lacks that mapping.
// anthropic stays in the default header mode. Envoy logs the ext_authz
// metadata of every request to a file, which the test reads. The ext_authz
// filter has the name Envoy Gateway gives it.
func TestAIGatewayMetadata(t *testing.T) {
	accessLog := filepath.Join(t.TempDir(), "access.log")
	s := newStack(t, stackOptions{
		extra: "key_delivery:\n  openai: metadata\n",
		envoy: func(s *stack, _, _ string) []byte {
			return aiGatewayBootstrap(t, []byte(s.kw("envoy-config")), accessLog)
		},
	})
	tok := s.token("alice", "eng", "-name", "aigw")
	secrets := []string{tok, tok[19:], openaiKey, anthropicKey, geminiKey, azureKey}

	// provider checks the last upstream request: header carries want
	// (nothing when want is ""), and no header, query or body carries the
	// client's token or, unless in header, any provider key.
	provider := func(t *testing.T, header, want string) {
		t.Helper()
		req, ok := s.provider.Last()
		if !ok {
			t.Fatal("the provider received nothing")
		}
		if got := req.Header.Get(header); got != want {
			t.Errorf("provider saw %s of %d chars, want %d", header, len(got), len(want))
		}
		if req.Header.Get("x-keyward-user") != "alice" {
			t.Errorf("identity header x-keyward-user = %q", req.Header.Get("x-keyward-user"))
		}
		for name, values := range req.Header {
			for _, v := range values {
				if strings.Contains(v, tok[3:]) {
					t.Errorf("provider saw the client's token in %s", name)
				}
				if strings.EqualFold(name, header) {
					continue
				}
				assertNoSecrets(t, "provider header "+name, v, openaiKey, anthropicKey)
			}
		}
		assertNoSecrets(t, "provider query and body", req.RawQuery+string(req.Body), tok[3:], openaiKey, anthropicKey)
	}

	for _, mode := range []string{"openai", "openai-stream"} {
		t.Run("metadata mapped "+mode, func(t *testing.T) {
			if r := s.pythonSDK(t, mode, tok); !r.OK || r.Text == "" {
				t.Fatalf("SDK call failed: %+v", r)
			}
			provider(t, "authorization", "Bearer "+openaiKey)
		})
	}
	t.Run("metadata without the mapping", func(t *testing.T) {
		// The same provider, the same keyward answer: no key at all
		// reaches the provider (the fake one answers regardless), so
		// the key above came through the metadata only.
		if r := s.pythonSDKAt(t, s.envoyURL+nomapPrefix, "openai", tok); !r.OK {
			t.Fatalf("SDK call failed: %+v", r)
		}
		provider(t, "authorization", "")
	})
	t.Run("header mode", func(t *testing.T) {
		if r := s.pythonSDK(t, "anthropic", tok); !r.OK || r.Text == "" {
			t.Fatalf("SDK call failed: %+v", r)
		}
		provider(t, "x-api-key", anthropicKey)
	})

	t.Run("metadata seen by Envoy", func(t *testing.T) {
		// One line per request above, written when Envoy flushes the
		// file (every second by default).
		var lines []accessLine
		waitFor(t, 30*time.Second, func() bool {
			lines = readAccessLog(t, accessLog)
			return len(lines) >= 4
		})
		routes := map[string]int{}
		for _, l := range lines {
			routes[l.Route]++
			key, isString := l.Meta[authz.MetadataKeyField].(string)
			switch l.Route {
			case "provider_openai", "provider_openai_nomap":
				if key != openaiKey {
					t.Errorf("%s: metadata %s holds %d chars (a string: %v), want the raw openai key", l.Route, authz.MetadataKeyField, len(key), isString)
				}
			default:
				if _, has := l.Meta[authz.MetadataKeyField]; has {
					t.Errorf("%s (header mode): metadata has %s", l.Route, authz.MetadataKeyField)
				}
			}
			if l.Meta["user"] != "alice" || l.Meta["provider"] == nil || l.Meta["key_id"] != "main" {
				t.Errorf("%s: metadata %v lacks keyward's identity fields", l.Route, keys(l.Meta))
			}
			// The key is in that one field and nowhere else.
			delete(l.Meta, authz.MetadataKeyField)
			rest, _ := json.Marshal(l.Meta)
			assertNoSecrets(t, l.Route+" metadata", string(rest), secrets...)
		}
		if routes["provider_openai"] != 2 || routes["provider_openai_nomap"] != 1 || routes["provider_anthropic"] != 1 {
			t.Errorf("access log routes %v, want 2 openai, 1 nomap, 1 anthropic", routes)
		}
	})

	assertNoSecrets(t, "keyward log", s.logs.String(), secrets...)
	assertNoSecrets(t, "Envoy log", s.envoy.Log(), secrets...)
}

// accessLine is one line of the access log aiGatewayBootstrap configures.
type accessLine struct {
	Route string         `json:"route"`
	Meta  map[string]any `json:"meta"`
}

func readAccessLog(t *testing.T, path string) []accessLine {
	t.Helper()
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var lines []accessLine
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var l accessLine
		// A line being written may be cut: it is read again next time.
		if json.Unmarshal(sc.Bytes(), &l) == nil {
			lines = append(lines, l)
		}
	}
	return lines
}

func keys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// aiGatewayBootstrap turns the bootstrap envoy-config printed into the
// test's: the openai route maps the metadata key to its auth header as
// AI Gateway would, a copy of it under nomapPrefix does not, the listener
// logs each request's route and ext_authz metadata as JSON to accessLog,
// and the ext_authz filter is named as in Envoy Gateway.
func aiGatewayBootstrap(t *testing.T, raw []byte, accessLog string) []byte {
	t.Helper()
	var tree any
	if err := yaml.Unmarshal(raw, &tree); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(tree)
	if err != nil {
		t.Fatal(err)
	}
	b := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, b); err != nil {
		t.Fatalf("decode envoy-config's bootstrap: %v", err)
	}
	filter := b.StaticResources.Listeners[0].FilterChains[0].Filters[0]
	hcm := &hcmv3.HttpConnectionManager{}
	if err := filter.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}

	vh := hcm.GetRouteConfig().VirtualHosts[0]
	i := slices.IndexFunc(vh.Routes, func(r *routev3.Route) bool { return r.Name == "provider_openai" })
	if i < 0 {
		t.Fatal("envoy-config printed no provider_openai route")
	}
	mapped := vh.Routes[i]
	nomap := proto.Clone(mapped).(*routev3.Route)
	nomap.Name += "_nomap"
	prefix := nomapPrefix + mapped.Match.GetPrefix()
	nomap.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: prefix}
	perRoute := &extauthzv3.ExtAuthzPerRoute{}
	if err := nomap.TypedPerFilterConfig[envoy.ExtAuthzFilter].UnmarshalTo(perRoute); err != nil {
		t.Fatal(err)
	}
	perRoute.GetCheckSettings().ContextExtensions[envoy.ContextExtensionPathPrefix] = prefix
	nomap.TypedPerFilterConfig[envoy.ExtAuthzFilter] = mustAny(t, perRoute)
	mapped.RequestHeadersToAdd = append(mapped.RequestHeadersToAdd, &corev3.HeaderValueOption{
		Header:       &corev3.HeaderValue{Key: "authorization", Value: "Bearer %DYNAMIC_METADATA(" + authz.MetadataNamespace + ":" + authz.MetadataKeyField + ")%"},
		AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
	})
	vh.Routes = append([]*routev3.Route{nomap}, vh.Routes...) // longer prefix first

	format, err := structpb.NewStruct(map[string]any{
		"route": "%ROUTE_NAME%",
		"meta":  "%DYNAMIC_METADATA(" + authz.MetadataNamespace + ")%",
	})
	if err != nil {
		t.Fatal(err)
	}
	hcm.AccessLog = append(hcm.AccessLog, &accesslogv3.AccessLog{
		Name: "envoy.access_loggers.file",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(t, &filelogv3.FileAccessLog{
			Path: accessLog,
			AccessLogFormat: &filelogv3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
				Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: format},
			}},
		})},
	})
	// Named as Envoy Gateway's SecurityPolicy names its ext_authz filter:
	// Envoy files the answer's metadata under envoy.filters.http.ext_authz
	// all the same, the namespace the BackendSecurityPolicy example reads.
	const egFilter = envoy.ExtAuthzFilter + "/securitypolicy/ai-gateway/keyward"
	hcm.HttpFilters[0].Name = egFilter
	for _, r := range vh.Routes {
		if c, ok := r.TypedPerFilterConfig[envoy.ExtAuthzFilter]; ok {
			delete(r.TypedPerFilterConfig, envoy.ExtAuthzFilter)
			r.TypedPerFilterConfig[egFilter] = c
		}
	}
	filter.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, hcm)}
	out, err := envoy.MarshalYAML(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}
