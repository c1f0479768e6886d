-- Secret keys the server keeps in the database, so that every replica has the same ones:
-- `tokens` authenticates the page and resume tokens given to clients.
CREATE TABLE server_keys (
    name TEXT PRIMARY KEY,
    key BYTEA NOT NULL,
    created_at_us BIGINT NOT NULL
);
