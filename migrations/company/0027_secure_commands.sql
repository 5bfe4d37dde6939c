-- Secure commands in the queue (SECURE-COMMAND.md; core::secure::commands): the frame the server
-- built and stored with the command (resent byte for byte until settled; ingest carries it and
-- never holds a key), the sequence it carries, and the meter's acknowledgement bytes as ingest
-- received them (checked by the server against the meter's key).
alter table commands
    add column secure_frame bytea,
    add column secure_sequence bigint check (secure_sequence between 1 and 4294967295),
    add column secure_ack bytea;

-- At most one unfinished purchase or deduct per meter (DESIGN.md: the meter accepts only stored
-- + 1, so a second one would be stale on arrival; top-ups wait in the wallet meanwhile).
create unique index commands_one_money_in_flight on commands (meter_id)
    where op in ('purchase', 'deduct') and state in ('queued', 'sent', 'acknowledged');
