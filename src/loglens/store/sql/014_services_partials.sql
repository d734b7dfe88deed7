-- The service registry lives in memory; DuckDB keeps it as append-only per-load deltas, merged on
-- read by a view with the old name and compacted by the loader (no ON CONFLICT anywhere).
CREATE TABLE services_part (
    service VARCHAR NOT NULL,
    first_seen TIMESTAMP NOT NULL,
    last_seen TIMESTAMP NOT NULL,
    last_event_ts TIMESTAMP NOT NULL,
    total BIGINT NOT NULL,
    errors BIGINT NOT NULL
);
INSERT INTO services_part SELECT * FROM services;
DROP TABLE services;
CREATE VIEW services AS
SELECT service, min(first_seen) AS first_seen, max(last_seen) AS last_seen,
       max(last_event_ts) AS last_event_ts, sum(total)::BIGINT AS total, sum(errors)::BIGINT AS errors
FROM services_part GROUP BY service;
