-- The send-rate limit shared by every process on this database: the time of the next
-- free send slot per channel, reserved a few slots at a time.
CREATE TABLE send_pace (
    channel TEXT PRIMARY KEY,
    next_slot_us BIGINT NOT NULL
);

-- The sending quota counts what was sent within its window.
CREATE INDEX deliveries_sent ON deliveries (sent_at_us) WHERE sent_at_us IS NOT NULL;
