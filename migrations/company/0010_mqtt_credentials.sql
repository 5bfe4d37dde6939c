-- MQTT gateways no longer carry an operator-chosen password (its hash could not be provisioned
-- at the broker, which needs the password itself): their credential is derived by the platform
-- (core::gateway_credential) and its generation lives in control.gateway_directory.
alter table gateways drop column mqtt_password_hash;
