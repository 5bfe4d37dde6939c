-- Online payments in `control` (DESIGN.md: Tenancy — the payment-notification inbox; Money and
-- the ledger — sandbox payments).
--
-- A company's sandbox provider, for demos and tests only: a platform admin switches it on per
-- company (audited), and only where the deployment configures a sandbox key.
alter table company add column sandbox_payments boolean not null default false;

-- Every provider notification whose signature checked out, kept before it is answered (within
-- 5 s) and processed after: a crash between the two loses nothing, and processing again has no
-- second effect (the ledger key `pay:{provider}:{transaction_id}`).
create table payment_inbox (
    id uuid primary key,
    provider text not null,
    company_id bigint not null references company (id),
    received_at timestamptz not null,
    body bytea not null check (octet_length(body) <= 65536),
    state text not null default 'received' check (state in ('received', 'processed', 'failed')),
    outcome text,
    attempts integer not null default 0,
    processed_at timestamptz
);
create index payment_inbox_waiting on payment_inbox (received_at) where state = 'received';
