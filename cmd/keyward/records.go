package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/keyward/keyward/config"
	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/mgmt"
	"github.com/keyward/keyward/record"
	"github.com/keyward/keyward/serve"
	"github.com/keyward/keyward/vault"
)

// command is a subcommand's flags plus the -config every command takes.
type command struct {
	*flag.FlagSet
	e          *env
	configPath *string
	set        map[string]bool
}

func (e *env) newCommand(name string) *command {
	fs := flag.NewFlagSet("keyward "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	return &command{FlagSet: fs, e: e, configPath: fs.String("config", "", "configuration file")}
}

// parse parses flags given before or after the positional arguments, and
// returns the positional ones.
func (c *command) parse(args []string) ([]string, error) {
	var pos []string
	for {
		if err := c.Parse(args); err != nil {
			return nil, err
		}
		if c.NArg() == 0 {
			break
		}
		pos = append(pos, c.Arg(0))
		args = c.Args()[1:]
	}
	c.set = map[string]bool{}
	c.Visit(func(f *flag.Flag) { c.set[f.Name] = true })
	return pos, nil
}

// name parses args and wants exactly one positional argument.
func (c *command) name(args []string, what string) (string, error) {
	pos, err := c.parse(args)
	if err != nil {
		return "", err
	}
	if len(pos) != 1 {
		return "", fmt.Errorf("%s: want one %s, got %d arguments", c.Name(), what, len(pos))
	}
	return pos[0], nil
}

func (c *command) config() (*config.Config, error) {
	path := *c.configPath
	if path == "" {
		path = c.e.getenv("KEYWARD_CONFIG")
	}
	if path == "" {
		if _, err := os.Stat("keyward.yaml"); err == nil {
			path = "keyward.yaml"
		}
	}
	return config.Load(path, c.e.getenv)
}

// adminStore is what the record commands need of a store; both the file
// store and the Vault store are one.
type adminStore interface {
	mgmt.Store
	EnsureSigningKey(ctx context.Context) error
	Tokens(ctx context.Context) ([]*record.Token, error)
}

var (
	_ adminStore = (*filestore.Store)(nil)
	_ adminStore = (*vault.Store)(nil)
)

func (c *command) store(ctx context.Context) (adminStore, error) {
	st, err := c.openStore()
	if err != nil {
		return nil, err
	}
	if err := st.Start(ctx); err != nil {
		return nil, err
	}
	return st.Records(), nil
}

// fileStore is for the commands only the file store has: in Vault, the
// security team writes provider records with Vault's own tools.
func (c *command) fileStore() (*filestore.Store, error) {
	st, err := c.openStore()
	if err != nil {
		return nil, err
	}
	fs, err := st.Files()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.Name(), err)
	}
	return fs, nil
}

// openStore opens the store the configuration names, for one command.
func (c *command) openStore() (*serve.Store, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	return serve.OpenStore(cfg, newLogger(c.e, "warn"), c.e.getenv)
}

// list splits a comma-separated flag value; "" is the empty list.
func list(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (e *env) table(header string, rows [][]string) {
	w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, header)
	for _, r := range rows {
		fmt.Fprintln(w, strings.Join(r, "\t"))
	}
	w.Flush()
}

func sub(args []string, usage string) (string, []string, error) {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "", nil, fmt.Errorf("want a subcommand: %s", usage)
	}
	return args[0], args[1:], nil
}

