-- The table log-push's `clickhouse` format writes into (one row per call).
-- Works on ClickHouse 18.16 (Debian's package) and later.
CREATE TABLE IF NOT EXISTS gateway_calls
(
    time                DateTime,
    timestamp_ms        UInt64,
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
    response_flags      String
)
ENGINE = MergeTree
PARTITION BY toYYYYMMDD(time)
ORDER BY (api, time)
