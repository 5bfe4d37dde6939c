-- DTU registrations (DESIGN.md: Ingest, DTU dial-in): no registration may be a prefix of another,
-- across all companies. A refused attempt to enter one that overlaps is recorded here, outside
-- the refused request's transaction: counted per company for the rate limit (10 an hour, so the
-- refusal cannot be used to guess another company's bytes one at a time) and listed to
-- platform staff, who see who tried what.
create table registration_refusals (
    id bigserial primary key,
    -- No foreign key: the row is written beside a request that may hold the company row locked
    -- (quota checks take it `for update`), and a key check would wait for that request forever.
    company_id bigint not null,
    registration_hex text not null,
    -- 'overlap': it is a prefix of another registration or another is a prefix of it;
    -- 'throttled': refused unchecked because the company hit the hourly limit.
    reason text not null check (reason in ('overlap', 'throttled')),
    actor_name text not null,
    source_ip text,
    at timestamptz not null default now()
);
create index registration_refusals_company_at on registration_refusals (company_id, at);
-- Platform staff may hand a registration nobody claimed to a company: its admins then see it
-- and enter the gateway. Only the platform sees registrations that match no gateway otherwise.
alter table unclaimed_registrations add column claimed_for bigint references company (id);
