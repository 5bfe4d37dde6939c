-- Re-keying a meter-side meter onto a newer master key version (core::secure::rekey;
-- SECURE-COMMAND.md: "existing meters keep theirs until re-keyed").
--
-- SECURE-COMMAND.md v1 has no command that loads a key over the air, so the new meter key is
-- loaded in the field (exported, audited) and the platform then proves the switch: a set-price
-- frame under the new version, at the price the meter already counts at, which only a meter
-- holding the new key accepts. Until that verifies the meter keeps its version and takes no money.
alter table meter_secure add column rekey_to_version integer;

-- The master key version each frame was built under: its acknowledgement is checked under the
-- same keys, whatever the meter is recorded to hold when it comes back.
alter table commands add column secure_key_version integer;
update commands c set secure_key_version = s.key_version
  from meter_secure s where s.meter_id = c.meter_id and c.secure_frame is not null;
