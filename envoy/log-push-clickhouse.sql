-- The tables log-push's `clickhouse` format writes into and reports read.
-- Works on ClickHouse 18.16 (Debian's package) and later. Statements are
-- separated by a line ending in `;` (the HTTP interface takes one at a time).
--
-- log-push writes `gateway_calls_log`. A batch whose answer was lost (the
-- server wrote it, then the timeout passed) is sent again, so a call can
-- arrive twice, as the very same row: same `record_id`, which log-push draws
-- per call and no client can choose. ReplacingMergeTree keeps one row per
-- sorting key when it merges parts; until then, `FINAL` merges at read time.
CREATE TABLE IF NOT EXISTS gateway_calls_log
(
    time                DateTime,
    timestamp_ms        UInt64,
    record_id           String,
    request_id          String,
    api                 String,
    app_key             String,
    app_name            String,
    client_ip           String,
    method              String,
    host                String,
    path                String,
    query               String,
    status              UInt16,
    error_code          String,
    latency_ms          UInt32,
    upstream_latency_ms UInt32,
    request_bytes       UInt64,
    response_bytes      UInt64,
    upstream_cluster    String,
    upstream_host       String,
    user_agent          String,
    response_flags      String,
    stage               String DEFAULT 'RELEASE',
    user                String,
    threat              String,
    threat_place        String,
    threat_fingerprint  String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (api, time, record_id);

-- What to query: every call exactly once, however often it was sent.
-- A view's columns are fixed when it is created: after adding a column to
-- gateway_calls_log, drop this view (`DROP TABLE gateway_calls`: 18.16 has
-- no DROP VIEW) and create it again.
CREATE VIEW IF NOT EXISTS gateway_calls AS SELECT * FROM gateway_calls_log FINAL;
