package authz

import (
	"bytes"
	"context"
	"maps"
	"net"
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// envoyRequest is a check request as Envoy 1.40 sends one: both peers,
// the time, the headers (pseudo-headers included), a body, the route's
// context extensions and empty metadata.
func envoyRequest() *authv3.CheckRequest {
	peer := func(addr string, port uint32) *authv3.AttributeContext_Peer {
		return &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: addr, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}},
		}}}
	}
	src := peer("10.0.0.7", 51234)
	src.Principal = "spiffe://mesh.local/ns/app/sa/client"
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      src,
		Destination: peer("10.0.0.9", 10000),
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.Now(),
			Http: &authv3.AttributeContext_HttpRequest{
				Id: "1234", Method: "POST", Path: "/openai/v1/chat/completions?x=1", Host: "llm.mesh", Scheme: "http", Protocol: "HTTP/1.1", Size: 27,
				Headers: map[string]string{
					":authority": "llm.mesh", ":method": "POST", ":path": "/openai/v1/chat/completions?x=1", ":scheme": "http",
					"authorization": "Bearer kw_x", "content-type": "application/json", "x-request-id": "r-1",
					"x-envoy-auth-partial-body": "false", "ünïcode": "välue",
				},
				Body: `{"model":"gpt-4o","messages":[]}`,
			},
		},
		ContextExtensions: map[string]string{"provider": "openai", "path_prefix": "/openai"},
		MetadataContext:   &corev3.Metadata{},
	}}
}

// wireCases are requests decodeRequest must read as requestOf does, and
// whether it reads them itself (false: it leaves them to the library).
func wireCases(t testing.TB) map[string]struct {
	b    []byte
	fast bool
} {
	marshal := func(m proto.Message) []byte {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	raw := envoyRequest()
	raw.Attributes.Request.Http.Body, raw.Attributes.Request.Http.RawBody = "", []byte("raw \xff body")
	pipe := envoyRequest()
	pipe.Attributes.Source.Address = &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/run/sock"}}}
	jwt := envoyRequest()
	payload, _ := structpb.NewStruct(map[string]any{"iss": "https://idp", "sub": "ann"})
	jwt.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		JWTMetadataNamespace: {Fields: map[string]*structpb.Value{"https://idp": structpb.NewStructValue(payload)}},
	}}
	// Two messages end to end are one, merged: the second's headers
	// join the first's, its path replaces the first's, its socket
	// address merges into the first's, and a pipe then clears it.
	second := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:  &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 1}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Path: "/second", Headers: map[string]string{"authorization": "Bearer second", "x-new": "1"}}},
	}}
	third := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{Address: pipe.Attributes.Source.Address}}}
	return map[string]struct {
		b    []byte
		fast bool
	}{
		"envoy":            {marshal(envoyRequest()), true},
		"raw body":         {marshal(raw), true},
		"pipe":             {marshal(pipe), true},
		"empty":            {nil, true},
		"load test":        {marshal(checkRequest(bearerHeader("kw_x"), "", "openai")), true},
		"merged":           {bytes.Join([][]byte{marshal(envoyRequest()), marshal(second)}, nil), true},
		"merged, pipe":     {bytes.Join([][]byte{marshal(envoyRequest()), marshal(second), marshal(third)}, nil), true},
		"jwt payloads":     {marshal(jwt), false},
		"not UTF-8 header": {marshal(&authv3.CheckRequest{}), true}, // replaced below
		"truncated":        {marshal(envoyRequest())[:40], false},
	}
}

// TestDecodeRequest: decodeRequest reads what requestOf reads of the
// library's decoding, for requests as Envoy sends them and merged ones;
// it leaves JWT payloads and what the library refuses to the library.
func TestDecodeRequest(t *testing.T) {
	cases := wireCases(t)
	// A header value that is not UTF-8: the library refuses the whole
	// message, and so must decodeRequest.
	bad := envoyRequest()
	bad.Attributes.Request.Http.Headers = map[string]string{"x": "ok"}
	b, _ := proto.Marshal(bad)
	i := bytes.Index(b, []byte("ok"))
	b[i] = 0xff
	cases["not UTF-8 header"] = struct {
		b    []byte
		fast bool
	}{b, false}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got, ok := decodeRequest(tc.b)
			if ok != tc.fast {
				t.Fatalf("decodeRequest read it: %v, want %v", ok, tc.fast)
			}
			var req authv3.CheckRequest
			err := proto.Unmarshal(tc.b, &req)
			if !ok {
				return
			}
			if err != nil {
				t.Fatalf("decodeRequest read what the library refuses: %v", err)
			}
			if want := requestOf(&req); !sameRequest(got, want) {
				t.Fatalf("decodeRequest:\n%#v\nthe library:\n%#v", got, want)
			}
		})
	}
}

