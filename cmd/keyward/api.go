package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyward/keyward/manage/httpapi"
)

// The environment variables of `keyward api`. The credential has no flag:
// argv shows in ps and in shell history.
const (
	mgmtTokenEnv   = "KEYWARD_MGMT_TOKEN"
	mgmtURLEnv     = "KEYWARD_MGMT_URL"
	defaultMgmtURL = "http://127.0.0.1:9292"
)

const (
	// maxKey bounds a provider key read from a file or stdin.
	maxKey = 64 << 10
	// maxAnswer bounds an answer of the API, to fail rather than exhaust
	// memory on a runaway server.
	maxAnswer = 64 << 20
)

// fieldKind is how a flag's value goes into the JSON body.
type fieldKind int

const (
	fieldString   fieldKind = iota
	fieldList               // "a,b" → ["a","b"]; "" → []
	fieldBool               // -flag or -flag=false
	fieldDuration           // a Go duration, checked here, sent as a string
	fieldObject             // a JSON object, checked here, sent as is
	fieldInt                // a whole number, checked here, sent as a number
)

// apiField is a flag that sets the body field of the same name, with '_'
// for '-'.
type apiField struct {
	flag string
	kind fieldKind
	meta string // the value's placeholder in usage; none for booleans
	help string
}

// keyUse is whether a verb sends a provider key, which is never read from
// argv.
type keyUse int

const (
	keyNone keyUse = iota
	// keyOptional is sent only when -key-env or -key-file names a source:
	// an update must not swallow a script's stdin as the new key.
	keyOptional
	// keyRequired comes from -key-env, -key-file, or else stdin when stdin
	// is not a terminal.
	keyRequired
)

// apiVerb is one `keyward api RESOURCE [VERB]`: the request it makes and
// the flags that fill it.
type apiVerb struct {
	resource, verb string
	// route names the management API's route (httpapi.Route.Name); method
	// and path come from the API's route table.
	route, method string
	// path has a {placeholder} for each leading positional argument; the
	// arguments are path-escaped into it.
	path string
	// bodyArgs are further positional arguments, sent as the body fields
	// of those names: `users create NAME` sends {"name": NAME}.
	bodyArgs []string
	fields   []apiField
	required []string // flags that must be given
	// onBehalf adds -user NAME: an admin acts as that user (?user=NAME).
	onBehalf bool
	key      keyUse
	// once marks an answer that holds a secret shown only this once.
	once bool
}

// apiVerbs is the command table: every resource and verb of `keyward api`,
// with the method and path of its route from the API's own table.
func apiVerbs() []apiVerb {
	verbs := apiCommands()
	routes := map[string]httpapi.Route{}
	for _, rt := range httpapi.Routes() {
		routes[rt.Name] = rt
	}
	for i := range verbs {
		rt, ok := routes[verbs[i].route]
		if !ok {
			panic("keyward api: no route " + verbs[i].route) // caught by TestAPIVerbsCoverRoutes
		}
		verbs[i].method, verbs[i].path = rt.Method, rt.Path
	}
	return verbs
}

