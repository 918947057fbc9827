package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/keyward/keyward/manage"
)

// identityCmd manages principal mappings: a workload's SPIFFE ID (exact,
// or a prefix ending in "/*") mapped to a user and group, so that it calls
// without a keyward token.
func (e *env) identityCmd(ctx context.Context, args []string) error {
	verb, args, err := sub(args, "add, enable, disable, delete, list")
	if err != nil {
		return err
	}
	c := e.newCommand("identity " + verb)
	switch verb {
	case "add":
		principal := c.String("principal", "", "SPIFFE ID, or a prefix ending in /* (required), e.g. spiffe://cluster.local/ns/payments/sa/*")
		user := c.String("user", "", "user the workload acts as (required)")
		group := c.String("group", "", "group the workload calls in (required); one the user may use")
		disabled := c.Bool("disabled", false, "create the mapping disabled")
		name, m, err := c.nameAndManager(ctx, args, "identity name")
		if err != nil {
			return err
		}
		if *principal == "" || *user == "" || *group == "" {
			return errors.New("identity add: want -principal, -user and -group")
		}
		id, err := m.CreateIdentity(ctx, manage.IdentityRequest{Name: name, Principal: *principal, User: *user, Group: *group, Disabled: *disabled})
		if err != nil {
			return fmt.Errorf("identity add: %w", err)
		}
		fmt.Fprintf(e.stderr, "identity %s maps %s to user %s in group %s\n", id.Name, id.Principal, id.User, id.Group)
		return nil
	case "enable", "disable":
		name, m, err := c.nameAndManager(ctx, args, "identity name")
		if err != nil {
			return err
		}
		_, err = m.SetIdentityDisabled(ctx, name, verb == "disable")
		return wrapVerb("identity", verb, err)
	case "delete":
		name, m, err := c.nameAndManager(ctx, args, "identity name")
		if err != nil {
			return err
		}
		return wrapVerb("identity", verb, m.DeleteIdentity(ctx, name))
	case "list":
		if _, err := c.parse(args); err != nil {
			return err
		}
		m, err := c.manager(ctx)
		if err != nil {
			return err
		}
		ids, err := m.Identities(ctx)
		if err != nil {
			return wrapVerb("identity", verb, err)
		}
		rows := make([][]string, 0, len(ids))
		for _, id := range ids {
			rows = append(rows, []string{id.Name, id.Principal, id.User, id.Group, enabled(id.Disabled), id.Created.Format(time.RFC3339)})
		}
		e.table("NAME\tPRINCIPAL\tUSER\tGROUP\tSTATE\tCREATED", rows)
		return nil
	}
	return fmt.Errorf("identity: unknown subcommand %q (add, enable, disable, delete, list)", verb)
}
