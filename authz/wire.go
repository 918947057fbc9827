package authz

import (
	"context"
	"unicode/utf8"
	"unsafe"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Over gRPC, a check reads its request straight from the wire. Decoding a
// CheckRequest with the protobuf library makes every string, header and
// nested message an allocation of its own: a fifth of the CPU a check costs
// a server (the floor's as much as keyward's), and most of the garbage.
// decodeRequest instead copies the message once and reads the few fields
// a check uses as views of that copy, into a Request, allocating the copy
// and the header map only.
//
// It reads a message only where it reads it exactly as proto.Unmarshal
// would (wireSimple): well-formed, UTF-8 in every string field, singular
// fields merged as the library merges them (the last one wins, messages
// merge field by field, a oneof switches), map entries added in order, and
// no google.protobuf.Struct (JWT payloads in metadata_context), which it
// leaves to the library with anything else it declines. FuzzDecodeRequest
// holds the two to the same Request.

// Register registers s on g as the ext_authz service, reading requests
// from the wire. g must be made with ServerCodec among its options.
func Register(g *grpc.Server, s *Server) {
	g.RegisterService(&wireServiceDesc, s)
}

// ServerCodec is the server option that Register needs: the protobuf
// codec, except that it hands a check's request over as it came.
func ServerCodec() grpc.ServerOption {
	return grpc.ForceServerCodecV2(wireCodec{encoding.GetCodecV2("proto")})
}

// wireServiceDesc is authv3's Authorization service with a Check handler
// that decodes the request itself.
var wireServiceDesc = grpc.ServiceDesc{
	ServiceName: authv3.Authorization_ServiceDesc.ServiceName,
	HandlerType: (*authv3.AuthorizationServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkWireHandler}},
	Metadata:    authv3.Authorization_ServiceDesc.Metadata,
}

// wireRequest is a CheckRequest as it came off the wire, copied out of
// gRPC's buffers.
type wireRequest struct{ b []byte }

// wireCodec is the protobuf codec, except for a wireRequest.
type wireCodec struct{ encoding.CodecV2 }

func (c wireCodec) Unmarshal(data mem.BufferSlice, v any) error {
	if w, ok := v.(*wireRequest); ok {
		w.b = data.Materialize()
		return nil
	}
	return c.CodecV2.Unmarshal(data, v)
}

func checkWireHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	w := new(wireRequest)
	if err := dec(w); err != nil {
		return nil, err
	}
	s := srv.(*Server)
	if interceptor == nil {
		return s.checkWire(ctx, w)
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: authv3.Authorization_Check_FullMethodName}
	return interceptor(ctx, w, info, func(ctx context.Context, req any) (any, error) {
		return s.checkWire(ctx, req.(*wireRequest))
	})
}

// checkWire answers the check whose request is w: read by decodeRequest,
// else by the library, whose refusal is gRPC's own (codes.Internal, as
// when it decodes requests itself).
func (s *Server) checkWire(ctx context.Context, w *wireRequest) (*authv3.CheckResponse, error) {
	r, ok := decodeRequest(w.b)
	if !ok {
		var req authv3.CheckRequest
		if err := proto.Unmarshal(w.b, &req); err != nil {
			return nil, status.Errorf(codes.Internal, "grpc: error unmarshalling request: %v", err)
		}
		r = requestOf(&req)
	}
	return s.check(ctx, &r), nil
}

// checkRequestSchema is what wireSimple checks a CheckRequest against.
var checkRequestSchema = newWireSchema((&authv3.CheckRequest{}).ProtoReflect().Descriptor(), map[protoreflect.FullName]*wireSchema{})

// maxWireDepth bounds wireSimple's recursion: a CheckRequest without
// Struct nests a few levels deep.
const maxWireDepth = 16

// wireSchema is a message type as wireSimple checks it: what each field
// number holds, looked up in a slice rather than through the descriptor's
// interfaces (which were a microsecond of every check).
type wireSchema struct {
	fields []wireField   // by field number, up to the type's largest
	subs   []*wireSchema // of the wireMessage fields, likewise
}

// wireField is how wireSimple checks a length-delimited field.
type wireField uint8

const (
	wireUnknown wireField = iota // not a field of the type, or not length-delimited: skipped
	wireString                   // UTF-8 checked
	wireBytes                    // anything
	wireMessage                  // checked against its schema
	wireDecline                  // left to the library: a Struct, a group, a packed scalar
)

// newWireSchema builds md's schema, and those of the messages it holds;
// seen breaks cycles.
func newWireSchema(md protoreflect.MessageDescriptor, seen map[protoreflect.FullName]*wireSchema) *wireSchema {
	if s, ok := seen[md.FullName()]; ok {
		return s
	}
	s := &wireSchema{}
	seen[md.FullName()] = s
	fds := md.Fields()
	top := protowire.Number(0)
	for i := range fds.Len() {
		top = max(top, fds.Get(i).Number())
	}
	s.fields = make([]wireField, top+1)
	s.subs = make([]*wireSchema, top+1)
	for i := range fds.Len() {
		fd := fds.Get(i)
		switch fd.Kind() {
		case protoreflect.StringKind:
			s.fields[fd.Number()] = wireString
		case protoreflect.BytesKind:
			s.fields[fd.Number()] = wireBytes
		case protoreflect.MessageKind:
			switch fd.Message().FullName() {
			case "google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue":
				s.fields[fd.Number()] = wireDecline
			default:
				s.fields[fd.Number()] = wireMessage
				s.subs[fd.Number()] = newWireSchema(fd.Message(), seen)
			}
		default:
			// A group, or a scalar: length-delimited only when packed.
			s.fields[fd.Number()] = wireDecline
		}
	}
	return s
}

