-- Metric partials and service deltas are no longer computed and inserted by every load (four extra
-- statements per transaction, ~20 ms of CPU for a 40-log trickle load). Each load now inserts the
-- logs and moves `loaded_lsn`; the logs with ids above `wal_state.aggregated_id` — the *tail*, at
-- most a few seconds or 50,000 logs — are aggregated on read by the `*_tail` views below, and the
-- loader folds the tail into the `*_part` tables now and then, in one transaction that also moves
-- `aggregated_id` (store/loader.py, `fold_tail`). So every view still equals the stored logs,
-- exactly, at every commit.
--
-- The aggregation is `metrics.aggregate` in SQL (test_loader_tail.py keeps them equal); the sketch
-- bucket is ceil(ln(v) / ln(gamma)) with metrics._LOG_GAMMA and metrics._MIN_VALUE written out.

ALTER TABLE wal_state ADD COLUMN aggregated_id BIGINT NOT NULL DEFAULT 0;
-- Every log stored so far had its partials inserted in its own load transaction.
UPDATE wal_state SET aggregated_id = (SELECT coalesce(max(id), 0) FROM logs) WHERE id = 1;

CREATE VIEW metrics_minute_tail AS
SELECT service, date_trunc('minute', ts) AS minute, count(*)::BIGINT AS count,
       count(*) FILTER (WHERE level = 'DEBUG')::BIGINT AS debug,
       count(*) FILTER (WHERE level = 'INFO')::BIGINT AS info,
       count(*) FILTER (WHERE level = 'WARN')::BIGINT AS warn,
       count(*) FILTER (WHERE level = 'ERROR')::BIGINT AS error,
       count(*) FILTER (WHERE level = 'FATAL')::BIGINT AS fatal,
       count(*) FILTER (WHERE late)::BIGINT AS late,
       count(response_time_ms)::BIGINT AS rt_count,
       coalesce(sum(response_time_ms), 0.0)::DOUBLE AS rt_sum,
       min(response_time_ms) AS rt_min, max(response_time_ms) AS rt_max
FROM logs WHERE id > (SELECT aggregated_id FROM wal_state WHERE id = 1)
GROUP BY service, date_trunc('minute', ts);

CREATE VIEW latency_sketch_tail AS
SELECT service, date_trunc('minute', ts) AS minute,
       CASE WHEN response_time_ms >= 0.001 THEN ceil(ln(response_time_ms) / 0.020000666706669435::DOUBLE)::INTEGER
            ELSE -32768 END AS bucket,
       count(*)::BIGINT AS count
FROM logs WHERE id > (SELECT aggregated_id FROM wal_state WHERE id = 1) AND response_time_ms IS NOT NULL
GROUP BY ALL;

CREATE VIEW user_minute_tail AS
SELECT service, date_trunc('minute', ts) AS minute, user_id, count(*)::BIGINT AS count
FROM logs WHERE id > (SELECT aggregated_id FROM wal_state WHERE id = 1) AND user_id IS NOT NULL
GROUP BY ALL;

CREATE VIEW services_tail AS
SELECT service, min(received_at) AS first_seen, max(received_at) AS last_seen, max(ts) AS last_event_ts,
       count(*)::BIGINT AS total, count(*) FILTER (WHERE level IN ('ERROR', 'FATAL'))::BIGINT AS errors
FROM logs WHERE id > (SELECT aggregated_id FROM wal_state WHERE id = 1)
GROUP BY service;

-- The views the readers use: partials and tail, merged (sums, min, max: exact).
DROP VIEW metrics_minute;
CREATE VIEW metrics_minute AS
SELECT service, minute,
       sum(count)::BIGINT AS count, sum(debug)::BIGINT AS debug, sum(info)::BIGINT AS info,
       sum(warn)::BIGINT AS warn, sum(error)::BIGINT AS error, sum(fatal)::BIGINT AS fatal,
       sum(late)::BIGINT AS late, sum(rt_count)::BIGINT AS rt_count, sum(rt_sum)::DOUBLE AS rt_sum,
       min(rt_min) AS rt_min, max(rt_max) AS rt_max
FROM (SELECT * FROM metrics_minute_part UNION ALL SELECT * FROM metrics_minute_tail)
GROUP BY service, minute;

DROP VIEW latency_sketch;
CREATE VIEW latency_sketch AS
SELECT service, minute, bucket, sum(count)::BIGINT AS count
FROM (SELECT * FROM latency_sketch_part UNION ALL SELECT * FROM latency_sketch_tail)
GROUP BY service, minute, bucket;

DROP VIEW user_minute;
CREATE VIEW user_minute AS
SELECT service, minute, user_id, sum(count)::BIGINT AS count
FROM (SELECT * FROM user_minute_part UNION ALL SELECT * FROM user_minute_tail)
GROUP BY service, minute, user_id;

DROP VIEW services;
CREATE VIEW services AS
SELECT service, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
       max(last_event_ts) AS last_event_ts, sum(total)::BIGINT AS total, sum(errors)::BIGINT AS errors
FROM (SELECT * FROM services_part UNION ALL SELECT * FROM services_tail)
GROUP BY service;