// apiCommands are the resources and verbs of `keyward api`, by route.
func apiCommands() []apiVerb {
	user, group, cred, tok, grace := apiFieldSets()
	return []apiVerb{
		{resource: "me", route: "me", onBehalf: true},
		{resource: "users", verb: "list", route: "users.list"},
		{resource: "users", verb: "get", route: "users.get"},
		{resource: "users", verb: "create", route: "users.create", bodyArgs: []string{"name"}, fields: user},
		{resource: "users", verb: "update", route: "users.update", fields: user},
		{resource: "users", verb: "delete", route: "users.delete"},
		{resource: "groups", verb: "list", route: "groups.list"},
		{resource: "groups", verb: "get", route: "groups.get"},
		{resource: "groups", verb: "create", route: "groups.create", bodyArgs: []string{"name"}, fields: group},
		{resource: "groups", verb: "update", route: "groups.update", fields: group},
		{resource: "groups", verb: "delete", route: "groups.delete"},
		{resource: "identities", verb: "list", route: "identities.list"},
		{resource: "identities", verb: "get", route: "identities.get"},
		{resource: "identities", verb: "create", route: "identities.create", bodyArgs: []string{"name"}, fields: identityFields, required: []string{"principal", "user", "group"}},
		{resource: "identities", verb: "update", route: "identities.update", fields: identityFields[3:]},
		{resource: "identities", verb: "delete", route: "identities.delete"},
		{resource: "providers", verb: "list", route: "providers.list"},
		{resource: "providers", verb: "get", route: "providers.get"},
		{resource: "tokens", verb: "list", route: "tokens.list", onBehalf: true},
		{resource: "tokens", verb: "get", route: "tokens.get", onBehalf: true},
		{resource: "tokens", verb: "create", route: "tokens.create", fields: tok, required: []string{"group", "name"}, onBehalf: true, once: true},
		{resource: "tokens", verb: "rotate", route: "tokens.rotate", fields: grace, onBehalf: true, once: true},
		{resource: "tokens", verb: "revoke", route: "tokens.revoke", onBehalf: true},
		{resource: "credentials", verb: "list", route: "credentials.list", onBehalf: true},
		{resource: "credentials", verb: "get", route: "credentials.get", onBehalf: true},
		{resource: "credentials", verb: "create", route: "credentials.create", fields: cred, required: []string{"name", "provider"}, onBehalf: true, key: keyRequired},
		{resource: "credentials", verb: "update", route: "credentials.update", fields: cred, onBehalf: true, key: keyOptional},
		{resource: "credentials", verb: "delete", route: "credentials.delete", onBehalf: true},
		{resource: "mgmt-tokens", verb: "create", route: "management-tokens.create", once: true},
		{resource: "mgmt-tokens", verb: "revoke", route: "management-tokens.revoke"},
	}
}

// identityFields are the body fields of a principal mapping; update
// takes the last one only.
var identityFields = []apiField{
	{"principal", fieldString, "SPIFFE_ID", "the workload's SPIFFE ID, or a prefix ending in /*"},
	{"user", fieldString, "U", "the user the workload acts as"},
	{"group", fieldString, "G", "the group it calls in; one the user may use"},
	{"disabled", fieldBool, "", "disable the mapping: the workload is refused"},
}

// apiFieldSets are the body fields the verbs take, by resource.
func apiFieldSets() (user, group, cred, tok, grace []apiField) {
	user = []apiField{
		{"role", fieldString, "ROLE", "user or admin"},
		{"groups", fieldList, "a,b", "the groups the user may use"},
		{"disabled", fieldBool, "", "disable the user: their tokens are refused"},
	}
	group = []apiField{
		{"providers", fieldList, "a,b", "the providers the group may call (none: all)"},
		{"models", fieldList, "x,y", "the models the group may use, 'prefix*' for a prefix (none: all)"},
		{"disable-custom-keys", fieldBool, "", "refuse provider keys that members send themselves"},
		{"disabled", fieldBool, "", "disable the group: its tokens are refused"},
		{"requests-per-minute", fieldInt, "N", "requests a minute each of the group's users may make, all their tokens together, per keyward replica (0: no limit)"},
	}
	cred = []apiField{
		{"name", fieldString, "N", "what the credential is for"},
		{"provider", fieldString, "P", "the provider the key is for"},
		{"model", fieldString, "M", "the model to use"},
		{"base-url", fieldString, "U", "the provider's base URL"},
		{"extra", fieldObject, "JSON", "further settings, a JSON object"},
	}
	tok = []apiField{
		{"group", fieldString, "G", "a group the user may use"},
		{"name", fieldString, "N", "what the token is for"},
		{"ttl", fieldDuration, "D", "lifetime such as 720h (none: no expiry)"},
		{"principal", fieldString, "SPIFFE_ID", "bind the token to the workload with this SPIFFE ID (or prefix ending in /*)"},
	}
	grace = []apiField{{"grace", fieldDuration, "D", "how long the old token keeps working (none: the server's default)"}}
	return user, group, cred, tok, grace
}

// name is how usage and errors call the verb: "users create", "me".
func (v *apiVerb) name() string { return strings.TrimSpace(v.resource + " " + v.verb) }

// args are the positional arguments: the path's placeholders, then the
// body's.
func (v *apiVerb) args() []string {
	var out []string
	for _, seg := range strings.Split(v.path, "/") {
		if p, ok := strings.CutPrefix(seg, "{"); ok {
			out = append(out, strings.TrimSuffix(p, "}"))
		}
	}
	return append(out, v.bodyArgs...)
}

