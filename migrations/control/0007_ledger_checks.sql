-- The platform's nightly ledger check per company (powertab ledger check, run by the server's
-- money worker): every run is recorded, and a run with violations is an alarm platform staff
-- see (GET /api/v1/platform/ledger-checks).
create table control.ledger_checks (
    id uuid primary key,
    company_id bigint not null references control.company (id),
    ran_at timestamptz not null,
    transactions bigint not null,
    accounts bigint not null,
    violations text[] not null default '{}'
);
create index ledger_checks_company on control.ledger_checks (company_id, ran_at desc);