// FuzzDecodeRequest holds decodeRequest to the library: whatever it reads
// the library decodes too, into the same Request.
func FuzzDecodeRequest(f *testing.F) {
	for _, tc := range wireCases(f) {
		f.Add(tc.b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, ok := decodeRequest(b)
		if !ok {
			return
		}
		var req authv3.CheckRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			t.Fatalf("decodeRequest read what the library refuses (%v): %q", err, b)
		}
		if want := requestOf(&req); !sameRequest(got, want) {
			t.Fatalf("decodeRequest:\n%#v\nthe library:\n%#v\n%q", got, want, b)
		}
	})
}

// sameRequest reports whether a and b are the same request to a check,
// which reads maps only by key: a nil map and an empty one are the same
// (the library makes an empty one for a map field of the wrong wire type).
func sameRequest(a, b Request) bool {
	if !maps.Equal(a.Headers, b.Headers) || !maps.Equal(a.ContextExtensions, b.ContextExtensions) {
		return false
	}
	// The rest compared whole, so that a field added later is too.
	a.Headers, a.ContextExtensions, b.Headers, b.ContextExtensions = nil, nil, nil, nil
	if len(a.JWTPayloads) == 0 && len(b.JWTPayloads) == 0 {
		a.JWTPayloads, b.JWTPayloads = nil, nil
	}
	return reflect.DeepEqual(a, b)
}

// BenchmarkDecodeRequest compares reading Envoy's request from the wire
// with decoding it with the library first.
func BenchmarkDecodeRequest(b *testing.B) {
	wire, _ := proto.Marshal(envoyRequest())
	b.Run("wire", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := bytes.Clone(wire) // as the codec copies it
			if _, ok := decodeRequest(c); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("library", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var req authv3.CheckRequest
			if err := proto.Unmarshal(wire, &req); err != nil {
				b.Fatal(err)
			}
			_ = requestOf(&req)
		}
	})
}

// rawCodec sends and receives bytes as they are.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// TestRegister: a server made with ServerCodec and Register answers checks
// over gRPC as Check does, for requests it reads itself and ones it leaves
// to the library; serves other services (health) as before; and refuses a
// request the library cannot decode with gRPC's own error.
func TestRegister(t *testing.T) {
	f := newFixture(t)
	s := f.server(t, Options{})
	g := grpc.NewServer(ServerCodec())
	Register(g, s)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx := context.Background()

	if _, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health over the same server: %v", err)
	}
	jwt := checkRequest(bearerHeader(f.tokens["ok"]), "", "openai")
	jwt.Attributes.MetadataContext = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{JWTMetadataNamespace: {}}}
	for name, req := range map[string]*authv3.CheckRequest{
		"allowed":          checkRequest(bearerHeader(f.tokens["ok"]), "", "openai"),
		"denied":           checkRequest(bearerHeader("kw_forged"), "", "openai"),
		"left to library":  jwt,
		"custom key":       checkRequest(map[string]string{"authorization": "Bearer sk-own"}, "", "openai"),
		"no credential":    checkRequest(nil, "", "openai"),
		"unknown provider": checkRequest(bearerHeader(f.tokens["ok"]), "", "nope"),
	} {
		got, err := authv3.NewAuthorizationClient(conn).Check(ctx, req)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, _ := s.Check(ctx, req)
		got, want = mustUnpack(t, got), mustUnpack(t, want)
		if got.GetOkResponse() != nil && want.GetOkResponse() != nil {
			sortHeaders(got)
			sortHeaders(want)
		}
		if !proto.Equal(got, want) {
			t.Errorf("%s: over gRPC\n%v\nCheck\n%v", name, got, want)
		}
	}

	bad := []byte{0x0a, 0x05, 0x01} // attributes, cut short
	var out []byte
	err = conn.Invoke(ctx, authv3.Authorization_Check_FullMethodName, &bad, &out, grpc.ForceCodecV2(rawCodec{}))
	if status.Code(err) != codes.Internal {
		t.Errorf("a malformed request: %v, want codes.Internal", err)
	}
}
