#!/usr/bin/env bash
# The demo gateway: two echo upstreams, a ClickHouse for log-push's records,
# Redis behind Webdis as the fleet store, and two Envoys (the second on
# :8081, :8444 and admin :9902) sharing that store: a fleet of two. Both read
# their routes, clusters and policies from .run/published, where
# `gatewayctl publish` puts examples/demo.yaml (what envoy/gateway.yaml holds
# inline), so a publish changes both without a restart.
# Started by `make run` (after set-up and build); Ctrl-C stops everything.
# GATEWAY_MODULE=1 runs every policy in gateway.wasm instead of a filter
# each, GATEWAY_NATIVE=1 in the native libgateway.so: same listeners,
# policies and curl lines.
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_BIN="${ENVOY_BIN:-.venv/bin/envoy}"
FORM=--chain
if [ "${GATEWAY_NATIVE:-}" = 1 ]; then
  FORM=--native
elif [ "${GATEWAY_MODULE:-}" = 1 ]; then
  FORM=
fi
mkdir -p .run
bash scripts/make-certs.sh .run/tls
cargo build --quiet --release -p integration-tests -p gatewayctl --bins
# Each run starts a new history: version 1 is examples/demo.yaml.
rm -rf .run/published
target/release/gatewayctl publish examples/demo.yaml --dir .run/published --author demo -m 'make run'
CONFIG=.run/gateway.yaml
target/release/gatewayctl build examples/demo.yaml --dynamic "$PWD/.run/published" $FORM -o "$CONFIG"
echo "demo configuration: $CONFIG (${FORM:-module}), published in .run/published"

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo
  echo "demo stopped"
  exit 0
}
trap stop INT TERM EXIT

for port in 8080 8081 8443 8444 9901 9902 18081 18082 18084 18085 18123 19000 16379 17379 19090; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port is in use; stop whatever listens there first" >&2
    exit 1
  fi
done

# log-push's sink: a private ClickHouse with the table from envoy/.
bash scripts/clickhouse-config.sh .run/clickhouse 18123 19000
"${CLICKHOUSE_BIN:-/usr/sbin/clickhouse-server}" --config-file=.run/clickhouse/config.xml > .run/clickhouse.log 2>&1 &
pids+=($!)
for _ in $(seq 1 300); do
  curl -fs http://127.0.0.1:18123/ping >/dev/null 2>&1 && break
  sleep 0.1
