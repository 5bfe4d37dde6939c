-- Reversals (冲正) of counter top-ups and refunds (DESIGN.md: Money and the ledger; the counter):
-- the company's window and approval threshold, and the maker-checker requests. No money moves
-- before a request is posted; a request not decided within 72 hours is withdrawn.
alter table settings add column reversal_window_days integer not null default 30
    check (reversal_window_days between 1 and 366);
alter table settings add column reversal_approval_above_fen bigint not null default 50000
    check (reversal_approval_above_fen >= 0);

create table reversal_requests (
    id uuid primary key,
    txn_id uuid not null references ledger_transactions (id),
    amount_fen bigint not null check (amount_fen > 0),
    reason text not null,
    -- The asking request's Idempotency-Key: the same key again answers with this request.
    request_key text not null unique,
    requested_by uuid not null,
    requested_at timestamptz not null,
    state text not null default 'requested'
        check (state in ('requested', 'posted', 'rejected', 'withdrawn')),
    decided_by uuid,
    decided_at timestamptz,
    posted_txn uuid references ledger_transactions (id)
);
-- One open request per original.
create unique index reversal_requests_one_open on reversal_requests (txn_id) where state = 'requested';
