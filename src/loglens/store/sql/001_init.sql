-- Raw logs, dead letters, per-minute metrics and service registry.
CREATE TABLE IF NOT EXISTS logs (
    id BIGINT NOT NULL,
    ts TIMESTAMP NOT NULL,            -- event time, UTC
    received_at TIMESTAMP NOT NULL,   -- arrival time, UTC
    level VARCHAR NOT NULL,
    service VARCHAR NOT NULL,
    message VARCHAR NOT NULL,
    user_id VARCHAR,
    ip_address VARCHAR,
    response_time_ms DOUBLE,
    trace_id VARCHAR,
    metadata VARCHAR,                 -- JSON text
    late BOOLEAN NOT NULL,
    source VARCHAR NOT NULL
);

CREATE TABLE IF NOT EXISTS dead_letter (
    id BIGINT NOT NULL,
    received_at TIMESTAMP NOT NULL,
    source VARCHAR NOT NULL,
    reason VARCHAR NOT NULL,
    raw VARCHAR NOT NULL,
    replayed_at TIMESTAMP
);

CREATE TABLE IF NOT EXISTS metrics_minute (
    service VARCHAR NOT NULL,
    minute TIMESTAMP NOT NULL,
    count BIGINT NOT NULL,
    debug BIGINT NOT NULL,
    info BIGINT NOT NULL,
    warn BIGINT NOT NULL,
    error BIGINT NOT NULL,
    fatal BIGINT NOT NULL,
    late BIGINT NOT NULL,
    rt_count BIGINT NOT NULL,
    rt_sum DOUBLE NOT NULL,
    rt_min DOUBLE,
    rt_max DOUBLE,
    PRIMARY KEY (service, minute)
);

CREATE TABLE IF NOT EXISTS latency_sketch (
    service VARCHAR NOT NULL,
    minute TIMESTAMP NOT NULL,
    bucket INTEGER NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (service, minute, bucket)
);

CREATE TABLE IF NOT EXISTS user_minute (
    service VARCHAR NOT NULL,
    minute TIMESTAMP NOT NULL,
    user_id VARCHAR NOT NULL,
    count BIGINT NOT NULL,
    PRIMARY KEY (service, minute, user_id)
);

CREATE TABLE IF NOT EXISTS services (
    service VARCHAR PRIMARY KEY,
    first_seen TIMESTAMP NOT NULL,    -- arrival time of its first log
    last_seen TIMESTAMP NOT NULL,     -- arrival time of its latest log
    last_event_ts TIMESTAMP NOT NULL, -- newest event time seen
    total BIGINT NOT NULL,
    errors BIGINT NOT NULL
);

CREATE TABLE IF NOT EXISTS ingest_keys (
    key VARCHAR PRIMARY KEY,          -- Idempotency-Key of an acknowledged request
    accepted BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    committed_at TIMESTAMP NOT NULL
);