func (e *env) tokenCmd(ctx context.Context, args []string) error {
	verb, args, err := sub(args, "create, list, revoke")
	if err != nil {
		return err
	}
	c := e.newCommand("token " + verb)
	switch verb {
	case "create":
		user := c.String("user", "", "owner of the token (required)")
		group := c.String("group", "", "group the token belongs to (required); one the user may use")
		name := c.String("name", "", "what the token is for, e.g. the application")
		expires := c.Duration("expires", 0, "lifetime, e.g. 720h; 0 for no expiry")
		if pos, err := c.parse(args); err != nil {
			return err
		} else if len(pos) > 0 || *user == "" || *group == "" {
			return errors.New("token create: want -user and -group, and no other arguments")
		}
		st, err := c.store(ctx)
		if err != nil {
			return err
		}
		if err := st.EnsureSigningKey(ctx); err != nil {
			return err
		}
		tok, rec, err := manage.CreateToken(ctx, st, manage.TokenRequest{User: *user, Group: *group, Name: *name, TTL: *expires}, time.Now())
		if err != nil {
			return fmt.Errorf("token create: %w", err)
		}
		fmt.Fprintf(e.stderr, "token %s for user %s in group %s; it is shown once, keep it now:\n", rec.ID, rec.User, rec.Group)
		fmt.Fprintln(e.stdout, tok)
		return nil
	case "list":
		user := c.String("user", "", "only this user's tokens")
		if _, err := c.parse(args); err != nil {
			return err
		}
		st, err := c.store(ctx)
		if err != nil {
			return err
		}
		tokens, _ := st.Tokens(ctx)
		slices.SortFunc(tokens, func(a, b *record.Token) int { return a.Created.Compare(b.Created) })
		var rows [][]string
		now := time.Now()
		for _, t := range tokens {
			if *user != "" && t.User != *user {
				continue
			}
			rows = append(rows, []string{t.ID, t.User, t.Group, t.Name, t.Created.Format(time.RFC3339), expiry(t), t.State(now)})
		}
		e.table("ID\tUSER\tGROUP\tNAME\tCREATED\tEXPIRES\tSTATE", rows)
		return nil
	case "revoke":
		id, err := c.name(args, "token id")
		if err != nil {
			return err
		}
		st, err := c.store(ctx)
		if err != nil {
			return err
		}
		if err := manage.RevokeToken(ctx, st, id); err != nil {
			return fmt.Errorf("token revoke: %w", err)
		}
		fmt.Fprintf(e.stderr, "token %s revoked\n", id)
		return nil
	}
	return fmt.Errorf("token: unknown subcommand %q (create, list, revoke)", verb)
}

// mgmtTokenCmd issues management-API tokens (kwm_…), the credential a user
// or admin presents to the management API; they cannot call an LLM.
func (e *env) mgmtTokenCmd(ctx context.Context, args []string) error {
	verb, args, err := sub(args, "create")
	if err != nil {
		return err
	}
	if verb != "create" {
		return fmt.Errorf("mgmt-token: unknown subcommand %q (create)", verb)
	}
	c := e.newCommand("mgmt-token create")
	user := c.String("user", "", "the user the token acts as (required)")
	if pos, err := c.parse(args); err != nil {
		return err
	} else if len(pos) > 0 || *user == "" {
		return errors.New("mgmt-token create: want -user and no other arguments")
	}
	st, err := c.store(ctx)
	if err != nil {
		return err
	}
	if err := st.EnsureSigningKey(ctx); err != nil {
		return err
	}
	tok, rec, err := mgmt.IssueAPIToken(ctx, st, *user, time.Now())
	if err != nil {
		return fmt.Errorf("mgmt-token create: %w", err)
	}
	fmt.Fprintf(e.stderr, "management token %s for user %s; it is shown once, keep it now:\n", rec.ID, rec.User)
	fmt.Fprintln(e.stdout, tok)
	return nil
}

func expiry(t *record.Token) string {
	if t.Expires.IsZero() {
		return "never"
	}
	return t.Expires.Format(time.RFC3339)
}

