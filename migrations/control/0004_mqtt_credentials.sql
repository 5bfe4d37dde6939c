-- MQTT gateways' broker credentials are derived, never stored (core::gateway_credential):
-- HMAC(platform secret, gateway id, identity, generation). Rotating a credential bumps the
-- generation. It lives here, beside the status, because ingest provisions the broker from this
-- table alone.
alter table gateway_directory add column mqtt_credential_gen integer check (mqtt_credential_gen >= 1);
update gateway_directory set mqtt_credential_gen = 1 where kind = 'mqtt';
alter table gateway_directory add check ((kind = 'mqtt') = (mqtt_credential_gen is not null));