// decodeRequest reads b, a CheckRequest's wire form, into a Request whose
// strings are views of b, which must not change afterwards. False when b
// is not one it reads as proto.Unmarshal would (see wireSimple).
func decodeRequest(b []byte) (Request, bool) {
	var r Request
	if !wireSimple(b, checkRequestSchema, 0) {
		return r, false
	}
	var body, rawBody string
	eachBytesField(b, func(num protowire.Number, v []byte) {
		if num == 1 { // attributes
			r.readAttributes(v, &body, &rawBody)
		}
	})
	r.Body = body
	if body == "" {
		r.Body = rawBody
	}
	return r, true
}

// readAttributes reads an AttributeContext; body and rawBody are the
// http request's body and raw_body, merged across occurrences like the
// rest (Request.Body is the first unless empty, see requestBody).
func (r *Request) readAttributes(b []byte, body, rawBody *string) {
	eachBytesField(b, func(num protowire.Number, v []byte) {
		switch num {
		case 1: // source
			r.readSource(v)
		case 4: // request
			eachBytesField(v, func(num protowire.Number, v []byte) {
				if num == 2 { // http
					r.readHTTP(v, body, rawBody)
				}
			})
		case 10: // context_extensions
			r.ContextExtensions = addEntry(r.ContextExtensions, v)
		}
	})
}

// readSource reads the source Peer: its principal, and its socket
// address, which the address oneof's other members clear.
func (r *Request) readSource(b []byte) {
	eachBytesField(b, func(num protowire.Number, v []byte) {
		switch num {
		case 1: // address
			eachBytesField(v, func(num protowire.Number, v []byte) {
				switch num {
				case 1: // socket_address
					eachBytesField(v, func(num protowire.Number, v []byte) {
						if num == 2 { // address
							r.SourceAddress = view(v)
						}
					})
				case 2, 3: // pipe, envoy_internal_address
					r.SourceAddress = ""
				}
			})
		case 4: // principal
			r.Principal = view(v)
		}
	})
}

// readHTTP reads an HttpRequest.
func (r *Request) readHTTP(b []byte, body, rawBody *string) {
	eachBytesField(b, func(num protowire.Number, v []byte) {
		switch num {
		case 2:
			r.Method = view(v)
		case 3: // headers
			if r.Headers == nil {
				r.Headers = make(map[string]string, countField(b, 3))
			}
			r.Headers = addEntry(r.Headers, v)
		case 4:
			r.Path = view(v)
		case 5:
			r.Host = view(v)
		case 11:
			*body = view(v)
		case 12:
			*rawBody = view(v)
		}
	})
}

// addEntry adds a map<string, string> entry to m, made if nil: its key
// and value default to "", and the last of each wins.
func addEntry(m map[string]string, entry []byte) map[string]string {
	var k, v string
	eachBytesField(entry, func(num protowire.Number, b []byte) {
		switch num {
		case 1:
			k = view(b)
		case 2:
			v = view(b)
		}
	})
	if m == nil {
		m = make(map[string]string)
	}
	m[k] = v
	return m
}

// countField counts the fields num of message b, to size a map.
func countField(b []byte, num protowire.Number) int {
	n := 0
	eachBytesField(b, func(got protowire.Number, _ []byte) {
		if got == num {
			n++
		}
	})
	return n
}

// eachBytesField calls f with each field of message b that has the
// length-delimited wire type, in order; the others are skipped, as the
// library skips a field of the wrong wire type. Every field decodeRequest
// reads is a string, bytes, message or map entry. b is well-formed
// (wireSimple accepted it).
func eachBytesField(b []byte, f func(num protowire.Number, v []byte)) {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		b = b[n:]
		if typ != protowire.BytesType {
			b = b[protowire.ConsumeFieldValue(num, typ, b):]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		f(num, v)
		b = b[n:]
	}
}

// view is b as a string, without a copy.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// wireSimple reports whether b is a well-formed message of schema s that
// proto.Unmarshal accepts, UTF-8 in every string field included, without
// anything decodeRequest leaves to the library: a google.protobuf.Struct
// (or its Value or ListValue), a group, a packed field, or nesting past
// maxWireDepth. A field of a known number but the wrong wire type is
// unknown to the library too, and only skipped.
func wireSimple(b []byte, s *wireSchema, depth int) bool {
	if depth > maxWireDepth {
		return false
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 || !num.IsValid() {
			// ConsumeTag takes numbers up to 2^31-1; the library, as
			// the format, up to 2^29-1 (FuzzDecodeRequest found it).
			return false
		}
		b = b[n:]
		field := wireUnknown
		if int(num) < len(s.fields) {
			field = s.fields[num]
		}
		if typ != protowire.BytesType {
			if field == wireDecline && typ == protowire.StartGroupType {
				return false // perhaps a group the library decodes
			}
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return false
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		switch field {
		case wireString:
			if !utf8.Valid(v) {
				return false
			}
		case wireMessage:
			if !wireSimple(v, s.subs[num], depth+1) {
				return false
			}
		case wireDecline:
			return false
		}
	}
	return true
}