func (e *env) userCmd(ctx context.Context, args []string) error {
	verb, args, err := sub(args, "add, set, delete, list")
	if err != nil {
		return err
	}
	c := e.newCommand("user " + verb)
	switch verb {
	case "add", "set":
		groups := c.String("groups", "", "comma-separated groups the user may use")
		role := c.String("role", string(record.RoleUser), "user or admin")
		disabled := c.Bool("disabled", false, "disable the user: all their tokens are refused")
		name, err := c.name(args, "user name")
		if err != nil {
			return err
		}
		st, err := c.store(ctx)
		if err != nil {
			return err
		}
		u, err := st.User(ctx, name)
		switch {
		case verb == "add" && err == nil:
			return fmt.Errorf("user add: user %q exists (use user set)", name)
		case verb == "add":
			u = &record.User{Name: name}
		case err != nil:
			return fmt.Errorf("user set: %w", err)
		default:
			copied := *u
			u = &copied
		}
		if verb == "add" || c.set["groups"] {
			u.Groups = list(*groups)
		}
		if verb == "add" || c.set["role"] {
			u.Role = record.Role(*role)
		}
		if verb == "add" || c.set["disabled"] {
			u.Disabled = *disabled
		}
		if err := manage.ValidateUser(u); err != nil {
			return fmt.Errorf("user %s: %w", verb, err)
		}
		return st.PutUser(ctx, u)
	case "delete":
		name, err := c.name(args, "user name")
		if err != nil {
			return err
		}
		st, err := c.store(ctx)
		if err != nil {
			return err
		}
		return st.DeleteUser(ctx, name)
	case "list":
		if _, err := c.parse(args); err != nil {
			return err
		}
		st, err := c.store(ctx)
		if err != nil {
			return err
		}
		users, _ := st.Users(ctx)
		slices.SortFunc(users, func(a, b *record.User) int { return strings.Compare(a.Name, b.Name) })
		var rows [][]string
		for _, u := range users {
			rows = append(rows, []string{u.Name, string(u.Role), strings.Join(u.Groups, ","), enabled(u.Disabled)})
		}
		e.table("NAME\tROLE\tGROUPS\tSTATE", rows)
		return nil
	}
	return fmt.Errorf("user: unknown subcommand %q (add, set, delete, list)", verb)
}

func enabled(disabled bool) string {
	if disabled {
		return "disabled"
	}
	return "enabled"
}

// rpmText shows a group's rate limit in a listing.
func rpmText(rpm int) string {
	if rpm == 0 {
		return "-"
	}
	return strconv.Itoa(rpm)
}

func (e *env) groupCmd(ctx context.Context, args []string) error {
	verb, args, err := sub(args, "add, set, delete, list")
	if err != nil {
		return err
	}
	c := e.newCommand("group " + verb)
	switch verb {
	case "add", "set":
		providers := c.String("providers", "", "comma-separated providers the group may call (empty: all)")
		models := c.String("models", "", "comma-separated models the group may use, 'prefix*' for a prefix (empty: all)")
		noCustom := c.Bool("disable-custom-keys", false, "refuse provider keys that members send themselves")
		disabled := c.Bool("disabled", false, "disable the group: all its tokens are refused")
		rpm := c.Int("rpm", 0, "requests a minute each of the group's tokens may make, per keyward replica (0: no limit)")
		name, err := c.name(args, "group name")
		if err != nil {
			return err
		}
		st, err := c.store(ctx)
		if err != nil {
			return err
		}
		g, err := st.Group(ctx, name)
		switch {
		case verb == "add" && err == nil:
			return fmt.Errorf("group add: group %q exists (use group set)", name)
		case verb == "add":
			g = &record.Group{Name: name}
		case err != nil:
			return fmt.Errorf("group set: %w", err)
		default:
			copied := *g
			g = &copied
		}
		if verb == "add" || c.set["providers"] {
			g.Providers = list(*providers)
		}
		if verb == "add" || c.set["models"] {
			g.Models = list(*models)
		}
		if verb == "add" || c.set["disable-custom-keys"] {
			g.DisableCustomKeys = *noCustom
		}
		if verb == "add" || c.set["disabled"] {
			g.Disabled = *disabled
		}
		if verb == "add" || c.set["rpm"] {
			g.RequestsPerMinute = *rpm
		}
		if err := manage.ValidateGroup(g); err != nil {
			return fmt.Errorf("group %s: %w", verb, err)
		}
		return st.PutGroup(ctx, g)
	case "delete":
		name, err := c.name(args, "group name")
		if err != nil {
			return err
		}
		st, err := c.store(ctx)
		if err != nil {
			return err
		}
		return st.DeleteGroup(ctx, name)
	case "list":
		if _, err := c.parse(args); err != nil {
			return err
		}
		st, err := c.store(ctx)
		if err != nil {
			return err
		}
		groups, _ := st.Groups(ctx)
		slices.SortFunc(groups, func(a, b *record.Group) int { return strings.Compare(a.Name, b.Name) })
		var rows [][]string
		for _, g := range groups {
			rows = append(rows, []string{g.Name, orAll(g.Providers), orAll(g.Models), fmt.Sprint(!g.DisableCustomKeys), rpmText(g.RequestsPerMinute), enabled(g.Disabled)})
		}
		e.table("NAME\tPROVIDERS\tMODELS\tCUSTOM KEYS\tRPM\tSTATE", rows)
		return nil
	}
	return fmt.Errorf("group: unknown subcommand %q (add, set, delete, list)", verb)
}

