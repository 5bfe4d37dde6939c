-- Orders without a paid notice (issue 14: Payments): when the payments worker last asked the
-- provider about the order, and when the provider closed it (an expired order closed there can
-- no longer be paid).
alter table payment_orders
    add column queried_at timestamptz,
    add column closed_at timestamptz;
create index payment_orders_unnotified on payment_orders (created_at)
    where transaction_id is null and closed_at is null;
