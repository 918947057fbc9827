package loadrig

import (
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// CheckRequests builds one CheckRequest per token, as Envoy would send for
// an OpenAI SDK's chat completion through the mesh. They are built ahead so
// that a load generator spends its CPU on the calls.
func CheckRequests(tokens []string) []*authv3.CheckRequest {
	reqs := make([]*authv3.CheckRequest, len(tokens))
	for i, tok := range tokens {
		reqs[i] = &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: "10.0.0.7", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 43210}},
			}}},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Id:       fmt.Sprintf("%d", 1_000_000+i),
				Method:   "POST",
				Path:     "/v1/chat/completions",
				Host:     "llm.mesh",
				Scheme:   "http",
				Protocol: "HTTP/1.1",
				Headers: map[string]string{
					":authority":                  "llm.mesh",
					":method":                     "POST",
					":path":                       "/v1/chat/completions",
					":scheme":                     "http",
					"authorization":               "Bearer " + tok,
					"content-type":                "application/json",
					"content-length":              "187",
					"accept":                      "application/json",
					"user-agent":                  "OpenAI/Python 1.54.4",
					"x-stainless-lang":            "python",
					"x-stainless-package-version": "1.54.4",
					"x-stainless-os":              "Linux",
					"x-stainless-arch":            "x64",
					"x-stainless-runtime":         "CPython",
					"x-request-id":                fmt.Sprintf("6f1c2a4e-0000-4000-8000-%012d", i),
				},
			}},
			ContextExtensions: map[string]string{"provider": ProviderName},
		}}
	}
	return reqs
}
