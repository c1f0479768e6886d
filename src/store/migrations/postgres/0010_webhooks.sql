-- Webhook endpoints, and deliveries to them through the same outbox as email: a
-- delivery goes to a subscriber or to an endpoint, never both.
CREATE TABLE webhook_endpoints (
    id BIGSERIAL PRIMARY KEY,
    url TEXT NOT NULL,
    -- The HMAC key of the signatures: kept as given, since every POST is signed with it;
    -- never returned or logged after the call that registered it.
    secret TEXT NOT NULL,
    created_at_us BIGINT NOT NULL,
    -- NULL while the endpoint is registered.
    deleted_at_us BIGINT
);

-- `email` holds `webhooks/{id}` for a webhook delivery (never the URL, which may carry
-- a credential of the receiver's).
ALTER TABLE deliveries ALTER COLUMN subscriber_id DROP NOT NULL;
ALTER TABLE deliveries ADD COLUMN endpoint_id BIGINT REFERENCES webhook_endpoints (id);
ALTER TABLE deliveries ADD CONSTRAINT deliveries_one_recipient
    CHECK ((subscriber_id IS NULL) <> (endpoint_id IS NULL));
