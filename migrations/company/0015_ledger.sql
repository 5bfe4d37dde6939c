-- Prepaid money (DESIGN.md: Money and the ledger; core::billing). Shop accounts with their meters,
-- the double-entry ledger, cashier shifts and receipt numbers.
--
-- The ledger is append-only: transactions and entries are never updated or deleted (the triggers
-- below refuse it for every role, the owner included); corrections are new transactions. A
-- transaction's entries sum to zero, checked when it commits. `ledger_accounts.balance_fen` caches
-- the sum of an account's entries, updated in the posting transaction under a row lock;
-- `powertab ledger check` compares the two.

create table shop_accounts (
    id uuid primary key,
    shop_id uuid not null references shops (id),
    holder_name text not null,
    holder_phone text not null default '',
    state text not null default 'open'
        check (state in ('open', 'closing', 'closed', 'closed_in_arrears')),
    opened_at timestamptz not null,
    closed_at timestamptz,
    -- The opening request's Idempotency-Key and digest: a replayed opening returns this account.
    open_key text not null unique,
    open_request_hash text not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    check ((state in ('closed', 'closed_in_arrears')) = (closed_at is not null))
);
-- A shop has at most one account that is not closed.
create unique index shop_accounts_one_per_shop on shop_accounts (shop_id)
    where state in ('open', 'closing');

-- The meters of an account, with the reading the account starts from.
create table account_meters (
    account_id uuid not null references shop_accounts (id),
    meter_id uuid not null references meters (id),
    opening_energy_wh bigint not null check (opening_energy_wh >= 0),
    opening_read_at timestamptz not null,
    -- Typed in by an operator (no fresh stored reading); audited.
    opening_manual boolean not null default false,
    joined_at timestamptz not null,
    left_at timestamptz,
    primary key (account_id, meter_id)
);
-- A meter is in at most one open account.
create unique index account_meters_one_open on account_meters (meter_id) where left_at is null;

-- A cashier's shift (交班): cash taken posts to `clearing:cash:<shift id>`.
create table cashier_shifts (
    id uuid primary key,
    user_id uuid not null references users (id),
    opened_at timestamptz not null,
    float_fen bigint not null check (float_fen >= 0),
    closed_at timestamptz,
    counted_cash_fen bigint,
    difference_fen bigint,
    check ((closed_at is null) = (counted_cash_fen is null))
);
create unique index cashier_shifts_one_open on cashier_shifts (user_id) where closed_at is null;

create table ledger_accounts (
    -- `wallet:<account>`, `clearing:cash:<shift>`, `revenue:energy`, … (core::billing::ledger::chart).
    key text primary key check (key ~ '^[a-z_]+(:[a-z0-9_-]+){0,2}$'),
    class text not null,
    shop_account_id uuid references shop_accounts (id),
    meter_id uuid references meters (id),
    balance_fen bigint not null default 0,
    entry_count bigint not null default 0,
    created_at timestamptz not null default now()
);
create index ledger_accounts_shop_account on ledger_accounts (shop_account_id)
    where shop_account_id is not null;

create table ledger_transactions (
    id uuid primary key,
    kind text not null,
    -- Derived (`rate:<meter>:<ms>`, `close:<account>`, …) or the client's Idempotency-Key
    -- (`client:<key>`): the same event can never post twice.
    idempotency_key text not null unique,
    -- SHA-256 of the request that posted it: the same key with another request is refused.
    request_hash text not null,
    shop_account_id uuid references shop_accounts (id),
    event_at timestamptz not null,
    -- The company-local date of the commit (DESIGN.md: Booking).
    booked_on date not null,
    posted_at timestamptz not null default now(),
    -- `user:<id>` or `system:<worker>`.
    actor text not null,
    method text,
    receipt_no text unique,
    -- A reversal names its original; one per original.
    reverses uuid unique references ledger_transactions (id),
    memo text not null default ''
);
create index ledger_transactions_account on ledger_transactions (shop_account_id, posted_at)
    where shop_account_id is not null;
create index ledger_transactions_booked on ledger_transactions (booked_on);

create table ledger_entries (
    txn_id uuid not null references ledger_transactions (id),
    seq smallint not null check (seq >= 0),
    account_key text not null references ledger_accounts (key),
    amount_fen bigint not null check (amount_fen <> 0),
    primary key (txn_id, seq)
);
create index ledger_entries_account on ledger_entries (account_key, txn_id);

-- Receipt numbers: one gapless sequence per company and local day (a rolled-back posting gives
-- its number back, because the counter moves in the same transaction).
create table receipt_sequences (
    day date primary key,
    last_no integer not null
);

create function ledger_append_only() returns trigger language plpgsql as $$
begin
    raise exception 'the ledger is append-only: % on % is refused', tg_op, tg_table_name
        using errcode = 'P0001';
end
$$;
create trigger ledger_transactions_append_only before update or delete on ledger_transactions
    for each row execute function ledger_append_only();
create trigger ledger_transactions_no_truncate before truncate on ledger_transactions
    for each statement execute function ledger_append_only();
create trigger ledger_entries_append_only before update or delete on ledger_entries
    for each row execute function ledger_append_only();
create trigger ledger_entries_no_truncate before truncate on ledger_entries
    for each statement execute function ledger_append_only();

-- Every transaction balances, checked when the database transaction commits (all its entries
-- are in by then).
create function ledger_transaction_balanced() returns trigger language plpgsql as $$
declare
    total numeric;
    legs integer;
begin
    -- Qualified by the trigger's own schema: the commit may run under any search_path.
    execute format('select coalesce(sum(amount_fen), 0), count(*) from %I.ledger_entries where txn_id = $1',
                   tg_table_schema)
        into total, legs using new.txn_id;
    if total <> 0 or legs < 2 then
        raise exception 'ledger transaction % does not balance (sum %, % entries)', new.txn_id, total, legs
            using errcode = 'P0001';
    end if;
    return null;
end
$$;
create constraint trigger ledger_entries_balanced after insert on ledger_entries
    deferrable initially deferred for each row execute function ledger_transaction_balanced();
