package serve

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"strings"

	"github.com/keyward/keyward/config"
)

// ErrPlaintext is returned by Run for a listener that other hosts can
// reach without TLS when the configuration does not allow it.
var ErrPlaintext = errors.New("reachable from other hosts without TLS")

// socketMode is the unix socket's permission: its owner and group (the
// pod's fsGroup, which a sidecar Envoy shares) may connect. Whoever can
// connect can ask for provider keys: keep the socket's folder private.
const socketMode = 0o660

// listenerConfig is one of serve's listeners as the exposure rule sees it.
type listenerConfig struct {
	field          string // its address's YAML field, e.g. "management.listen"
	addr           string
	tls            bool
	allowPlaintext bool
	exposes        string // what travels in clear, for the warning
}

// listenerConfigs lists the listeners cfg turns on.
func listenerConfigs(cfg *config.Config) []listenerConfig {
	out := []listenerConfig{{"listen", cfg.Listen, cfg.TLS.Enabled(), cfg.AllowPlaintext, "any caller may ask for provider keys"}}
	if cfg.Management.Listen != "" {
		out = append(out, listenerConfig{"management.listen", cfg.Management.Listen, cfg.Management.TLS.Enabled(), cfg.Management.AllowPlaintext, "management tokens and records travel in clear"})
	}
	if cfg.Metrics.Listen != "" {
		out = append(out, listenerConfig{"metrics.listen", cfg.Metrics.Listen, cfg.Metrics.TLS.Enabled(), cfg.Metrics.AllowPlaintext, "metrics travel in clear"})
	}
	return out
}

// checkPlaintext applies the exposure rule: a listener other hosts can
// reach needs TLS, unless its allow_plaintext says otherwise; the allowed
// ones are returned so that Run warns about each.
func checkPlaintext(cfg *config.Config) ([]listenerConfig, error) {
	var allowed []listenerConfig
	var errs []error
	for _, l := range listenerConfigs(cfg) {
		if l.tls || !reachable(l.addr) {
			continue
		}
		if l.allowPlaintext {
			allowed = append(allowed, l)
			continue
		}
		prefix := strings.TrimSuffix(l.field, "listen")
		errs = append(errs, fmt.Errorf("%s: %q is %w: set %stls or, knowingly, %sallow_plaintext: true", l.field, l.addr, ErrPlaintext, prefix, prefix))
	}
	return allowed, errors.Join(errs...)
}

// reachable reports whether other hosts may reach a listen address: any
// TCP address but a loopback one (a unix socket is reached through the
// file system).
func reachable(addr string) bool {
	if strings.HasPrefix(addr, config.UnixPrefix) {
		return false
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err != nil || !ip.IsLoopback() // a name may resolve anywhere
}

// listenOn listens on a TCP address, or on unix:/path.
func listenOn(addr string) (net.Listener, error) {
	path, unix := strings.CutPrefix(addr, config.UnixPrefix)
	if !unix {
		return net.Listen("tcp", addr)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", path) // removed again when closed
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, socketMode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// removeStaleSocket removes the socket a killed keyward left behind, so
// that its successor can listen. A socket something still answers on, and
// a path that is not a socket, are left alone: Listen then reports the
// address in use.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil || fi.Mode().Type() != fs.ModeSocket {
		return err
	}
	if conn, err := net.Dial("unix", path); err == nil {
		conn.Close()
		return nil
	}
	return os.Remove(path)
}
