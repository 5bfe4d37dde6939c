-- Notifications on their way out (core::notify): the company's vendor accounts, how messages
-- go, each message's delivery, users' preferences and operators' alerts.

-- The company's vendor accounts. Public settings only: the secrets (AccessKey secret, SecretKey,
-- AppSecret, the WeChat callback token, the cached access token) are in `secrets`, sealed.
create table notify_accounts (
    channel text primary key check (channel in ('aliyun', 'tencent', 'wechat')),
    enabled boolean not null default true,
    -- aliyun: access_key_id, sign_name; tencent: secret_id, sdk_app_id, sign_name, region;
    -- wechat: app_id.
    config jsonb not null default '{}',
    -- The vendor's template id per message kind.
    templates jsonb not null default '{}',
    -- The vendor refused the credentials then (a wrong secret): nothing goes through this
    -- account until someone enters them again.
    broken_at timestamptz,
    broken_reason text not null default '',
    -- When the cached WeChat access token stops working.
    token_expires_at timestamptz,
    updated_at timestamptz not null,
    updated_by text not null
);

-- How messages go (one row).
create table notify_settings (
    id boolean primary key default true check (id),
    -- The channel a phone number is sent through.
    sms_channel text not null default 'sandbox' check (sms_channel in ('sandbox', 'aliyun', 'tencent')),
    -- At most this many messages per phone number in any hour (trip notices are never held).
    per_phone_hour integer not null default 10 check (per_phone_hour between 1 and 1000),
    -- An operator alert nobody acknowledged goes to the company's admins after this long.
    escalate_after_min integer not null default 30 check (escalate_after_min between 1 and 10080),
    updated_at timestamptz not null default now()
);
insert into notify_settings default values;

alter table notifications
    add column user_id uuid references users (id),
    -- The template's parameters, in order: [[name, value], …].
    add column params jsonb not null default '[]',
    add column attempts integer not null default 0,
    -- A transient failure or the per-phone limit: not before then.
    add column next_try_at timestamptz,
    -- A sender holds the message until then (several server processes may send).
    add column claimed_until timestamptz,
    add column sent_at timestamptz,
    add column vendor_ref text,
    -- When the delivery report said delivered (or failed).
    add column reported_at timestamptz,
    add column report_checked_at timestamptz,
    add column error text not null default '',
    -- What an operator alert is about: `field_alarm:<id>`, `command:<id>`.
    add column source text;
create index notifications_due on notifications (deliver_after) where state = 'queued';
create index notifications_awaiting_report on notifications (channel, sent_at) where state = 'sent';
create index notifications_vendor_ref on notifications (channel, vendor_ref) where vendor_ref is not null;
create index notifications_recipient on notifications (recipient, sent_at);

-- A WeChat account linked to a user (the self-service issue links them; WeChat messages go to it).
alter table users add column wechat_openid text unique;

-- Kinds of message a user turned off (trip notices and "power cut" cannot be turned off).
create table notify_preferences (
    user_id uuid not null references users (id),
    kind text not null,
    primary key (user_id, kind)
);

-- Which operator alerts were written, per source and level (1 = the people who asked for them,
-- 2 = escalated to the company's admins), so each is written once.
create table notify_alerts (
    source text not null,
    level smallint not null check (level in (1, 2)),
    created_at timestamptz not null,
    primary key (source, level)
);
