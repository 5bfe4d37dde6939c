-- The sandbox provider's own book of trades (issue 14: Sandbox provider), what a real provider
-- keeps on its side: a row when its pay page takes a payment, or when our order query closes an
-- unpaid order there (then it can no longer be paid). Our order query reads it, so a paid notice
-- that never arrived is found. Demos and tests only.
create table sandbox_trades (
    company_id bigint not null references company (id),
    out_trade_no text not null,
    state text not null check (state in ('paid', 'closed')),
    transaction_id text unique,
    amount_fen bigint check (amount_fen > 0),
    paid_at timestamptz,
    created_at timestamptz not null,
    primary key (company_id, out_trade_no),
    check ((state = 'paid') = (transaction_id is not null and amount_fen is not null and paid_at is not null))
);