// synopsis is the verb's line of the usage text.
func (v *apiVerb) synopsis() string {
	parts := []string{v.name()}
	for _, a := range v.args() {
		parts = append(parts, strings.ToUpper(a))
	}
	for _, f := range v.fields {
		p := "-" + f.flag
		if f.meta != "" {
			p += " " + f.meta
		}
		if !slices.Contains(v.required, f.flag) {
			p = "[" + p + "]"
		}
		parts = append(parts, p)
	}
	switch v.key {
	case keyRequired:
		parts = append(parts, "(-key-env VAR | -key-file PATH | <KEYFILE)")
	case keyOptional:
		parts = append(parts, "[-key-env VAR | -key-file PATH]")
	}
	if v.onBehalf {
		parts = append(parts, "[-user NAME]")
	}
	return strings.Join(parts, " ")
}

func apiUsage() string {
	var b strings.Builder
	b.WriteString(`Usage: keyward api [-url URL] [-timeout 10s] RESOURCE [VERB] [ARGUMENTS] [FLAGS]

Calls the management API of keyward serve (management.listen) and prints its
JSON answer. The credential, a management token (kwm_…), the bootstrap admin
credential or a JWT of the issuer in management.oidc, comes from
$` + mgmtTokenEnv + ` only; -url defaults to $` + mgmtURLEnv + `,
else ` + defaultMgmtURL + `. With -user NAME an admin acts on NAME's tokens and
credentials. A provider key is never an argument: it is read from the variable
-key-env names, from -key-file (- for stdin) or, for create, from piped stdin.

`)
	for _, v := range apiVerbs() {
		fmt.Fprintf(&b, "  keyward api %s\n", v.synopsis())
	}
	return b.String()
}

// findVerb looks up args' resource and verb in the table.
func findVerb(args []string) (*apiVerb, []string, error) {
	verbs := apiVerbs()
	var names []string
	for i := range verbs {
		v := &verbs[i]
		if v.resource == args[0] && v.verb == "" {
			return v, args[1:], nil
		}
		if !slices.Contains(names, v.resource) {
			names = append(names, v.resource)
		}
	}
	if !slices.Contains(names, args[0]) {
		return nil, nil, fmt.Errorf("api: unknown resource %q (%s)", args[0], strings.Join(names, ", "))
	}
	names = names[:0]
	for i := range verbs {
		v := &verbs[i]
		if v.resource != args[0] {
			continue
		}
		if len(args) > 1 && v.verb == args[1] {
			return v, args[2:], nil
		}
		names = append(names, v.verb)
	}
	if len(args) == 1 || strings.HasPrefix(args[1], "-") {
		return nil, nil, fmt.Errorf("api %s: want a verb (%s)", args[0], strings.Join(names, ", "))
	}
	return nil, nil, fmt.Errorf("api %s: unknown verb %q (%s)", args[0], args[1], strings.Join(names, ", "))
}

// apiOptions are the global flags of `keyward api`.
type apiOptions struct {
	url     string
	timeout time.Duration
}

// define adds the global flags to fs, with their current values as
// defaults, so that they may also follow the verb.
func (o *apiOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&o.url, "url", o.url, "the management API's base `URL` ($"+mgmtURLEnv+")")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "give up on the request after this long")
}

// verbFlags are a verb's flags, defined on its flag set.
type verbFlags struct {
	// values build the body value of each field flag.
	values          map[string]func() (any, error)
	user            *string
	keyEnv, keyFile *string
}

func (v *apiVerb) defineFlags(fs *flag.FlagSet) *verbFlags {
	fl := &verbFlags{values: map[string]func() (any, error){}}
	for _, f := range v.fields {
		fl.values[f.flag] = f.define(fs)
	}
	if v.onBehalf {
		fl.user = fs.String("user", "", "act on this `NAME`'s behalf (admins)")
	}
	if v.key != keyNone {
		fl.keyEnv = fs.String("key-env", "", "read the provider key from the environment variable `VAR`")
		fl.keyFile = fs.String("key-file", "", "read the provider key from the file at `PATH`; - for stdin")
	}
	return fl
}

