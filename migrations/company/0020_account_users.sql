-- Shop-tenant users of an account (DESIGN.md: Tenancy; issue 11, Accounts): a tenant reads the
-- accounts linked to them, and only those. A link outlives the account's close, so a former
-- tenant keeps read-only history and never sees the next tenant's account of the same shop.
create table account_users (
    account_id uuid not null references shop_accounts (id),
    user_id uuid not null references users (id),
    linked_at timestamptz not null,
    linked_by uuid,
    primary key (account_id, user_id)
);
create index account_users_user on account_users (user_id);
