-- Durable notification outbox: one row per (alert transition, channel), written before delivery.
CREATE TABLE IF NOT EXISTS notification_outbox (
    id VARCHAR PRIMARY KEY,            -- idempotency key (notify.base.notification_id)
    channel VARCHAR NOT NULL,
    kind VARCHAR NOT NULL,             -- firing | resolved | test
    alert_id VARCHAR NOT NULL,
    rule VARCHAR NOT NULL,
    service VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    payload VARCHAR NOT NULL,          -- JSON of the Notification (notification_to_dict)
    state VARCHAR NOT NULL,            -- pending | delivered | dead
    attempts INTEGER NOT NULL,
    last_error VARCHAR,
    created_at TIMESTAMP NOT NULL,
    next_attempt_at TIMESTAMP NOT NULL,
    updated_at TIMESTAMP NOT NULL,
    delivered_at TIMESTAMP
);
