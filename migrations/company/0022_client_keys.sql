-- One namespace for the clients' Idempotency-Keys (core::billing::client_keys; DESIGN.md: API
-- conventions). Every money request claims its key here for one operation on one object before
-- its own table's replay rule runs, so a key can never serve two different requests, whichever
-- tables they write. Keys are kept (DESIGN.md asks for 30 days; the ledger keeps its keys
-- forever, so this does too). Keys used before this table existed keep their tables' own
-- checks only.
create table client_keys (
    key text primary key,
    operation text not null,
    subject uuid not null,
    claimed_at timestamptz not null default now()
);
