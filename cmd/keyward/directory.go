package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/keyward/keyward/filestore"
	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
)

// recordCommands are the add, set, delete and list verbs of one kind of
// named record R (users, groups), over package manage's methods of that
// kind. P is the kind's patch: add makes a record from every flag, set
// changes the fields whose flags are given.
type recordCommands[R any, P any, PP interface {
	*P
	Apply(*R)
}] struct {
	kind string
	// flags defines the kind's flags on c and returns the patch they
	// make, of every flag (all) or of the flags given.
	flags func(c *command) func(all bool) P
	// named is a record of the kind with nothing but its name.
	named  func(name string) R
	create func(m *manage.Manager, ctx context.Context, r R) (*R, error)
	update func(m *manage.Manager, ctx context.Context, name string, p P) (*R, error)
	del    func(m *manage.Manager, ctx context.Context, name string) error
	// list returns the listing's header and rows.
	list func(ctx context.Context, m *manage.Manager) (string, [][]string, error)
}

// addOrSet makes the record name from every flag (add) or changes the
// fields whose flags are given (set).
func (rc *recordCommands[R, P, PP]) addOrSet(ctx context.Context, m *manage.Manager, add bool, name string, patch func(all bool) P) error {
	if !add {
		_, err := rc.update(m, ctx, name, patch(false))
		return err
	}
	r, p := rc.named(name), patch(true)
	PP(&p).Apply(&r)
	_, err := rc.create(m, ctx, r)
	return err
}

func (rc *recordCommands[R, P, PP]) run(ctx context.Context, e *env, args []string) error {
	verb, args, err := sub(args, "add, set, delete, list")
	if err != nil {
		return err
	}
	c := e.newCommand(rc.kind + " " + verb)
	switch verb {
	case "add", "set":
		patch := rc.flags(c)
		name, m, err := c.nameAndManager(ctx, args, rc.kind+" name")
		if err != nil {
			return err
		}
		return wrapVerb(rc.kind, verb, rc.addOrSet(ctx, m, verb == "add", name, patch))
	case "delete":
		name, m, err := c.nameAndManager(ctx, args, rc.kind+" name")
		if err != nil {
			return err
		}
		return wrapVerb(rc.kind, verb, rc.del(m, ctx, name))
	case "list":
		if _, err := c.parse(args); err != nil {
			return err
		}
		m, err := c.manager(ctx)
		if err != nil {
			return err
		}
		header, rows, err := rc.list(ctx, m)
		if err != nil {
			return wrapVerb(rc.kind, verb, err)
		}
		e.table(header, rows)
		return nil
	}
	return fmt.Errorf("%s: unknown subcommand %q (add, set, delete, list)", rc.kind, verb)
}

func wrapVerb(kind, verb string, err error) error {
	if err != nil {
		return fmt.Errorf("%s %s: %w", kind, verb, err)
	}
	return nil
}

// given returns v when the flag was given (or all flags count), else nil:
// one field of a patch.
func given[T any](c *command, flag string, all bool, v T) *T {
	if all || c.set[flag] {
		return &v
	}
	return nil
}

func (e *env) userCmd(ctx context.Context, args []string) error {
	rc := &recordCommands[record.User, manage.UserPatch, *manage.UserPatch]{
		kind: "user",
		flags: func(c *command) func(bool) manage.UserPatch {
			groups := c.String("groups", "", "comma-separated groups the user may use")
			role := c.String("role", string(record.RoleUser), "user or admin")
			disabled := c.Bool("disabled", false, "disable the user: all their tokens are refused")
			return func(all bool) manage.UserPatch {
				return manage.UserPatch{Groups: given(c, "groups", all, list(*groups)), Role: given(c, "role", all, record.Role(*role)), Disabled: given(c, "disabled", all, *disabled)}
			}
		},
		named:  func(name string) record.User { return record.User{Name: name} },
		create: (*manage.Manager).CreateUser,
		update: (*manage.Manager).UpdateUser,
		del:    (*manage.Manager).DeleteUser,
		list: func(ctx context.Context, m *manage.Manager) (string, [][]string, error) {
			users, err := m.Users(ctx)
			rows := make([][]string, 0, len(users))
			for _, u := range users {
				rows = append(rows, []string{u.Name, string(u.Role), strings.Join(u.Groups, ","), enabled(u.Disabled)})
			}
			return "NAME\tROLE\tGROUPS\tSTATE", rows, err
		},
	}
	return rc.run(ctx, e, args)
}

func (e *env) groupCmd(ctx context.Context, args []string) error {
	rc := &recordCommands[record.Group, manage.GroupPatch, *manage.GroupPatch]{
		kind:   "group",
		flags:  groupFlags,
		named:  func(name string) record.Group { return record.Group{Name: name} },
		create: (*manage.Manager).CreateGroup,
		update: (*manage.Manager).UpdateGroup,
		del:    (*manage.Manager).DeleteGroup,
		list: func(ctx context.Context, m *manage.Manager) (string, [][]string, error) {
			groups, err := m.Groups(ctx)
			rows := make([][]string, 0, len(groups))
			for _, g := range groups {
				rows = append(rows, []string{g.Name, orAll(g.Providers), orAll(g.Models), fmt.Sprint(!g.DisableCustomKeys), rpmText(g.RequestsPerMinute), enabled(g.Disabled)})
			}
			return "NAME\tPROVIDERS\tMODELS\tCUSTOM KEYS\tRPM\tSTATE", rows, err
		},
	}
	return rc.run(ctx, e, args)
}

func groupFlags(c *command) func(bool) manage.GroupPatch {
	providers := c.String("providers", "", "comma-separated providers the group may call (empty: all)")
	models := c.String("models", "", "comma-separated models the group may use, 'prefix*' for a prefix (empty: all)")
	noCustom := c.Bool("disable-custom-keys", false, "refuse provider keys that members send themselves")
	disabled := c.Bool("disabled", false, "disable the group: all its tokens are refused")
	rpm := c.Int("rpm", 0, "requests a minute each of the group's users may make, per keyward replica (0: no limit)")
	return func(all bool) manage.GroupPatch {
		return manage.GroupPatch{
			Providers: given(c, "providers", all, list(*providers)), Models: given(c, "models", all, list(*models)),
			DisableCustomKeys: given(c, "disable-custom-keys", all, *noCustom), Disabled: given(c, "disabled", all, *disabled),
			RequestsPerMinute: given(c, "rpm", all, *rpm),
		}
	}
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
		return e.providerSet(ctx, c, args)
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
		return e.providerList(ctx, c, args)
	}
	return fmt.Errorf("provider: unknown subcommand %q (set, delete, list)", verb)
}

func (e *env) providerSet(ctx context.Context, c *command, args []string) error {
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
}

func (e *env) providerList(ctx context.Context, c *command, args []string) error {
	if _, err := c.parse(args); err != nil {
		return err
	}
	m, err := c.manager(ctx)
	if err != nil {
		return err
	}
	providers, err := m.Providers(ctx)
	if err != nil {
		return fmt.Errorf("provider list: %w", err)
	}
	rows := make([][]string, 0, len(providers))
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