// define adds f's flag to fs and returns what builds its body value.
func (f apiField) define(fs *flag.FlagSet) func() (any, error) {
	usage := f.help
	if f.meta != "" {
		usage = "`" + f.meta + "`: " + f.help
	}
	if f.kind == fieldBool {
		p := fs.Bool(f.flag, false, usage)
		return func() (any, error) { return *p, nil }
	}
	p := fs.String(f.flag, "", usage)
	return func() (any, error) {
		switch f.kind {
		case fieldList:
			if l := list(*p); l != nil {
				return l, nil
			}
			return []string{}, nil // clears, where null would keep
		case fieldDuration:
			if _, err := time.ParseDuration(*p); *p != "" && err != nil {
				return nil, fmt.Errorf("-%s %q: want a duration such as 720h", f.flag, *p)
			}
		case fieldObject:
			var obj map[string]json.RawMessage
			if err := json.Unmarshal([]byte(*p), &obj); err != nil || obj == nil {
				return nil, fmt.Errorf(`-%s: want a JSON object such as {"api_version":"2024-06-01"}`, f.flag)
			}
			return json.RawMessage(*p), nil
		case fieldInt:
			n, err := strconv.Atoi(*p)
			if err != nil {
				return nil, fmt.Errorf("-%s %q: want a whole number", f.flag, *p)
			}
			return n, nil
		}
		return *p, nil
	}
}

// apiRequest is one request to the management API.
type apiRequest struct {
	method, path string
	query        url.Values
	body         []byte
	// key is the provider key the body carries, if any, scrubbed from
	// whatever the server answers.
	key string
}

// target is the request's path and query.
func (r *apiRequest) target() string {
	if len(r.query) == 0 {
		return r.path
	}
	return r.path + "?" + r.query.Encode()
}

// request builds the verb's request from its parsed flags and positional
// arguments.
func (v *apiVerb) request(e *env, stdin io.Reader, fl *verbFlags, set map[string]bool, pos []string) (*apiRequest, error) {
	req := &apiRequest{method: v.method}
	segs := strings.Split(v.path, "/")
	for i, seg := range segs {
		if strings.HasPrefix(seg, "{") {
			segs[i], pos = url.PathEscape(pos[0]), pos[1:]
		}
	}
	req.path = strings.Join(segs, "/")
	if fl.user != nil && *fl.user != "" {
		req.query = url.Values{"user": {*fl.user}}
	}
	if v.method != http.MethodPost && v.method != http.MethodPut {
		return req, nil
	}
	body := map[string]any{}
	for i, name := range v.bodyArgs {
		body[name] = pos[i]
	}
	for _, f := range v.fields {
		if !set[f.flag] {
			continue // absent fields: the server's default, or kept
		}
		val, err := fl.values[f.flag]()
		if err != nil {
			return nil, fmt.Errorf("api %s: %w", v.name(), err)
		}
		body[strings.ReplaceAll(f.flag, "-", "_")] = val
	}
	if v.key != keyNone {
		key, err := readKey(e.getenv, stdin, *fl.keyEnv, *fl.keyFile, v.key)
		if err != nil {
			return nil, fmt.Errorf("api %s: %w", v.name(), err)
		}
		if key != "" {
			body["key"], req.key = key, key
		}
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("api %s: encode the body: %w", v.name(), err)
	}
	req.body = raw
	return req, nil
}

// readKey returns the provider key from its source; "" when use is
// keyOptional and no source is named.
func readKey(getenv func(string) string, stdin io.Reader, envName, file string, use keyUse) (string, error) {
	switch {
	case envName != "" && file != "":
		return "", errors.New("-key-env and -key-file: give one key source")
	case envName != "":
		if key := getenv(envName); key != "" {
			return key, nil
		}
		return "", fmt.Errorf("-key-env: $%s is empty or not set", envName)
	case file == "-":
		return readKeyFrom(stdin, "-key-file -: stdin")
	case file != "":
		f, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("-key-file: %w", err) // the path, never the content
		}
		defer f.Close()
		return readKeyFrom(f, "-key-file "+file)
	case use == keyRequired && stdin != nil && !isTerminal(stdin):
		return readKeyFrom(stdin, "stdin")
	case use == keyRequired:
		return "", errors.New("no key: give -key-env VAR, -key-file PATH, or pipe the key on stdin")
	}
	return "", nil
}

