-- Every print of a receipt (DESIGN.md: the counter's receipts): the first is the original, any
-- later one is a reprint and says so (补打).
create table receipt_prints (
    txn_id uuid not null references ledger_transactions (id),
    printed_at timestamptz not null,
    printed_by uuid
);
create index receipt_prints_txn on receipt_prints (txn_id);
