-- Write path through a WAL (issue 13): metric tables become append-only partials, merged on read
-- by views with the old names, and the loader records how far into the WAL DuckDB holds.

CREATE TABLE metrics_minute_part (
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
    rt_max DOUBLE
);
INSERT INTO metrics_minute_part SELECT * FROM metrics_minute;
DROP TABLE metrics_minute;
CREATE VIEW metrics_minute AS
SELECT service, minute,
       sum(count)::BIGINT AS count, sum(debug)::BIGINT AS debug, sum(info)::BIGINT AS info,
       sum(warn)::BIGINT AS warn, sum(error)::BIGINT AS error, sum(fatal)::BIGINT AS fatal,
       sum(late)::BIGINT AS late, sum(rt_count)::BIGINT AS rt_count, sum(rt_sum)::DOUBLE AS rt_sum,
       min(rt_min) AS rt_min, max(rt_max) AS rt_max
FROM metrics_minute_part GROUP BY service, minute;

CREATE TABLE latency_sketch_part (
    service VARCHAR NOT NULL,
    minute TIMESTAMP NOT NULL,
    bucket INTEGER NOT NULL,
    count BIGINT NOT NULL
);
INSERT INTO latency_sketch_part SELECT * FROM latency_sketch;
DROP TABLE latency_sketch;
CREATE VIEW latency_sketch AS
SELECT service, minute, bucket, sum(count)::BIGINT AS count
FROM latency_sketch_part GROUP BY service, minute, bucket;

CREATE TABLE user_minute_part (
    service VARCHAR NOT NULL,
    minute TIMESTAMP NOT NULL,
    user_id VARCHAR NOT NULL,
    count BIGINT NOT NULL
);
INSERT INTO user_minute_part SELECT * FROM user_minute;
DROP TABLE user_minute;
CREATE VIEW user_minute AS
SELECT service, minute, user_id, sum(count)::BIGINT AS count
FROM user_minute_part GROUP BY service, minute, user_id;

-- One row: the LSN of the first WAL byte not yet loaded. Updated in every load transaction.
CREATE TABLE wal_state (id INTEGER PRIMARY KEY, loaded_lsn BIGINT NOT NULL);
INSERT INTO wal_state VALUES (1, 0);
