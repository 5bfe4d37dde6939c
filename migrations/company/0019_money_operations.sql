-- Money operations around the counter (DESIGN.md: Money and the ledger; Tariffs and rating):
-- corrections of held readings above a company-set energy wait for an approver, arrears of a
-- closed account are written off only with one (both in `approval_requests`); fixed service fees
-- post once per (meter, account, local date); the daily close (日结) freezes booking dates; and
-- invoice (发票) requests are recorded.

alter table settings add column correction_approval_above_wh bigint not null default 100000
    check (correction_approval_above_wh >= 0);

-- Maker-checker requests other than reversals: `reading_correction` (target: the meter; the
-- held reading's time and the energy asked for) and `write_off` (target: the account; the
-- amount). No effect before an approver other than the requester approves; an undecided request
-- is withdrawn after 72 hours.
create table approval_requests (
    id uuid primary key,
    kind text not null check (kind in ('reading_correction', 'write_off')),
    target_id uuid not null,
    read_at timestamptz,
    energy_wh bigint check (energy_wh >= 0),
    amount_fen bigint check (amount_fen > 0),
    reason text not null,
    request_key text not null unique,
    requested_by uuid not null,
    requested_at timestamptz not null,
    state text not null default 'requested'
        check (state in ('requested', 'done', 'rejected', 'withdrawn')),
    decided_by uuid,
    decided_at timestamptz,
    outcome_txn uuid references ledger_transactions (id),
    check ((kind = 'reading_correction') = (read_at is not null and energy_wh is not null)),
    check ((kind = 'write_off') = (amount_fen is not null))
);
-- One open request per target and kind.
create unique index approval_requests_one_open on approval_requests (kind, target_id)
    where state = 'requested';

-- Fees: the last local date whose fixed service fees were posted for this (account, meter).
alter table rating_state add column fees_through date;

-- The daily close: every date up to and including `day` is frozen once its row exists.
create table day_closes (
    day date primary key,
    closed_at timestamptz not null,
    closed_by uuid,
    -- What the day booked, per kind and method (the 日结 report as it was at the close).
    summary jsonb not null
);

create table invoice_requests (
    id uuid primary key,
    account_id uuid not null references shop_accounts (id),
    title text not null check (length(title) between 1 and 200),
    tax_number text not null default '' check (length(tax_number) <= 40),
    amount_fen bigint not null check (amount_fen > 0),
    state text not null default 'requested' check (state in ('requested', 'issued', 'cancelled')),
    invoice_number text check (length(invoice_number) <= 40),
    request_key text not null unique,
    requested_by uuid,
    requested_at timestamptz not null,
    issued_by uuid,
    issued_at timestamptz,
    check ((state = 'issued') = (invoice_number is not null))
);
create index invoice_requests_account on invoice_requests (account_id, requested_at);
