-- The platform's own schema: companies, platform staff, refresh tokens, login throttling and
-- the platform audit log. Runs with search_path = control.

create table company (
    id bigint generated always as identity primary key,
    slug text not null unique,                 -- what users type as "company" when logging in
    name text not null,
    schema_name text not null unique,          -- always 'c_' || id, written by the onboarding code
    status text not null default 'active' check (status in ('active', 'suspended')),
    time_zone text not null default 'Asia/Shanghai', -- IANA name; tariffs, reports and UI use it
    max_meters integer not null default 5000 check (max_meters >= 0),
    max_gateways integer not null default 500 check (max_gateways >= 0),
    max_operators integer not null default 50 check (max_operators >= 0), -- company staff users
    contact_name text not null default '',
    contact_phone text not null default '',
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table platform_user (
    id uuid primary key,
    username text not null unique,
    display_name text not null default '',
    password_hash text not null,               -- argon2id PHC string
    role text not null check (role in ('platform_admin', 'platform_support')),
    status text not null default 'active' check (status in ('active', 'inactive')),
    must_change_password boolean not null default true, -- initial and reset passwords
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table refresh_token (
    token_hash bytea primary key,              -- sha256 of the opaque token; the token is never stored
    family_id uuid not null,                   -- every rotation of one login; reuse revokes the family
    company_id bigint references company (id), -- null for platform staff outside a company
    user_id uuid not null,                     -- platform_user.id or the company schema's users.id
    is_platform_user boolean not null,
    expires_at timestamptz not null,
    used_at timestamptz,                       -- set when rotated; presenting it again is reuse
    revoked_at timestamptz,
    created_at timestamptz not null default now()
);
create index refresh_token_user on refresh_token (user_id) where revoked_at is null;
create index refresh_token_family on refresh_token (family_id);

create table login_throttle (
    key text primary key,                      -- 'acct:<company slug>/<username>' or 'addr:<ip>'
    failures integer not null,                 -- failed attempts since window_started_at
    window_started_at timestamptz not null,
    locked_until timestamptz
);

create table audit_log (
    id uuid primary key,                       -- uuid v7: time ordered, serves as the list cursor
    at timestamptz not null default now(),
    actor_id uuid,
    actor_name text not null,
    actor_role text not null,
    source_ip text,
    action text not null,                      -- e.g. 'company.create', 'company.enter'
    target_kind text not null,
    target_id text,
    company_id bigint,                         -- the company acted on, when there is one
    before jsonb,
    after jsonb
);
create index audit_log_at on audit_log (at);
