package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/manage"
	"github.com/keyward/keyward/record"
)

// manager opens the configured store with the management rules over it:
// every record command changes records through package manage, as the
// management API does.
func (c *command) manager(ctx context.Context) (*manage.Manager, error) {
	cfg, err := c.config()
	if err != nil {
		return nil, err
	}
	st, err := c.store(ctx)
	if err != nil {
		return nil, err
	}
	return manage.New(st, manage.Options{RotationGrace: cfg.Management.RotationGrace, MaxActiveTokens: cfg.Management.MaxActiveTokens})
}

func (e *env) tokenCmd(ctx context.Context, args []string) error {
	verb, args, err := sub(args, "create, list, rotate, revoke")
	if err != nil {
		return err
	}
	c := e.newCommand("token " + verb)
	switch verb {
	case "create":
		return e.tokenCreate(ctx, c, args)
	case "list":
		return e.tokenList(ctx, c, args)
	case "rotate":
		return e.tokenRotate(ctx, c, args)
	case "revoke":
		id, m, err := c.nameAndManager(ctx, args, "token id")
		if err != nil {
			return err
		}
		if err := m.RevokeToken(ctx, "", id); err != nil {
			return fmt.Errorf("token revoke: %w", err)
		}
		fmt.Fprintf(e.stderr, "token %s revoked\n", id)
		return nil
	}
	return fmt.Errorf("token: unknown subcommand %q (create, list, rotate, revoke)", verb)
}

// nameAndManager parses a command that takes one name and opens the
// manager.
func (c *command) nameAndManager(ctx context.Context, args []string, what string) (string, *manage.Manager, error) {
	name, err := c.name(args, what)
	if err != nil {
		return "", nil, err
	}
	m, err := c.manager(ctx)
	return name, m, err
}

func (e *env) tokenCreate(ctx context.Context, c *command, args []string) error {
	user := c.String("user", "", "owner of the token (required)")
	group := c.String("group", "", "group the token belongs to (required); one the user may use")
	name := c.String("name", "", "what the token is for, e.g. the application (required; unique among the user's active tokens)")
	expires := c.Duration("expires", 0, "lifetime, e.g. 720h; 0 for no expiry")
	principal := c.String("principal", "", "bind the token to a workload: the SPIFFE ID (or prefix ending in /*) of the only peer that may present it")
	if pos, err := c.parse(args); err != nil {
		return err
	} else if len(pos) > 0 || *user == "" || *group == "" {
		return errors.New("token create: want -user and -group, and no other arguments")
	}
	m, err := c.manager(ctx)
	if err != nil {
		return err
	}
	if err := m.EnsureSigningKey(ctx); err != nil {
		return err
	}
	iss, err := m.CreateToken(ctx, manage.TokenRequest{User: *user, Group: *group, Name: *name, TTL: *expires, Principal: *principal})
	if err != nil {
		return fmt.Errorf("token create: %w", err)
	}
	fmt.Fprintf(e.stderr, "token %s for user %s in group %s; it is shown once, keep it now:\n", iss.Record.ID, iss.Record.User, iss.Record.Group)
	fmt.Fprintln(e.stdout, iss.Token)
	return nil
}

func (e *env) tokenList(ctx context.Context, c *command, args []string) error {
	user := c.String("user", "", "only this user's tokens")
	if _, err := c.parse(args); err != nil {
		return err
	}
	m, err := c.manager(ctx)
	if err != nil {
		return err
	}
	tokens, err := m.Tokens(ctx, *user)
	if err != nil {
		return fmt.Errorf("token list: %w", err)
	}
	rows := make([][]string, 0, len(tokens))
	now := m.Now()
	for _, t := range tokens {
		rows = append(rows, []string{t.ID, t.User, t.Group, t.Name, t.Created.Format(time.RFC3339), expiry(t), t.State(now), orAny(t.Principal)})
	}
	e.table("ID\tUSER\tGROUP\tNAME\tCREATED\tEXPIRES\tSTATE\tBOUND TO", rows)
	return nil
}

func (e *env) tokenRotate(ctx context.Context, c *command, args []string) error {
	grace := c.Duration("grace", 0, "how long the old token keeps working (default management.rotation_grace)")
	id, m, err := c.nameAndManager(ctx, args, "token id")
	if err != nil {
		return err
	}
	var g *time.Duration
	if c.set["grace"] {
		g = grace
	}
	rot, err := m.RotateToken(ctx, "", id, g)
	if err != nil {
		return fmt.Errorf("token rotate: %w", err)
	}
	fmt.Fprintf(e.stderr, "token %s replaces %s, which works until %s; the new token is shown once, keep it now:\n", rot.New.ID, rot.Old.ID, rot.Old.Expires.Format(time.RFC3339))
	fmt.Fprintln(e.stdout, rot.Token)
	return nil
}

// orAny shows a token's binding: "-" for a token any peer may present.
func orAny(principal string) string {
	if principal == "" {
		return "-"
	}
	return principal
}

func expiry(t *record.Token) string {
	if t.Expires.IsZero() {
		return "never"
	}
	return t.Expires.Format(time.RFC3339)
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
	m, err := c.manager(ctx)
	if err != nil {
		return err
	}
	if err := m.EnsureSigningKey(ctx); err != nil {
		return err
	}
	tok, rec, err := m.IssueAPIToken(ctx, *user)
	if err != nil {
		return fmt.Errorf("mgmt-token create: %w", err)
	}
	fmt.Fprintf(e.stderr, "management token %s for user %s; it is shown once, keep it now:\n", rec.ID, rec.User)
	fmt.Fprintln(e.stdout, tok)
	return nil
}
