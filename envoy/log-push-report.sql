-- Calls, error rates and p99 latency per API and per app over the last hour.
SELECT
    api,
    app_key,
    count() AS calls,
    round(countIf(status >= 500) / count(), 4) AS error_rate_5xx,
    round(countIf(status >= 400 AND status < 500) / count(), 4) AS refused_rate_4xx,
    quantile(0.99)(latency_ms) AS p99_latency_ms
FROM gateway_calls
WHERE time > now() - 3600
GROUP BY api, app_key
ORDER BY calls DESC
FORMAT JSONEachRow