done
clickhouse() { curl -fsS --data-binary "$1" http://127.0.0.1:18123/ >/dev/null; }
# The HTTP interface takes one statement per request; in the script each
# ends with `;` at the end of a line.
statements() {
  awk '!/^[[:space:]]*--/ { s = s $0 "\n" }
       /;[[:space:]]*$/ && !/^[[:space:]]*--/ { sub(/;[[:space:]]*\n$/, "", s); printf "%s%c", s, 0; s = "" }' "$1"
}
while IFS= read -r -d '' statement; do clickhouse "$statement"; done < <(statements envoy/log-push-clickhouse.sql)
# The demo also records the X-Tenant header: a column of the table (there
# already on a second run), then the view again, as README "ClickHouse" says.
clickhouse 'ALTER TABLE gateway_calls_log ADD COLUMN header_x_tenant String' 2>/dev/null || true
# A table made by an earlier version of the demo lacks the newer columns.
clickhouse "ALTER TABLE gateway_calls_log ADD COLUMN stage String DEFAULT 'RELEASE'" 2>/dev/null || true
clickhouse 'ALTER TABLE gateway_calls_log ADD COLUMN user String' 2>/dev/null || true
for column in threat threat_place threat_fingerprint; do
  clickhouse "ALTER TABLE gateway_calls_log ADD COLUMN $column String" 2>/dev/null || true
done
clickhouse 'DROP TABLE IF EXISTS gateway_calls'
while IFS= read -r -d '' statement; do
  [[ $statement == *"CREATE VIEW"* ]] && clickhouse "$statement"
done < <(statements envoy/log-push-clickhouse.sql)

# The fleet store: a private Redis (no persistence) and Webdis allowing only
# the two commands the filters send (README, "Fleets").
"${REDIS_SERVER_BIN:-/usr/bin/redis-server}" --bind 127.0.0.1 --port 16379 --save '' --appendonly no \
  --dir .run > .run/redis.log 2>&1 &
pids+=($!)
cat > .run/webdis.json <<'JSON'
{ "redis_host": "127.0.0.1", "redis_port": 16379, "http_host": "127.0.0.1", "http_port": 17379,
  "threads": 2, "pool_size": 8, "daemonize": false, "database": 0, "verbosity": 1,
  "logfile": ".run/webdis.log",
  "acl": [ { "disabled": ["*"] }, { "enabled": ["EVALSHA", "EVAL"] } ] }
JSON
"${WEBDIS_BIN:-/usr/bin/webdis}" .run/webdis.json > /dev/null 2>&1 &
pids+=($!)

target/release/echo-upstream --id backend-1 --listen 127.0.0.1:18081 > .run/backend-1.log 2>&1 &
pids+=($!)
target/release/echo-upstream --id backend-2 --listen 127.0.0.1:18082 > .run/backend-2.log 2>&1 &
pids+=($!)
# ext-auth's third-party authorizer: knows one token.
target/release/echo-upstream --id authorizer --listen 127.0.0.1:18084 --authorize demo-token=demo-user > .run/authorizer.log 2>&1 &
pids+=($!)
# The token issuer of /me: its JWKS and fresh tokens (sign-auth's JWT mode).
target/release/echo-upstream --id issuer --listen 127.0.0.1:18085 --issuer http://127.0.0.1:18085 > .run/issuer.log 2>&1 &
pids+=($!)
"$ENVOY_BIN" -c "$CONFIG" --disable-hot-restart --log-level info > .run/envoy.log 2>&1 &
envoy_pid=$!
pids+=($envoy_pid)
# The second instance: the same configuration on other ports.
sed -e 's/port_value: 8080/port_value: 8081/' -e 's/port_value: 8443/port_value: 8444/' \
  -e 's/port_value: 9901/port_value: 9902/' "$CONFIG" > .run/gateway-2.yaml
"$ENVOY_BIN" -c .run/gateway-2.yaml --disable-hot-restart --log-level info > .run/envoy-2.log 2>&1 &
envoy2_pid=$!
pids+=($envoy2_pid)

# A private Prometheus scraping both Envoys every 5 s with the rules of
# monitoring/ (docs/monitoring.md); data in .run/prometheus.
sed -e 's/15s/5s/g' -e 's|rules/|../monitoring/rules/|' monitoring/prometheus.yml > .run/prometheus.yml
"${PROMETHEUS_BIN:-/usr/bin/prometheus}" --config.file=.run/prometheus.yml --storage.tsdb.path=.run/prometheus \
  --web.listen-address=127.0.0.1:19090 > .run/prometheus.log 2>&1 &
pids+=($!)

for admin in 9901 9902; do
  for _ in $(seq 1 200); do
    if ! kill -0 "$envoy_pid" 2>/dev/null || ! kill -0 "$envoy2_pid" 2>/dev/null; then
      echo "Envoy exited; its logs (.run/envoy.log, .run/envoy-2.log):" >&2
      tail -n 20 .run/envoy.log .run/envoy-2.log >&2
      exit 1
    fi
    curl -fs "http://127.0.0.1:$admin/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
done

cat <<'MSG'

Demo gateway is up: two instances, :8080 and :8081, sharing one Redis (logs in .run/). Try:

  # allowed; run it twice and see "upstream" alternate between backend-1 and backend-2
  curl -s http://127.0.0.1:8080/api/hello?name=demo

  # the same through TLS (self-signed certificate)
  curl -sk https://127.0.0.1:8443/api/hello

  # denied by ip-acl: 403 with the shared error shape (203.0.113.0/24 is on the deny list;
  # the demo trusts X-Forwarded-For from 127.0.0.1 as if it were a load balancer)
  curl -si http://127.0.0.1:8080/api/hello -H 'X-Forwarded-For: 203.0.113.7'

  # /admin is for 10.0.0.0/8 and 192.168.0.0/16 only
  curl -si http://127.0.0.1:8080/admin/stats
  curl -s  http://127.0.0.1:8080/admin/stats -H 'X-Forwarded-For: 10.1.2.3'

  # /limited allows 3 calls per 10 s per client (throttling): the fourth gets 429 with Retry-After
  for i in 1 2 3 4; do curl -s -o /dev/null -w '%{http_code} ' http://127.0.0.1:8080/limited; done; echo
  curl -si http://127.0.0.1:8080/limited

  # /search declares q (required) and page (1..1000, default 1); undeclared parameters are dropped
  curl -s 'http://127.0.0.1:8080/search?page=0'
  curl -s 'http://127.0.0.1:8080/search?q=shoes&debug=1'

  # /orders needs a signed request (sign-auth); ca-sign makes one for app 203751
  curl -si http://127.0.0.1:8080/orders/42
  target/release/ca-sign --key 203751 --secret demo-secret --curl http://127.0.0.1:8080/orders/42 | sh
  target/release/ca-sign --key 203751 --secret demo-secret --explain http://127.0.0.1:8080/orders/42

  # /partner takes every credential of the app: an X-Ca or a Huawei SDK-HMAC-SHA256 signature,
  # an AppCode (Alibaba's or Huawei's header) or Basic, the last two over HTTPS only
  target/release/ca-sign --huawei --key demo-hw-key --secret demo-hw-secret --curl http://127.0.0.1:8080/partner/1 | sh
  curl -sk https://127.0.0.1:8443/partner/1 -H 'Authorization: APPCODE demo-appcode'
  curl -sk https://127.0.0.1:8443/partner/1 -H 'X-Apig-AppCode: demo-appcode'
  curl -si http://127.0.0.1:8080/partner/1 -H 'X-Apig-AppCode: demo-appcode'
  curl -sk https://127.0.0.1:8443/partner/1 -u demo-user:demo-password
  curl -sik https://127.0.0.1:8443/partner/1 -u demo-user:wrong

  # /me takes a JWT of the demo issuer (keys fetched from its JWKS); each token is good
  # for one call, fleet-wide (jti): the second call with it is 400 A400IN
  TOKEN=$(curl -s http://127.0.0.1:18085/token)
  curl -s  http://127.0.0.1:8080/me -H "Authorization: Bearer $TOKEN"
  curl -si http://127.0.0.1:8081/me -H "Authorization: Bearer $TOKEN"

  # a fleet of two: a signed request accepted by :8080 is a replay for :8081 (400 A400IN),
  # because both record nonces in the one Redis
  req=$(target/release/ca-sign --key 203751 --secret demo-secret --curl http://127.0.0.1:8080/orders/42)
  sh -c "$req -o /dev/null -w '%{http_code}\n'"; sh -c "${req/8080/8081} -i"

  # and one quota for both: /limited's 3 calls per 10 s are shared, the fourth is refused
  for port in 8080 8081 8080 8081; do curl -s -o /dev/null -w "$port:%{http_code} " http://127.0.0.1:$port/limited; done; echo

  # quota leases: far from its limit (100 a minute), a worker takes 10 units of /orders'
  # per-app quota in one store call and admits the next calls from them
  for i in 1 2 3 4 5 6; do target/release/ca-sign --key 203751 --secret demo-secret --curl http://127.0.0.1:8080/orders/42 | sh > /dev/null; done
  curl -s http://127.0.0.1:9901/stats/prometheus | grep -E 'gw_throttling_fleet_(leased|lease_units)'

  # where the fleet's calls went: Redis ran the script (evalsha); through Webdis, the
  # store cluster's calls. With GATEWAY_NATIVE=1 that is 0: the native module calls
  # Redis itself on a pipelined connection of its own
  redis-cli -p 16379 INFO commandstats | grep evalsha
  curl -s http://127.0.0.1:9901/stats | grep 'cluster.fleet_store.upstream_rq_total'

  # /account asks the provider's own authorizer (ext-auth): no token is 401 A401IS; a known
  # token passes and the upstream sees the authorizer's x-user-id (a client's own copy is
  # dropped); "revoked" gets the authorizer's own 403. Decisions are cached: the second
  # call with the token makes no authorizer call (gw_ext_auth_cache_hit)
  curl -si http://127.0.0.1:8080/account
  curl -s  http://127.0.0.1:8080/account -H 'Authorization: Bearer demo-token' -H 'X-User-Id: mallory'
  curl -si http://127.0.0.1:8080/account -H 'Authorization: Bearer revoked'

  # CORS: Envoy's CORS filter, first in the chain, answers a preflight from the demo's
  # browser origin before any policy (a preflight carries no signature)
  curl -si -X OPTIONS http://127.0.0.1:8080/orders/42 -H 'Origin: http://localhost:3000' -H 'Access-Control-Request-Method: GET'

  # /mock/coupons is a mock backend (a direct_response route): every policy still applies
  curl -s  http://127.0.0.1:8080/mock/coupons
  curl -si http://127.0.0.1:8080/mock/coupons -H 'X-Forwarded-For: 203.0.113.7'

  # stages: X-Ca-Stage TEST (or PRE) goes to the staging backend (backend-2), signed when listed;
  # an unknown stage gets 404 S404ST; log-push records the stage
  target/release/ca-sign --key 203751 --secret demo-secret --header 'X-Ca-Stage: TEST' --sign-header X-Ca-Stage --curl http://127.0.0.1:8080/orders/42 | sh

  # /v1/users/{id} is mapped onto the backend's /internal/accounts/{id}/profile;
  # lang moves into an X-Lang header, the client IP and request id are added
  curl -si 'http://127.0.0.1:8080/v1/users/42?lang=zh'

  # /flaky has a circuit breaker: five failing calls (the echo upstream answers the
  # status asked for) open it, and the next call is answered at once with 503 A503CB;
  # the breaker is the fleet's, so :8081, which saw no failure, answers the same
  for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{http_code} ' -H 'x-echo-status: 503' http://127.0.0.1:8080/flaky; done; echo
  sleep 0.3; curl -si http://127.0.0.1:8080/flaky; curl -si http://127.0.0.1:8081/flaky

  # every call above is a row in ClickHouse (log-push, flushed every second)
  curl -s 'http://127.0.0.1:18123/' --data-binary 'SELECT time, api, method, path, status, error_code, client_ip, latency_ms FROM gateway_calls ORDER BY timestamp_ms DESC LIMIT 10 FORMAT PrettyCompact'
  curl -s 'http://127.0.0.1:18123/' --data-binary @envoy/log-push-report.sql

  # the filters' counters
  curl -s http://127.0.0.1:9901/stats/prometheus | grep gw_

  # monitoring: a private Prometheus (:19090) scrapes both Envoys and records per-API series
  # (a minute of traffic makes the rates); alerts (pending or firing) on /api/v1/alerts
  curl -s http://127.0.0.1:19090/api/v1/query --data-urlencode 'query=gateway_api:requests:rate1m'
  curl -s http://127.0.0.1:19090/api/v1/query --data-urlencode 'query=gateway_api:errors_5xx:ratio_rate1m'
  curl -s http://127.0.0.1:19090/api/v1/query --data-urlencode 'query=gateway_api:latency_ms:p99'
  curl -s http://127.0.0.1:19090/api/v1/query --data-urlencode 'query=gateway:refusals:rate1m'
  curl -s http://127.0.0.1:19090/api/v1/alerts

  # publish a new version without a restart: both Envoys read .run/published, so a new
  # API (/hello-v2, a mock) answers on both at once; history lists the versions; a
  # rollback publishes version 1 again and /hello-v2 goes to the backend once more
  sed '/# Everything else: the backend/i\  - { name: hello-v2, path: /hello-v2, auth: anonymous, mock: { body: "hello from version 2" } }' examples/demo.yaml > .run/demo-next.yaml
  target/release/gatewayctl publish .run/demo-next.yaml --dir .run/published --author you -m 'hello-v2'
  curl -s http://127.0.0.1:8080/hello-v2; echo; curl -s http://127.0.0.1:8081/hello-v2; echo
  target/release/gatewayctl history --dir .run/published
  target/release/gatewayctl rollback --dir .run/published
  curl -s http://127.0.0.1:8081/hello-v2
  # publish one stage only: TEST (X-Ca-Stage: TEST) gets /hello-v2, RELEASE keeps the backend
  target/release/gatewayctl publish .run/demo-next.yaml --dir .run/published --stage TEST -m 'hello-v2 on TEST'
  curl -s -H 'X-Ca-Stage: TEST' http://127.0.0.1:8080/hello-v2; echo; curl -s http://127.0.0.1:8080/hello-v2

  # the APIs' reference for callers (open .run/docs/index.html) and OpenAPI 3.1 for SDK generators
  target/release/gatewayctl docs examples/demo.yaml --server http://127.0.0.1:8080 -o .run/docs
  target/release/gatewayctl export openapi examples/demo.yaml --server http://127.0.0.1:8080 -o .run/openapi.yaml

Ctrl-C stops the demo.
MSG
wait "$envoy_pid" "$envoy2_pid"
