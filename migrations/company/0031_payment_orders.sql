-- Online payment orders (issue 14: Payments; DESIGN.md: Money and the ledger). An order is made
-- for one account (and, for a meter-side account, the meter to credit) before the tenant pays; a
-- verified paid notice credits it once: `created → credited` (paid and credited in one
-- transaction, `paid_at` and `credited_txn` set; `delivered` once a meter-side purchase is
-- verified), or `expired` (our timer or the provider's close), `cancelled`, `amount_mismatch`
-- (the paid amount is not the order's: the money goes to `suspense`). A paid notice for an expired
-- or cancelled order still credits and is flagged. Refund states come with online refunds.
create table payment_orders (
    id uuid primary key,
    provider text not null check (provider in ('sandbox', 'wechat', 'alipay')),
    out_trade_no text not null check (out_trade_no ~ '^[A-Za-z0-9_-]{6,32}$'),
    account_id uuid not null references shop_accounts(id),
    meter_id uuid references meters(id),
    amount_fen bigint not null check (amount_fen > 0),
    state text not null check (state in ('created', 'credited', 'delivered', 'expired', 'cancelled',
        'amount_mismatch', 'refund_pending', 'refunded', 'refund_failed')),
    created_by uuid,
    created_at timestamptz not null,
    expires_at timestamptz not null,
    transaction_id text,
    paid_amount_fen bigint,
    paid_at timestamptz,
    credited_txn uuid references ledger_transactions(id),
    -- Why an operator should look: `paid_after_expiry`, `paid_after_cancel`, `account_closed`,
    -- `amount_mismatch`, `paid_twice`.
    flag text,
    updated_at timestamptz not null,
    unique (provider, out_trade_no),
    unique (provider, transaction_id)
);
create index payment_orders_open on payment_orders (expires_at) where state = 'created';
create index payment_orders_by_account on payment_orders (account_id, created_at);
