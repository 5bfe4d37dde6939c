-- One property company's schema (c_<id>): its users and its audit log. Runs with
-- search_path = the company schema. No foreign keys leave the schema except to control
-- (DESIGN.md: Scale-out), and there are none yet.

create table users (
    id uuid primary key,
    username text not null unique,             -- shop tenants use their phone number
    display_name text not null default '',
    phone text not null default '',
    password_hash text not null,               -- argon2id PHC string
    role text not null check (role in ('company_admin', 'operator', 'auditor', 'shop_tenant')),
    status text not null default 'active' check (status in ('active', 'inactive')),
    must_change_password boolean not null default true, -- initial and reset passwords
    rights text[] not null default '{}',       -- operator rights (roles::Right names)
    building_ids uuid[] not null default '{}', -- buildings an operator is limited to; empty = all
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table audit_log (
    id uuid primary key,                       -- uuid v7: time ordered, serves as the list cursor
    at timestamptz not null default now(),
    actor_id uuid,
    actor_name text not null,
    actor_role text not null,
    source_ip text,
    action text not null,                      -- e.g. 'user.create', 'user.rights'
    target_kind text not null,
    target_id text,
    before jsonb,
    after jsonb
);
create index audit_log_at on audit_log (at);
