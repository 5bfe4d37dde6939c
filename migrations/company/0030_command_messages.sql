-- Each MQTT message that carried a purchase or deduct (MQTT-GATEWAY.md: "PowerTab resends a
-- purchase or deduct as a new message (new `id`, fresh `expires_at`) carrying the same `secure`
-- bytes"). The message id is what the gateway acknowledges; the first acknowledgement of a
-- message is applied and later ones ignored. An `expired` or `failed` one ends that message only.
create table command_messages (
    id uuid primary key,
    command_id uuid not null references commands(id),
    sent_at timestamptz not null,
    expires_at timestamptz not null,
    outcome text,
    answered_at timestamptz
);
create index command_messages_by_command on command_messages (command_id, sent_at);