// readKeyFrom reads a key, less one trailing newline.
func readKeyFrom(r io.Reader, what string) (string, error) {
	raw, err := io.ReadAll(io.LimitReader(r, maxKey+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("%s: %w", what, err)
	case len(raw) > maxKey:
		return "", fmt.Errorf("%s: longer than %d bytes", what, maxKey)
	}
	key := strings.TrimSuffix(strings.TrimSuffix(string(raw), "\n"), "\r")
	if key == "" {
		return "", fmt.Errorf("%s: no key", what)
	}
	return key, nil
}

// isTerminal reports whether r is a character device, where a key typed
// would echo: such a stdin is not read.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// apiBase checks the -url value and returns it without a trailing slash.
// It never echoes a URL that may hold a password.
func apiBase(raw string) (string, error) {
	u, err := url.Parse(raw)
	switch {
	case err != nil:
		return "", errors.New("-url: not a URL; want http(s)://HOST:PORT")
	case u.User != nil:
		return "", fmt.Errorf("-url %s: no credentials in the URL; the credential comes from $%s", u.Redacted(), mgmtTokenEnv)
	case (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("-url %q: want http(s)://HOST:PORT[/PREFIX]", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// apiError is an answer of the management API other than 2xx.
type apiError struct {
	Method, Target string
	Status         int
	// Code and Message are the error body's; Code is empty when the body
	// is not keyward's (a proxy's page, say).
	Code, Message string
}

func (e *apiError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("%s %s: %d: %s", e.Method, e.Target, e.Status, e.Message)
	}
	return fmt.Sprintf("%s %s: %d: %s: %s", e.Method, e.Target, e.Status, e.Code, e.Message)
}

// apiClient calls the management API as one credential.
type apiClient struct {
	base string
	cred string
	http *http.Client
}

// do sends req and returns the status and body of a 2xx answer; any other
// answer is an *apiError.
func (c *apiClient) do(ctx context.Context, req *apiRequest) (int, []byte, error) {
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	hreq, err := http.NewRequestWithContext(ctx, req.method, c.base+req.target(), body)
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: %w", req.method, req.target(), err)
	}
	hreq.Header.Set("Authorization", "Bearer "+c.cred)
	hreq.Header.Set("Accept", "application/json")
	if body != nil {
		hreq.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(hreq)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its URL is ours, printed once below
		}
		return 0, nil, fmt.Errorf("%s %s: %w", req.method, c.base+req.target(), err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	switch {
	case err != nil:
		return 0, nil, fmt.Errorf("%s %s: %d: read the answer: %w", req.method, req.target(), resp.StatusCode, err)
	case len(raw) > maxAnswer:
		return 0, nil, fmt.Errorf("%s %s: %d: the answer is longer than %d bytes", req.method, req.target(), resp.StatusCode, maxAnswer)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return 0, nil, c.failure(req, resp, raw)
	}
	return resp.StatusCode, raw, nil
}

// failure reads an error answer. The server's text is scrubbed of the
// credential and key, and of control characters, before anyone prints it.
func (c *apiClient) failure(req *apiRequest, resp *http.Response, raw []byte) *apiError {
	e := &apiError{Method: req.method, Target: req.target(), Status: resp.StatusCode}
	var body struct {
		Error struct {
			Message string `json:"message"`
			Code    string `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(raw, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	} else {
		e.Message = http.StatusText(resp.StatusCode) + " (not a keyward error body)"
		if loc := resp.Header.Get("Location"); loc != "" {
			e.Message = "redirected to " + loc + "; not followed (is -url right?)"
		}
	}
	e.Code, e.Message = scrub(e.Code, c.cred, req.key), scrub(e.Message, c.cred, req.key)
	return e
}

// scrub removes secrets and control characters from text a server sent.
func scrub(s string, secrets ...string) string {
	for _, x := range secrets {
		if x != "" {
			s = strings.ReplaceAll(s, x, "[redacted]")
		}
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// reportedError is a failure a command has printed itself: main exits 1
// without printing it again.
type reportedError struct{ error }

func (r reportedError) Unwrap() error { return r.error }

// apiCmd runs `keyward api`, a client of the management API. Request
// failures are printed as "keyward api: …" and are a reportedError; usage
// errors are returned as for every command.
func (e *env) apiCmd(ctx context.Context, stdin io.Reader, args []string) error {
	opts := &apiOptions{url: cmp.Or(e.getenv(mgmtURLEnv), defaultMgmtURL), timeout: 10 * time.Second}
	g := flag.NewFlagSet("keyward api", flag.ContinueOnError)
	g.SetOutput(e.stderr)
	g.Usage = func() { fmt.Fprint(e.stderr, apiUsage()) }
	opts.define(g)
	if err := g.Parse(args); err != nil {
		return err
	}
	switch rest := g.Args(); {
	case len(rest) == 0:
		fmt.Fprint(e.stderr, apiUsage())
		return flag.ErrHelp
	case rest[0] == "help":
		fmt.Fprint(e.stdout, apiUsage())
		return nil
	}
	v, rest, err := findVerb(g.Args())
	if err != nil {
		fmt.Fprint(e.stderr, apiUsage())
		return err
	}
	fs := flag.NewFlagSet("keyward api "+v.name(), flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	opts.define(fs)
	fl := v.defineFlags(fs)
	c := &command{FlagSet: fs, e: e}
	pos, err := c.parse(rest)
	if err != nil {
		return err
	}
	if err := v.check(pos, c.set); err != nil {
		return err
	}
	client, err := e.newAPIClient(opts)
	if err != nil {
		return err
	}
	req, err := v.request(e, stdin, fl, c.set, pos)
	if err != nil {
		return err
	}
	status, answer, err := client.do(ctx, req)
	if err == nil {
		err = e.printAnswer(req, status, answer)
	}
	if err != nil {
		fmt.Fprintln(e.stderr, "keyward api:", err)
		return reportedError{err}
	}
	if v.once {
		fmt.Fprintln(e.stderr, "The token is shown once; store it now.")
	}
	return nil
}

// newAPIClient is the client of the management API opts name, with the
// credential from the environment.
func (e *env) newAPIClient(opts *apiOptions) (*apiClient, error) {
	base, err := apiBase(opts.url)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	if opts.timeout <= 0 {
		return nil, fmt.Errorf("api: -timeout %v: want a positive duration", opts.timeout)
	}
	cred := strings.TrimSpace(e.getenv(mgmtTokenEnv))
	if cred == "" {
		return nil, fmt.Errorf("api: $%s is not set: export a management token (kwm_…, from `keyward mgmt-token create`) or the bootstrap admin credential", mgmtTokenEnv)
	}
	return &apiClient{base: base, cred: cred, http: &http.Client{
		Timeout: opts.timeout,
		// A redirect would carry the credential somewhere -url does not
		// name; the API never redirects.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}, nil
}

// check checks the positional arguments and required flags.
func (v *apiVerb) check(pos []string, set map[string]bool) error {
	want := v.args()
	if len(pos) != len(want) {
		names := "no arguments"
		if len(want) > 0 {
			names = strings.ToUpper(strings.Join(want, " "))
		}
		return fmt.Errorf("api %s: want %s, got %d arguments", v.name(), names, len(pos))
	}
	for i, p := range pos {
		if p == "" || p == "." || p == ".." { // a path the server would clean away
			return fmt.Errorf("api %s: %s %q is not a name", v.name(), strings.ToUpper(want[i]), p)
		}
	}
	for _, f := range v.required {
		if !set[f] {
			return fmt.Errorf("api %s: -%s is required", v.name(), f)
		}
	}
	return nil
}

// printAnswer prints a 2xx answer's JSON indented; 204 prints nothing.
func (e *env) printAnswer(req *apiRequest, status int, answer []byte) error {
	answer = bytes.TrimSpace(answer)
	if status == http.StatusNoContent || len(answer) == 0 {
		return nil
	}
	var out bytes.Buffer
	if err := json.Indent(&out, answer, "", "  "); err != nil {
		return fmt.Errorf("%s %s: %d: the answer is not JSON", req.method, req.target(), status)
	}
	out.WriteByte('\n')
	_, err := e.stdout.Write(out.Bytes())
	return err
}
