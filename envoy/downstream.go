package envoy

import (
	"errors"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/keyward/keyward/field"
)

// DownstreamTLS is TLS on the LLM listener: the certificate Envoy serves
// to clients and, with ClientCAFile, the CA their client certificates
// must chain to. With client certificates verified, Envoy hands keyward
// the peer's identity — the certificate's URI SAN, a SPIFFE ID in a mesh —
// as attributes.source.principal, which principal mappings match (a
// workload then calls without a keyward token). Envoy reads the files at
// start.
type DownstreamTLS struct {
	// CertFile is the listener's certificate chain, an absolute path.
	CertFile string `yaml:"cert_file"`
	// KeyFile is its private key, an absolute path.
	KeyFile string `yaml:"key_file"`
	// ClientCAFile is the bundle client certificates must chain to, an
	// absolute path; empty asks for no client certificate (and so gives
	// keyward no principal).
	ClientCAFile string `yaml:"client_ca_file"`
	// RequireClientCert refuses a connection without a valid client
	// certificate; without it a client may connect without one (and is
	// then decided by its keyward token alone). Needs ClientCAFile.
	RequireClientCert bool `yaml:"require_client_cert"`
}

// Enabled reports whether any field is set: TLS on the listener is then on.
func (t DownstreamTLS) Enabled() bool {
	return t.CertFile != "" || t.KeyFile != "" || t.ClientCAFile != "" || t.RequireClientCert
}

// Validate checks t; each problem is a *field.Error whose path is prefix,
// a dot and the field's snake_case name.
func (t DownstreamTLS) Validate(prefix string) error { return errors.Join(t.problems(prefix)...) }

func (t DownstreamTLS) problems(prefix string) []error {
	var errs []error
	add := func(name, format string, args ...any) {
		errs = append(errs, field.Errorf(prefix+"."+name, format, args...))
	}
	for _, f := range []struct{ name, path string }{{"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
		if !strings.HasPrefix(f.path, "/") {
			add(f.name, "required with TLS, an absolute path as Envoy sees it; got %q", f.path)
		}
	}
	switch {
	case t.ClientCAFile != "" && !strings.HasPrefix(t.ClientCAFile, "/"):
		add("client_ca_file", "an absolute path as Envoy sees it; got %q", t.ClientCAFile)
	case t.ClientCAFile == "" && t.RequireClientCert:
		add("require_client_cert", "needs client_ca_file: the CA client certificates must chain to")
	}
	return errs
}

// downstreamTLSSocket is the listener's side of TLS with clients.
func downstreamTLSSocket(t DownstreamTLS) (*corev3.TransportSocket, error) {
	file := func(path string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
	}
	common := &tlsv3.CommonTlsContext{
		TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file(t.CertFile), PrivateKey: file(t.KeyFile)}},
		AlpnProtocols:   []string{"h2", "http/1.1"},
	}
	if t.ClientCAFile != "" {
		common.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: file(t.ClientCAFile),
		}}
	}
	tlsCtx, err := anyOf(&tlsv3.DownstreamTlsContext{
		CommonTlsContext:         common,
		RequireClientCertificate: wrapperspb.Bool(t.RequireClientCert),
	})
	if err != nil {
		return nil, err
	}
	return &corev3.TransportSocket{Name: tlsSocket, ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: tlsCtx}}, nil
}
