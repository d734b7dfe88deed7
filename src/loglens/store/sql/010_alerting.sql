-- Alert instances (one row per episode of a (rule, service) dedup key), anomalies, silences.
CREATE TABLE IF NOT EXISTS alerts (
    id VARCHAR PRIMARY KEY,
    rule VARCHAR NOT NULL,
    service VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    state VARCHAR NOT NULL,           -- pending | firing | resolved
    value DOUBLE,
    threshold DOUBLE,
    summary VARCHAR NOT NULL,
    started_at TIMESTAMP NOT NULL,    -- UTC; when the condition first held
    fired_at TIMESTAMP,
    resolved_at TIMESTAMP,
    labels VARCHAR NOT NULL,          -- JSON object
    notified BOOLEAN NOT NULL,        -- a firing notification was handed to the notifiers
    updated_at TIMESTAMP NOT NULL
);

CREATE TABLE IF NOT EXISTS anomalies (
    id VARCHAR PRIMARY KEY,
    detected_at TIMESTAMP NOT NULL,
    type VARCHAR NOT NULL,
    severity VARCHAR NOT NULL,
    service VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    doc VARCHAR NOT NULL              -- the anomaly as JSON, valid against schemas/anomaly_schema.yaml
);

CREATE TABLE IF NOT EXISTS silences (
    id VARCHAR PRIMARY KEY,
    matchers VARCHAR NOT NULL,        -- JSON object: label -> exact value
    starts_at TIMESTAMP NOT NULL,
    expires_at TIMESTAMP NOT NULL,
    comment VARCHAR NOT NULL,
    created_by VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL
);
