package main

import (
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// verdictCodec is the load client's codec. It encodes requests as gRPC's
// proto codec does, but reads an answer only as far as its verdict: the
// top-level fields say whether it is an ok_response or a denied_response.
// Denials are decoded in full (their reason is reported).
//
// Why: the load client shares this machine's two cores with the servers.
// Decoding every allowed answer in full would charge the client's CPU for
// the size of keyward's answers (identity headers, removals, metadata)
// against the floor's one header, and so count Envoy's parsing, which in
// production happens in another process, as keyward's cost. Both servers'
// answers go through this same codec.
type verdictCodec struct{ proto encoding.CodecV2 }

func newVerdictCodec() verdictCodec { return verdictCodec{proto: encoding.GetCodecV2("proto")} }

func (c verdictCodec) Name() string { return "proto" }

func (c verdictCodec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }

// CheckResponse field numbers (envoy/service/auth/v3/external_auth.proto).
const (
	fieldDeniedResponse protowire.Number = 2
	fieldOkResponse     protowire.Number = 3
)

// allowedAnswer stands in for an ok_response the client did not decode.
var allowedAnswer = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}

func (c verdictCodec) Unmarshal(data mem.BufferSlice, v any) error {
	resp, ok := v.(*authv3.CheckResponse)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	raw := data.Materialize()
	for b := raw; len(b) > 0; {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if num == fieldDeniedResponse {
			return proto.Unmarshal(raw, resp)
		}
		if num == fieldOkResponse {
			resp.HttpResponse = allowedAnswer
		}
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			return protowire.ParseError(m)
		}
		b = b[m:]
	}
	return nil
}