func orAll(v []string) string {
	if len(v) == 0 {
		return "*"
	}
	return strings.Join(v, ",")
}

// keyFlags collects repeated -key ID=ENV_VAR flags.
type keyFlags []filestore.KeyData

func (k *keyFlags) String() string { return fmt.Sprint(*k) }

func (k *keyFlags) Set(v string) error {
	id, env, ok := strings.Cut(v, "=")
	if !ok || id == "" || env == "" {
		return fmt.Errorf("%q: want ID=ENV_VAR (the variable that holds the key, not the key)", v)
	}
	*k = append(*k, filestore.KeyData{ID: id, Env: env})
	return nil
}

func (e *env) providerCmd(ctx context.Context, args []string) error {
	verb, args, err := sub(args, "set, delete, list")
	if err != nil {
		return err
	}
	c := e.newCommand("provider " + verb)
	switch verb {
	case "set":
		kind := c.String("kind", "", "openai, anthropic, azure, gemini or custom (required)")
		header := c.String("header", "", "header that carries the key (kind custom)")
		template := c.String("value-template", "", "header value with {key} where the key goes (kind custom)")
		version := c.String("anthropic-version", "", "anthropic-version sent when the client sends none (kind anthropic)")
		var keys keyFlags
		c.Var(&keys, "key", "ID=ENV_VAR: a key id and the environment variable that holds the key (repeatable)")
		name, err := c.name(args, "provider name")
		if err != nil {
			return err
		}
		st, err := c.fileStore()
		if err != nil {
			return err
		}
		return st.PutProvider(ctx, name, &filestore.ProviderData{
			Kind: record.Kind(*kind), Header: *header, ValueTemplate: *template, AnthropicVersion: *version, Keys: keys,
		})
	case "delete":
		name, err := c.name(args, "provider name")
		if err != nil {
			return err
		}
		st, err := c.fileStore()
		if err != nil {
			return err
		}
		return st.DeleteProvider(ctx, name)
	case "list":
		if _, err := c.parse(args); err != nil {
			return err
		}
		st, err := c.store(ctx)
		if err != nil {
			return err
		}
		providers, err := st.Providers(ctx)
		if err != nil {
			return err
		}
		slices.SortFunc(providers, func(a, b *record.Provider) int { return strings.Compare(a.Name, b.Name) })
		var rows [][]string
		for _, p := range providers {
			ids := make([]string, len(p.Keys))
			for i, k := range p.Keys {
				ids[i] = k.ID // never the key
			}
			rows = append(rows, []string{p.Name, string(p.Kind), strings.Join(ids, ","), fmt.Sprint(len(p.Keys))})
		}
		e.table("NAME\tKIND\tKEY IDS\tKEYS AVAILABLE", rows)
		return nil
	}
	return fmt.Errorf("provider: unknown subcommand %q (set, delete, list)", verb)
}
