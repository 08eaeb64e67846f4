#!/usr/bin/env python3
"""The benchmark suite behind `make bench` (scripts/bench.sh runs it).

Load: wrk on loopback against Envoy with one worker, in front of a fast
local upstream (nginx answering a fixed body: measured against the echo
upstream it costs Envoy the same CPU per request, but uses constant memory
and less client-side CPU, where the echo upstream keeps every request).
Every scenario gets the same traffic: a mix of pre-signed requests that
touches a rule of every filter in envoy/gateway.yaml. Each scenario's Envoy
is started and warmed up once and stays up (idle) for the whole benchmark;
the rounds send each one a short burst in turn, rotating the order, so that
machine noise spreads over every scenario alike. What is compared is Envoy's
own CPU time per request (utime+stime of the process from /proc/<pid>/stat
during the burst, divided by the requests its stats counted), reported as
min and median over the rounds; the ratios use the min (disturbances only
add CPU time). req/s and latency percentiles are shown alongside but are
the noisy numbers.

Policy micro-benchmarks: each decision function run natively under
callgrind (bench/policy-bench), instructions per decision exact.

Writes target/bench/results.{md,csv,json}, runs.csv, decisions.csv and
results.png (or results.svg when matplotlib is missing).
"""

import argparse
import html
import copy
import datetime
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WASM_DIR = ROOT / "target" / "wasm32-wasip1" / "release"
DYNAMIC_MODULE_DIR = ROOT / "target" / "native"
# The native tools (gatewayctl, policy-bench, bench-requests, echo-upstream):
# release builds for measuring, debug ones for the smoke run (see bench.sh).
NATIVE_DIR = ROOT / os.environ.get("BENCH_TOOLS_DIR", "target/release")
DEMO_APIS = ROOT / "examples" / "demo.yaml"
GATEWAYCTL = NATIVE_DIR / "gatewayctl"
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
STRING_TYPE = "type.googleapis.com/google.protobuf.StringValue"
HCM_NAME = "envoy.filters.network.http_connection_manager"

# One request of each kind, in turn; each touches a rule of the demo config.
# `|Name: value` adds an (unsigned) header.
MIX = [
    "GET /orders/42",                            # sign-auth app rule, throttling per app, log-push "orders"
    "GET /search?q=shoes&page=2",                # param-validation, log-push "search"
    "GET /v1/users/42?lang=zh",                  # request-mapping, log-push "public-profile"
    "GET /flaky",                                # circuit-breaker
    "GET /admin/stats|X-Forwarded-For: 10.1.2.3",  # ip-acl admin allow list behind a trusted proxy
    "GET /limited",                              # throttling per client IP
    "GET /account|Authorization: Bearer demo-token",  # ext-auth: the authorizer asked, then its cached decision
    "GET /api/hello?name=demo",                  # no rule: every filter's fast path
]

# Design targets (issue 10): measured and reported, never asserted.
TARGET_SINGLE = 1.05   # each filter alone vs one empty Wasm filter
TARGET_CHAIN = 1.10    # the chain vs as many empty filters
TARGET_MODULE = 1.10   # the gateway module vs one empty filter
TARGET_RSS_MB = 30     # module RSS over bare Envoy
# Issue 30: the native module near bare Envoy, each native policy at or below
# Envoy's own filter for the job, the Wasm module cheaper.
TARGET_NATIVE_CPU = 1.35      # native module vs bare Envoy, CPU per request
TARGET_NATIVE_INSTR = 1.5     # native module vs bare Envoy, instructions per request
TARGET_NATIVE_MALLOC = 60     # native module, heap allocations per request
TARGET_NATIVE_RSS_MB = 10     # native module RSS over bare Envoy
TARGET_WASM_MODULE_INSTR = 2.6  # the Wasm module vs bare Envoy, instructions

CHILDREN = []


def say(message):
    print(f"bench: {message}", flush=True)


# --------------------------------------------------------------------------
# processes

def taskset(cpu):
    if cpu is None or not shutil.which("taskset"):
        return []
    return ["taskset", "-c", str(cpu)]


def spawn(cmd, log_path, **kwargs):
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
    proc._bench_log = log
    CHILDREN.append(proc)
    return proc


def stop(proc, sig=signal.SIGTERM, grace=5.0):
    if proc is None:
        return
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        except ProcessLookupError:
            pass
    try:
        proc._bench_log.close()
    except Exception:
        pass
    if proc in CHILDREN:
        CHILDREN.remove(proc)


def stop_all():
    for proc in list(CHILDREN):
        stop(proc, grace=3.0)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(port, path, timeout=3.0):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")


def wait_port(port, proc, what, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port}")


def log_tail(path, lines=25):
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------
# /proc

def cpu_seconds(pid):
    """utime + stime of the whole process (every thread), in seconds."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_now():
    """Busy CPU seconds of the whole machine so far (every CPU, from /proc/stat)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = [int(x) for x in fields]
    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


UPSTREAM_PIDS = []


def client_cpu(previous):
    """CPU seconds of the upstream processes (nginx or echo) so far, or since `previous`."""
    total = 0.0
    for pid in UPSTREAM_PIDS:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total if previous is None else total - previous


def children_cpu():
    """CPU seconds of the finished children (the wrk runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def foreign_cpu(busy0, busy1, ours, wall):
    """CPUs' worth of time used by other processes than Envoy, the upstream
    and wrk during a run: how busy the machine was with work not ours."""
    if wall <= 0:
        return float("nan")
    return max(busy1 - busy0 - ours, 0.0) / wall


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


# --------------------------------------------------------------------------
# upstream

def start_upstream(kind, work, cpu, ports):
    """The backend and the log sink: (backend port, sink port, [procs], description)."""
    backend, sink = ports["backend"], ports["sink"]
    if kind == "nginx":
        prefix = work / "nginx"
        prefix.mkdir(parents=True, exist_ok=True)
        conf = prefix / "nginx.conf"
        conf.write_text(f"""# make bench: the upstream (fixed body) and the log sink.
worker_processes 1;
daemon off;
master_process off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_max_body_size 64m;
  server {{
    listen 127.0.0.1:{backend};
    default_type application/json;
    location / {{ return 200 '{{"upstream":"nginx","ok":true}}\\n'; }}
    # error-mapping's rows: a plain 404, and a 200 carrying an error code.
    location /legacy/ {{ return 404 '{{"upstream":"nginx","ok":false}}\\n'; }}
    location /roles/ {{ return 200 '{{"req_msg_id":"m1","result_code":"$http_x_result_code"}}\\n'; }}
  }}
  server {{
    listen 127.0.0.1:{sink};
    location / {{ return 200 ''; }}
  }}
}}
""")
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        proc = spawn(taskset(cpu) + [nginx, "-p", str(prefix), "-c", str(conf)], prefix / "nginx.out")
        wait_port(backend, proc, "nginx")
        wait_port(sink, proc, "nginx")
        version = subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip()
        return backend, sink, [proc], f"{version.replace('nginx version: ', '')}, one worker, fixed 31-byte body"
    echo = NATIVE_DIR / "echo-upstream"
    procs = []
    for port, name in ((backend, "backend"), (sink, "sink")):
        proc = spawn(taskset(cpu) + [str(echo), "--id", name, "--listen", f"127.0.0.1:{port}"],
                     work / f"echo-{name}.log")
        wait_port(port, proc, f"echo-upstream {name}")
        procs.append(proc)
    return backend, sink, procs, "echo-upstream (integration-tests), JSON echo of the request"


# --------------------------------------------------------------------------
# configurations

def yaml_load(text):
    """YAML as gatewayctl and Envoy read it: only `true`/`false` are booleans
    (PyYAML's YAML 1.1 would take the key `on` of a backend's retries as one)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf"))
    return yaml.load(text, Loader=Loader)


def bench_apis(ports, fleet, key_prefix="gw:", lease_units=None):
    """examples/demo.yaml with the bench's changes, as an apis.yaml document,
    and the changes in words:

    - one plain HTTP listener and the admin on ephemeral ports; every backend
      (the authorizer too) is the bench upstream, the log sink and the fleet
      store the bench's own, without active health checks;
    - every quota's `limit` raised to 1e9 (counted, never refused);
    - sign-auth: 262144 nonce slots (8 nonces each): every request of the
      mix is signed, an Envoy sees ~150k of them in a run and every nonce
      must stay recorded for the whole run; slots fill unevenly (Poisson),
      so the table needs about as many slots as live nonces or its fullest
      slots refuse (503 A503NS);
    - without `fleet`, the fleet store is taken out: every scenario but
      the fleet ones measures the local state (shared data); with it, the
      fleet calls wait up to 1 s (Envoy runs under callgrind too) and a
      failure refuses the request, so a store problem shows as non-2xx
      answers instead of a quietly local run. `fleet="webdis"` calls Redis
      through Webdis (every form), `fleet="direct"` on the native module's
      own connection to Redis; each fleet scenario keys its state under its
      own `key_prefix`, so scenarios sharing the Redis never see each
      other's nonces (the signed requests are the same);
    - `lease_units`: only throttling counts in the fleet, leasing that many
      units at a time (sign-auth and the breaker keep their local state), so
      the scenario measures a quota far from its limit.
    """
    doc = yaml_load(DEMO_APIS.read_text())
    changes = ["the demo's apis.yaml (examples/demo.yaml) built by gatewayctl, with one plain HTTP listener; "
               "every backend, the authorizer included, is the bench upstream (no active health checks); "
               "Envoy's CORS filter is left out of every scenario"]
    gateway = doc["gateway"]
    # Each scenario chooses Webdis or Redis itself (below): the demo's store
    # is reduced to its Webdis backend.
    if isinstance(gateway.get("fleet_store"), dict):
        gateway["fleet_store"] = gateway["fleet_store"].get("webdis")
    gateway["admin"] = "127.0.0.1:0"
    gateway["listeners"] = [{"name": "http", "address": "127.0.0.1:0"}]
    own = {"log_sink": ports["sink"], "fleet_store": ports.get("store") or ports["sink"]}
    for backend in doc["backends"]:
        backend["endpoints"] = [f"127.0.0.1:{own.get(backend['name'], ports['backend'])}"]
        backend.pop("health_check", None)
    for policy in doc.get("policies", []):
        if "quota" in policy:
            policy["quota"]["limit"] = max(policy["quota"].get("limit", 0), 1_000_000_000)
    changes.append("every quota's `limit` raised to 1e9 (counted, never refused)")
    mirrors = {p["name"] for p in doc.get("policies", []) if "mirror" in p}
    doc["policies"] = [p for p in doc.get("policies", []) if p["name"] not in mirrors]
    for api in doc.get("apis", []) + doc.get("groups", []):
        if "policies" in api:
            api["policies"] = [name for name in api["policies"] if name not in mirrors]
    if mirrors:
        changes.append("mirroring left out (a copy is a second upstream request, Envoy's own work)")
    settings = doc.setdefault("settings", {})
    settings.setdefault("sign_auth", {})["nonce_slots"] = 262144
    changes.append("sign-auth: `nonce_slots: 262144` (default 16384), so every nonce an Envoy sees during the "
                   "benchmark (~150k) stays recorded without a slot filling up; the larger table adds to the "
                   "RSS of the scenarios with sign-auth")
    fleet_users = [name for name, section in settings.items() if isinstance(section, dict) and "fleet" in section]
    for name in fleet_users:
        if fleet == "webdis":
            settings[name]["fleet"] = {"store": {"cluster": gateway["fleet_store"], "timeout_ms": 1000,
                                                 "key_prefix": key_prefix},
                                       "failure_mode": "deny"}
        elif fleet == "direct":
            settings[name]["fleet"] = {"store": {"redis": {"address": f"127.0.0.1:{ports['redis']}"},
                                                 "timeout_ms": 1000, "key_prefix": key_prefix},
                                       "failure_mode": "deny"}
        else:
            del settings[name]["fleet"]
        if lease_units and "fleet" in settings[name]:
            if name == "throttling":
                settings[name]["fleet"]["lease"] = {"units": lease_units, "holders": 16}
            else:
                del settings[name]["fleet"]
    if fleet == "direct":
        gateway.pop("fleet_store", None)
    if not fleet:
        gateway.pop("fleet_store", None)
        changes.append(f"{', '.join(fleet_users)}: `fleet` removed (local state); the `module-fleet` scenario "
                       "counts in Redis behind Webdis instead")
    return doc, changes


def gatewayctl_build(work, stem, apis, mode):
    """The Envoy bootstrap gatewayctl writes for `apis` (`chain`, `module` or `native`)."""
    import yaml
    source = work / f"{stem}.apis.yaml"
    source.write_text(yaml.safe_dump(apis, sort_keys=False))
    out = work / f"{stem}.{mode}.yaml"
    cmd = [str(GATEWAYCTL), "build", str(source), "-o", str(out), "--wasm-dir", str(WASM_DIR),
           "--native-module", str(DYNAMIC_MODULE_DIR / "libgateway.so")]
    cmd += {"chain": ["--chain"], "module": [], "native": ["--native"]}[mode]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"gatewayctl build {source.name} ({mode}) failed:\n{done.stderr.strip()}")
    return yaml_load(out.read_text())


class Bootstrap:
    """The parts of a gatewayctl bootstrap a scenario is made of: the `http`
    listener and its connection manager, the clusters, the policy filters."""

    def __init__(self, doc):
        resources = doc["static_resources"]
        self.listener = next(l for l in resources["listeners"] if l["name"] == "http")
        hcm = next(f for f in self.listener["filter_chains"][0]["filters"] if f["name"] == HCM_NAME)
        self.filters = [copy.deepcopy(entry) for entry in hcm["typed_config"]["http_filters"]
                        if entry["name"].startswith("gateway.")]
        self.clusters = resources["clusters"]

    def config(self, http_filters, hcm_extra=None, routes=None):
        """A bootstrap of this listener and these clusters with `http_filters`
        before the router (and `routes` edited when given)."""
        listener = copy.deepcopy(self.listener)
        manager = next(f for f in listener["filter_chains"][0]["filters"] if f["name"] == HCM_NAME)
        manager["typed_config"]["http_filters"] = list(http_filters) + [{
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
        }]
        manager["typed_config"].update(hcm_extra or {})
        if routes:
            routes(manager["typed_config"]["route_config"])
        return {
            "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
            "static_resources": {"listeners": [listener], "clusters": copy.deepcopy(self.clusters)},
        }


def filter_id(entry):
    """`sign_auth` for the sign-auth filter (its root_id)."""
    return entry["typed_config"]["config"]["root_id"]


def filter_configs(chain):
    """Each policy's JSON configuration, as the chain's filters carry it."""
    return {filter_id(entry): json.loads(entry["typed_config"]["config"]["configuration"]["value"])
            for entry in chain.filters}


def wasm_file(entry):
    return Path(entry["typed_config"]["config"]["vm_config"]["code"]["local"]["filename"]).name


def empty_entry(i):
    return {
        "name": f"bench.empty_{i}",
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": f"empty_{i}",
                "root_id": f"empty_{i}",
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": f"empty_{i}",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(WASM_DIR / "empty_filter.wasm")}},
                },
                "configuration": {"@type": STRING_TYPE, "value": "{}"},
            },
        },
    }


# Host-call probes: one kind of host call repeated PROBE_CALLS times per request.
PROBE_CALLS = 16
PROBE_KINDS = ["none", "header", "header_absent", "headers", "headers_raw", "property_source", "property_absent",
               "set_property", "set_header", "metric", "time", "shared_get", "shared_update",
               "log_filtered"]


def probe_entry(kind):
    return {
        "name": "bench.host_call_probe",
        "typed_config": {
            "@type": WASM_TYPE,
            "config": {
                "name": "host_call_probe",
                "root_id": "host_call_probe",
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": "host_call_probe",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": str(WASM_DIR / "host_call_probe.wasm")}},
                },
                "configuration": {"@type": STRING_TYPE,
                                  "value": f"{kind} {0 if kind == 'none' else PROBE_CALLS}"},
            },
        },
    }


def cidr(text):
    address, _, length = text.partition("/")
    if not length:
        length = "128" if ":" in address else "32"
    return {"remote_ip": {"address_prefix": address, "prefix_len": int(length)}}


RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


def rbac_scenario(ip_acl):
    """Envoy's RBAC equivalent of ip-acl's config: the global deny list in a
    DENY filter, each rule's allow list as that filter's per-route
    configuration of the routes the rule names, as an Envoy user would write
    it. Returns (filters, route editor, note); filters is None when the
    config uses what RBAC cannot say the same way."""
    if ip_acl.get("apps") or any(r.get("apps") for r in ip_acl.get("rules", [])):
        return None, None, "ip-acl config has per-app lists"
    if ip_acl.get("allow"):
        return None, None, "ip-acl config has a global allow list"
    per_route = {}
    for i, rule in enumerate(ip_acl.get("rules", [])):
        match = rule.get("match") or {}
        if set(match) != {"route_names"} or rule.get("deny"):
            return None, None, f"ip-acl rules[{i}] is more than an allow list on route names"
        for route in match["route_names"]:
            per_route[route] = {"rules": {"action": "ALLOW", "policies": {rule.get("name", f"rule-{i}"): {
                "permissions": [{"any": True}], "principals": [cidr(c) for c in rule["allow"]]}}}}
    filters = []
    if ip_acl.get("deny"):
        filters.append({"name": "envoy.filters.http.rbac", "typed_config": {
            "@type": RBAC_TYPE,
            "rules": {"action": "DENY", "policies": {"global-deny": {
                "permissions": [{"any": True}], "principals": [cidr(c) for c in ip_acl["deny"]]}}}}})
    if per_route:
        filters.append({"name": "bench.rbac_allow", "typed_config": {
            "@type": RBAC_TYPE,
            "rules": {"action": "ALLOW", "policies": {"everyone": {
                "permissions": [{"any": True}], "principals": [{"any": True}]}}}}})

    def routes(route_config):
        for host in route_config.get("virtual_hosts", []):
            for route in host.get("routes", []):
                if route.get("name") in per_route:
                    route.setdefault("typed_per_filter_config", {})["bench.rbac_allow"] = {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
                        "rbac": per_route[route["name"]]}

    return filters, routes, ("RBAC derived from ip-acl's config: a DENY filter for the global list, the "
                             "rules' allow lists as per-route RBAC on the routes they name; "
                             "`xff_num_trusted_hops: 1` so `remote_ip` is the X-Forwarded-For client")


def local_ratelimit_filter():
    return {
        "name": "envoy.filters.http.local_ratelimit",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
            "stat_prefix": "bench_local_rate_limit",
            "token_bucket": {"max_tokens": 1000000000, "tokens_per_fill": 1000000000, "fill_interval": "1s"},
            "filter_enabled": {"runtime_key": "bench_lrl_enabled",
                               "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
            "filter_enforced": {"runtime_key": "bench_lrl_enforced",
                                "default_value": {"numerator": 100, "denominator": "HUNDRED"}},
        },
    }


def start_fleet_store(work, cpu, webdis_port, redis_port):
    """Redis (no persistence, on `redis_port`) and Webdis (on `webdis_port`)
    on loopback: (Redis port, [procs], description)."""
    redis = spawn(taskset(cpu) + [os.environ.get("REDIS_SERVER_BIN", "/usr/bin/redis-server"),
                                  "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                                  "--appendonly", "no", "--dir", str(work)], work / "redis.log")
    wait_port(redis_port, redis, "redis-server")
    conf = work / "webdis.json"
    conf.write_text(json.dumps({
        "redis_host": "127.0.0.1", "redis_port": redis_port, "http_host": "127.0.0.1",
        "http_port": webdis_port, "threads": 2, "pool_size": 16, "daemonize": False, "database": 0,
        "verbosity": 1, "logfile": str(work / "webdis.log"),
        "acl": [{"disabled": ["*"]}, {"enabled": ["EVALSHA", "EVAL"]}]}))
    webdis = spawn(taskset(cpu) + [os.environ.get("WEBDIS_BIN", "/usr/bin/webdis"), str(conf)],
                   work / "webdis.out")
    wait_port(webdis_port, webdis, "webdis")
    version = subprocess.run([os.environ.get("REDIS_SERVER_BIN", "/usr/bin/redis-server"), "--version"],
                             capture_output=True, text=True).stdout.split()
    redis_version = next((w.split("=")[1] for w in version if w.startswith("v=")), "?")
    return redis_port, [redis, webdis], f"Redis {redis_version} behind Webdis, on the client's CPUs"


def flush_fleet_store(redis_port):
    """Empties Redis: the instruction count sends the signed requests again
    (from the first nonce), which the load phase recorded."""
    with socket.create_connection(("127.0.0.1", redis_port), timeout=10) as conn:
        conn.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
        if not conn.recv(64).startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")


class Scenario:
    """One Envoy configuration measured: `config` is its whole bootstrap.
    `fixed` (method, path, [(name, value)]): the scenario gets that one
    request again and again instead of the signed mix. `answers`: the class
    of status every answer has (`2`: 2xx; error-mapping's rows answer 4xx
    on purpose); any other is counted as a failure."""

    def __init__(self, key, label, group, config, wasm=(), baseline=None, note="", fixed=None, answers="2"):
        self.key, self.label, self.group = key, label, group
        self.config, self.wasm = config, list(wasm)
        self.baseline, self.status, self.note = baseline, "ok", note
        self.fixed = fixed
        self.answers = answers
        self.runs = []

    def unexpected(self, statuses):
        """How many of `statuses` (status text → count) are not of the class asked."""
        return sum(n for status, n in statuses.items() if not status.startswith(self.answers))


# --------------------------------------------------------------------------
# sign-auth's ways in, one request each, beside Envoy's jwt_authn

BENCH_ISSUER = "https://bench.example"
JWT_AUTHN_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
# The demo's AppCode and Basic user (examples/demo.yaml keeps their digests).
DEMO_APPCODE = "demo-appcode"
DEMO_BASIC = "Basic ZGVtby11c2VyOmRlbW8tcGFzc3dvcmQ="


def policy_bench(*args):
    return subprocess.run([str(NATIVE_DIR / "policy-bench"), *args], capture_output=True, text=True,
                          check=True).stdout.strip()


def huawei_signed(key, secret, method, path):
    """Headers of a request signed with Huawei APIG's SDK-HMAC-SHA256, only
    `x-sdk-date` signed (the bench does not know the listener's port, so the
    Host is left out): the scheme of docs/policies/sign-auth.md, written
    again here."""
    import hashlib, hmac
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    uri = path if path.endswith("/") else path + "/"
    canonical = "\n".join([method, uri, "", f"x-sdk-date:{date}", "", "x-sdk-date",
                           hashlib.sha256(b"").hexdigest()])
    to_sign = f"SDK-HMAC-SHA256\n{date}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
    signature = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha256).hexdigest()
    return [("X-Sdk-Date", date),
            ("Authorization", f"SDK-HMAC-SHA256 Access={key}, SignedHeaders=x-sdk-date, Signature={signature}")]


def auth_section(sign_auth, mode, jwt=None):
    """The demo's sign-auth section taking `mode` only, on every API and
    without TLS, app lists, the fleet store or the backend signature; a day
    of timestamp window (a Huawei signature is made once per run)."""
    c = copy.deepcopy(sign_auth)
    for field in ("fleet", "backend_signature"):
        c.pop(field, None)
    c["timestamp_window_seconds"] = 86400
    c["anonymous"] = False
    c["modes"] = [mode]
    for rule in c.get("rules", []):
        rule["modes"] = [mode]
        for field in ("require_tls", "apps", "anonymous", "jwt_issuers"):
            rule.pop(field, None)
    if jwt is not None:
        c["jwt"] = jwt
        c["apps"][0]["jwt"] = [{"issuer": "bench", "clients": ["bench-web"]}]
    return c


def auth_scenarios(chain, native, configs):
    """sign-auth alone in the native module, each mode on its own request,
    and Envoy's jwt_authn on the JWT request: what one check costs."""
    sign_auth = configs.get("sign_auth")
    if not sign_auth:
        return []
    jwks = policy_bench("--jwks")
    token = policy_bench("--token", BENCH_ISSUER, "bench-web", "86400")
    issuer = {"name": "bench", "issuer": BENCH_ISSUER, "audiences": ["gateway"], "jwks": json.loads(jwks)}
    bearer = [("Authorization", f"Bearer {token}")]
    app = sign_auth["apps"][0]
    hw = app.get("huawei", [{}])[0]
    native_entry = native.filters[0]

    def native_auth(section):
        return native.config([with_document(native_entry, {"sign_auth": section})])

    out = [Scenario("auth-bare", "bare Envoy, one request", "auth", chain.config([]),
                    fixed=("GET", "/me", bearer),
                    note="the baseline of the auth rows: bare Envoy given the JWT request")]
    rows = [
        ("auth-huawei", "native, Huawei signature", auth_section(sign_auth, "huawei_app"),
         ("GET", "/partner/1", huawei_signed(hw.get("key", ""), (hw.get("secrets") or [""])[0], "GET", "/partner/1")),
         "SDK-HMAC-SHA256 over x-sdk-date, no body"),
        ("auth-appcode", "native, AppCode", auth_section(sign_auth, "appcode"),
         ("GET", "/partner/1", [("Authorization", f"APPCODE {DEMO_APPCODE}")]), ""),
        ("auth-basic", "native, Basic", auth_section(sign_auth, "basic"),
         ("GET", "/partner/1", [("Authorization", DEMO_BASIC)]), ""),
        ("auth-jwt-warm", "native, JWT (verified before)",
         auth_section(sign_auth, "jwt", {"issuers": [issuer]}), ("GET", "/me", bearer),
         "EdDSA token; the verified-token table answers"),
        ("auth-jwt-cold", "native, JWT (verified each time)",
         auth_section(sign_auth, "jwt", {"issuers": [issuer], "cache_max_ttl_seconds": 0}),
         ("GET", "/me", bearer), "EdDSA token; the table off: a signature check per request"),
    ]
    for key, label, section, fixed, note in rows:
        out.append(Scenario(key, label, "auth", native_auth(section), baseline="auth-bare", fixed=fixed,
                            note=note))
    access = configs.get("access_control")
    if access:
        # The demo's own-notes check after Basic: minus the Basic row, what the check costs.
        document = {"sign_auth": auth_section(sign_auth, "basic"), "access_control": access}
        out.append(Scenario("auth-basic-access", "native, Basic then access-control", "auth",
                            native.config([with_document(native_entry, document)]), baseline="auth-bare",
                            fixed=("GET", "/users/demo-user/notes", [("Authorization", DEMO_BASIC)]),
                            note="the demo's `user == param.userId` check after Basic"))
    routing = configs.get("routing")
    if routing:
        out.append(Scenario("route-eu", "native, routing (a route chosen)", "auth",
                            native.config([with_document(native_entry, {"routing": routing})]),
                            baseline="auth-bare", fixed=("GET", "/catalog/fr/items", []),
                            note="the demo's by-region policy sends the request to its eu route: "
                                 "the header set, Envoy's route chosen again; no mirror in the bench"))
    # error-mapping: a backend's 404 mapped by status (decided on the
    # headers), and a 200 whose JSON body carries an error code (the headers
    # held, the body read, the error body written in its place).
    mapping = {"rules": [
        {"name": "legacy", "match": {"path": {"template": "/legacy/orders/{orderId}"}},
         "mappings": [{"code": "404", "status": 410, "message": "Order ${param.orderId} is gone"}]},
        # nginx answers the code the request names in `result_code`; the
        # echo upstream (make bench-smoke) shows it among the headers.
        {"name": "roles", "match": {"path": {"prefix": "/roles/"}},
         "parameters": {"resultCode": "BodyJsonField:$.result_code",
                        "echoed": "BodyJsonField:$.headers.x-result-code",
                        "resultId": "BodyJsonField:$.req_msg_id"},
         "condition": "status == 200 && ($resultCode == 'ROLE_NOT_EXISTS' || $echoed == 'ROLE_NOT_EXISTS')",
         "default": {"status": 404, "message": "Role Not Exists, RequestId=${resultId}"}},
    ]}
    mapping_config = native.config([with_document(native_entry, {"error_mapping": mapping})])
    legacy = ("GET", "/legacy/orders/42", [("x-echo-status", "404")])
    roles = ("GET", "/roles/7", [("x-result-code", "ROLE_NOT_EXISTS")])
    out.append(Scenario("map-bare-404", "bare Envoy, the backend's 404", "auth", chain.config([]), fixed=legacy,
                        answers="4", note="the baseline of the 404 mapped by status: the same answer passed on"))
    out.append(Scenario("map-status", "native, error-mapping (a 404 mapped by status)", "auth", mapping_config,
                        baseline="map-bare-404", fixed=legacy, answers="4",
                        note="decided on the headers; the backend's body dropped, the error body sent"))
    out.append(Scenario("map-bare-200", "bare Envoy, the backend's 200 with an error code", "auth",
                        chain.config([]), fixed=roles,
                        note="the baseline of the JSON body read: the same answer passed on"))
    out.append(Scenario("map-body", "native, error-mapping (a JSON body read)", "auth", mapping_config,
                        baseline="map-bare-200", fixed=roles, answers="4",
                        note="nginx's 200 with `result_code`: headers held, body read, mapped to 404"))
    # response-cache: a warm hit next to Envoy's own direct_response of a
    # body of the same size, and a miss passed to the upstream (its 404 not
    # stored) next to bare Envoy proxying the same request.
    caching = {"rules": [
        {"name": "products", "match": {"path": {"prefix": "/products/"}}, "ttl_seconds": 3600},
        {"name": "legacy", "match": {"path": {"prefix": "/legacy/"}}, "ttl_seconds": 3600},
    ]}
    cache_config = native.config([with_document(native_entry, {"response_cache": caching})])
    product = ("GET", "/products/7", [])
    nginx_body = '{"upstream":"nginx","ok":true}\n'

    def direct_response(route_config):
        for host in route_config.get("virtual_hosts", []):
            host["routes"].insert(0, {"match": {"prefix": "/products/"}, "direct_response": {
                "status": 200, "body": {"inline_string": nginx_body}}})

    out.append(Scenario("cache-direct", "bare Envoy, direct_response", "auth",
                        chain.config([], routes=direct_response), fixed=product,
                        note="the baseline of a hit: Envoy answers the same body itself"))
    out.append(Scenario("cache-hit", "native, response-cache (a warm hit)", "auth", cache_config,
                        baseline="cache-direct", fixed=product,
                        note="key, one shared-data read, the stored answer replayed with Age"))
    out.append(Scenario("cache-miss", "native, response-cache (a miss, not stored)", "auth", cache_config,
                        baseline="map-bare-404", fixed=legacy, answers="4",
                        note="looked up, passed to the upstream, its 404 not stored"))
    for key, label, cache in (("jwt-authn", "Envoy jwt_authn", None),
                              ("jwt-authn-cached", "Envoy jwt_authn, its JWT cache on", {"jwt_cache_size": 1000})):
        provider = {"issuer": BENCH_ISSUER, "audiences": ["gateway"], "local_jwks": {"inline_string": jwks},
                    "forward": False, "claim_to_headers": [{"header_name": "x-user-sub", "claim_name": "sub"}]}
        if cache:
            provider["jwt_cache_config"] = cache
        filt = {"name": "envoy.filters.http.jwt_authn", "typed_config": {
            "@type": JWT_AUTHN_TYPE, "providers": {"bench": provider},
            "rules": [{"match": {"prefix": "/"}, "requires": {"provider_name": "bench"}}]}}
        out.append(Scenario(key, label, "auth", chain.config([filt]), baseline="auth-bare",
                            fixed=("GET", "/me", bearer), note="the same EdDSA token, the same JWKS inline"))
    return out


class FixedRequests:
    """One request, sent again and again (a credential without a nonce)."""

    def __init__(self, fixed):
        method, path, headers = fixed
        head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers)
        self.raw = (head + "\r\n").encode()

    def request(self, index):
        return self.raw


def requests_of(work, scenario):
    """What a scenario is sent: its fixed request, or the signed mix."""
    return FixedRequests(scenario.fixed) if scenario.fixed else SignedRequests(work)


NATIVE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"


def native_baseline_entry():
    """The do-nothing dynamic module (bench/empty-filter), through the native host."""
    return {
        "name": "bench.native_empty_filter",
        "typed_config": {
            "@type": NATIVE_TYPE,
            "dynamic_module_config": {"module": {"local": {"filename": str(DYNAMIC_MODULE_DIR / "libempty_filter.so")}}},
            "filter_name": "empty_filter",
            "filter_config": {"@type": STRING_TYPE, "value": "{}"},
        },
    }


def with_document(entry, document):
    """gatewayctl's native filter entry given another configuration document."""
    out = copy.deepcopy(entry)
    out["typed_config"]["filter_config"]["value"] = json.dumps(document, separators=(",", ":"))
    return out


def scenarios(chain, module, module_fleet, native, native_fleets=()):
    """Every scenario's bootstrap: the policy filters as gatewayctl writes them
    (the chain, one filter of it, the module, the native module), and the
    baselines beside them, on the same listener, routes and clusters."""
    configs = filter_configs(chain)
    policies = len(chain.filters)
    out = [Scenario("bare", "bare Envoy", "baseline", chain.config([])),
           Scenario("empty-1", "1 empty Wasm filter", "baseline", chain.config([empty_entry(1)]),
                    ["empty_filter.wasm"], baseline="bare"),
           Scenario(f"empty-{policies}", f"{policies} empty Wasm filters", "baseline",
                    chain.config([empty_entry(i) for i in range(1, policies + 1)]),
                    ["empty_filter.wasm"] * policies, baseline="bare")]
    for entry in chain.filters:
        key = filter_id(entry).replace("_", "-")
        out.append(Scenario(key, key, "filter", chain.config([entry]), [wasm_file(entry)], baseline="empty-1"))
    out.append(Scenario("chain", f"full chain ({policies} filters)", "chain", chain.config(chain.filters),
                        [wasm_file(e) for e in chain.filters], baseline=f"empty-{policies}"))
    out.append(Scenario("module", "gateway module", "module", module.config(module.filters), ["gateway.wasm"],
                        baseline="empty-1"))
    out.append(Scenario("module-fleet", "gateway module, fleet store", "module",
                        module_fleet.config(module_fleet.filters), ["gateway.wasm"], baseline="module",
                        note="sign-auth's nonces, throttling's counters and the fleet breaker in "
                             "Redis behind Webdis: one call per request, and each worker's "
                             "breaker sync every 100 ms"))
    out.append(Scenario("native-empty", "1 empty native module", "baseline", chain.config([native_baseline_entry()]),
                        baseline="bare", note="a dynamic module through the native host that only continues"))
    out.append(Scenario("native-module", "native gateway module", "module", native.config(native.filters),
                        baseline="native-empty",
                        note="libgateway.so: the gateway module as an Envoy dynamic module, no Wasm VM"))
    for key, label, bootstrap, note in native_fleets:
        out.append(Scenario(key, label, "module", bootstrap.config(bootstrap.filters), baseline="native-module",
                            note=note))
    # One policy alone in the native module, against Envoy's own filter for the same job.
    for name, rival in (("ip_acl", "; compare native RBAC"), ("throttling", "; compare native local_ratelimit"),
                        ("ext_auth", " (the authorizer's decisions cached)")):
        if name in configs:
            key = name.replace("_", "-")
            out.append(Scenario(f"native-{key}", f"native module, {key} only", "native",
                                native.config([with_document(native.filters[0], {name: configs[name]})]),
                                baseline="bare", note=f"the native module with one section{rival}"))
    # threat-protection on every request of the mix (the demo checks /search
    # only): one rule matching every API, every place but headers.
    every_api = {"rules": [{"name": "every-api"}]}
    out.append(Scenario("native-threat-protection", "native module, threat-protection on every request",
                        "native", native.config([with_document(native.filters[0], {"threat_protection": every_api})]),
                        baseline="bare", note="the native module with one section: each request's query, "
                                              "path, cookies and JSON or form body checked for SQL and script "
                                              "injection at the default sensitivity"))
    if "ip_acl" in configs:
        rbac, routes, note = rbac_scenario(configs["ip_acl"])
        if rbac is None:
            raise RuntimeError(f"no RBAC equivalent of the demo's ip-acl configuration: {note}")
        out.append(Scenario("native-rbac", "native RBAC (vs ip-acl)", "native",
                            chain.config(rbac, hcm_extra={"xff_num_trusted_hops": 1}, routes=routes),
                            baseline="bare", note=note))
    out.append(Scenario("native-local-ratelimit", "native local_ratelimit (vs throttling)", "native",
                        chain.config([local_ratelimit_filter()]), baseline="bare",
                        note="one token bucket for every request, limit 1e9/s (never refuses)"))
    out += auth_scenarios(chain, native, configs)
    for kind in PROBE_KINDS:
        out.append(Scenario(f"probe-{kind}", f"host call: {kind}" if kind != "none" else "host-call probe, no call",
                            "probe", chain.config([probe_entry(kind)]), ["host_call_probe.wasm"],
                            baseline=None if kind == "none" else "probe-none"))
    return out


# --------------------------------------------------------------------------
# one measured run

def parse_duration_us(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        return float("nan")
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[unit]


def parse_wrk(text):
    out = {"p50_us": float("nan"), "p99_us": float("nan"), "rps": float("nan"), "requests": 0,
           "non2xx": 0, "socket_errors": "", "wrapped": 0}
    for line in text.splitlines():
        s = line.strip()
        m = re.match(r"(50|99)(?:\.0+)?%\s+(\S+)", s)
        if m:
            out[f"p{m.group(1)}_us"] = parse_duration_us(m.group(2))
        m = re.match(r"Requests/sec:\s+([\d.]+)", s)
        if m:
            out["rps"] = float(m.group(1))
        m = re.match(r"(\d+) requests in", s)
        if m:
            out["requests"] = int(m.group(1))
        m = re.match(r"Non-2xx or 3xx responses:\s+(\d+)", s)
        if m:
            out["non2xx"] = int(m.group(1))
        if s.startswith("Socket errors:"):
            out["socket_errors"] = s
        m = re.match(r"bench-requests: wrapped (\d+)", s)
        if m:
            out["wrapped"] = int(m.group(1))
    return out


def envoy_stats(admin):
    _, text = http_get(admin, "/stats?filter=^http\\.gateway\\.downstream_rq_(total|[1-5]xx)$")
    stats = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        try:
            stats[name.strip().rsplit(".", 1)[-1]] = int(value)
        except ValueError:
            pass
    return stats


def wait_ready(proc, admin_path, log_path, timeout):
    """Waits until Envoy is LIVE; its admin port and its listener's port."""
    deadline = time.time() + timeout
    admin = None
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"Envoy exited ({proc.returncode}):\n{log_tail(log_path)}")
        if admin is None and admin_path.exists():
            text = admin_path.read_text().strip()
            if text:
                admin = int(text.rsplit(":", 1)[1])
        if admin is not None:
            try:
                status, body = http_get(admin, "/ready", timeout=1.0)
                if status == 200 and "LIVE" in body:
                    break
            except OSError:
                pass
        time.sleep(0.05)
    else:
        raise RuntimeError(f"Envoy not ready in {timeout:.0f} s:\n{log_tail(log_path)}")
    _, text = http_get(admin, "/listeners?format=json")
    status = json.loads(text)["listener_statuses"][0]
    return admin, status["local_address"]["socket_address"]["port_value"]


class Envoy:
    """One Envoy per scenario, started once; the rounds send it bursts of load."""

    def __init__(self, args, work, scenario, config):
        self.dir = work / "runs"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.stem = scenario.key
        self.config_path = self.dir / f"{self.stem}.json"
        self.config_path.write_text(json.dumps(config, indent=1))
        self.admin_path = self.dir / f"{self.stem}.admin"
        self.log_path = self.dir / f"{self.stem}.log"
        if self.admin_path.exists():
            self.admin_path.unlink()
        self.cursor = 0  # next unused signed request (nonce) for this Envoy
        self.fixed = scenario.fixed
        self.proc = spawn(taskset(args.envoy_cpu) + [
            args.envoy, "-c", str(self.config_path), "--admin-address-path", str(self.admin_path),
            "--disable-hot-restart", "--concurrency", "1", "--log-level", args.envoy_log_level],
            self.log_path)

    def ready(self, timeout=90.0):
        self.admin, self.port = wait_ready(self.proc, self.admin_path, self.log_path, timeout)

    def alive(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"Envoy exited ({self.proc.returncode}):\n{log_tail(self.log_path)}")

    def stop(self):
        stop(self.proc)


def wrk(args, port, duration, first, last, latency, fixed=None):
    cmd = taskset(args.client_cpu) + ["wrk", "-t", str(args.threads), "-c", str(args.connections),
                                      "-d", f"{duration}s", "--timeout", "5s"]
    if latency:
        cmd.append("--latency")
    if fixed:
        method, path, headers = fixed
        for name, value in headers:
            cmd += ["-H", f"{name}: {value}"]
        cmd.append(f"http://127.0.0.1:{port}{path}")
    else:
        cmd += ["-s", str(args.lua), f"http://127.0.0.1:{port}/", "--", str(first), str(last),
                str(args.threads)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done.stdout


def load(args, envoy, duration, latency):
    """wrk against `envoy` with signed requests it has not seen yet."""
    first = envoy.cursor
    if first + args.burst_requests > args.requests:
        first = 0  # only replays to Envoys without sign-auth get here (the pool is sized for the rest)
        envoy.wrapped_pool = True
    last = first + args.burst_requests
    before = envoy_stats(envoy.admin)
    busy0, client0, children0 = busy_now(), client_cpu(None), children_cpu()
    cpu0, t0 = cpu_seconds(envoy.proc.pid), time.time()
    out = wrk(args, envoy.port, duration, first, last, latency, envoy.fixed)
    cpu1, t1 = cpu_seconds(envoy.proc.pid), time.time()
    ours = cpu1 - cpu0 + client_cpu(client0) + children_cpu() - children0
    foreign = foreign_cpu(busy0, busy_now(), ours, t1 - t0)
    after = envoy_stats(envoy.admin)
    envoy.alive()
    served = after.get("downstream_rq_total", 0) - before.get("downstream_rq_total", 0)
    envoy.cursor = first + served + 2 * args.connections + 100
    return before, after, cpu1 - cpu0, t1 - t0, foreign, parse_wrk(out), served


def measure(args, envoy, scenario, round_no):
    before, after, cpu, wall, foreign, parsed, served = load(args, envoy, args.duration, latency=True)
    if served <= 0:
        served = parsed["requests"]
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    bad = sum(delta.get(f"downstream_rq_{c}xx", 0) for c in "12345" if c != scenario.answers)
    return {
        "scenario": scenario.key, "round": round_no, "requests": served, "non_2xx": bad,
        "cpu_s": cpu, "wall_s": wall,
        "cpu_us_per_request": cpu * 1e6 / served if served else float("nan"),
        "cpu_utilisation": cpu / wall if wall else float("nan"),
        "rps": parsed["rps"], "p50_us": parsed["p50_us"], "p99_us": parsed["p99_us"],
        "rss_mb": rss_mb(envoy.proc.pid), "wrapped": parsed["wrapped"],
        "socket_errors": parsed["socket_errors"],
        "rq_4xx": delta.get("downstream_rq_4xx", 0), "rq_5xx": delta.get("downstream_rq_5xx", 0),
        "foreign_cpu": foreign,
    }


def profile(args, work, envoy):
    """One burst under `perf record`; reports by shared object and by symbol.
    Envoy's binary is stripped and V8's generated code has no symbols, so the
    useful split is Envoy and its libraries against `[JIT]`/unknown code."""
    out = work / "perf"
    out.mkdir(exist_ok=True)
    data = out / f"{envoy.stem}.data"
    rec = subprocess.Popen(["perf", "record", "-q", "-F", "2999", "-g", "-o", str(data),
                            "-p", str(envoy.proc.pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    load(args, envoy, args.duration * 2, latency=False)
    rec.send_signal(signal.SIGINT)
    rec.wait(timeout=60)
    for sort in ("dso", "dso,sym"):
        report = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children",
                                 "--sort", sort, "-g", "none", "--percent-limit", "0.5"],
                                capture_output=True, text=True)
        (out / f"{envoy.stem}.{sort.replace(',', '-')}.txt").write_text(report.stdout)
    say(f"{envoy.stem}: profile in {out}")


# --------------------------------------------------------------------------
# Envoy's instructions per request, under callgrind

class SignedRequests:
    """The requests of signed.lua, rebuilt for a plain socket client."""

    def __init__(self, work):
        lua = (work / "signed.lua").read_text()
        kinds = re.findall(r'\{ "(.*?)", "(.*?)", "(.*?)" \}', lua)
        self.kinds = [tuple(part.encode().decode("unicode_escape").encode() for part in kind)
                      for kind in kinds]
        self.signatures = (work / "signed.txt").read_bytes().split(b"\n")

    def request(self, index):
        before, middle, after = self.kinds[index % len(self.kinds)]
        return before + str(index).encode() + middle + self.signatures[index] + after


def skip_chunked(conn, pending):
    """Reads past a chunked body (no trailers) on `conn`; what follows it."""
    while True:
        while b"\r\n" not in pending:
            pending += conn.recv(65536)
        size_line, pending = pending.split(b"\r\n", 1)
        size = int(size_line.split(b";")[0], 16)
        while len(pending) < size + 2:
            pending += conn.recv(65536)
        pending = pending[size + 2:]
        if size == 0:
            return pending


def send_sequentially(port, requests, first, count):
    """Sends requests first..first+count one at a time on one connection; status counts."""
    statuses = {}
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        pending = b""
        for index in range(first, first + count):
            conn.sendall(requests.request(index))
            while b"\r\n\r\n" not in pending:
                chunk = conn.recv(65536)
                if not chunk:
                    raise RuntimeError("Envoy closed the connection")
                pending += chunk
            head, pending = pending.split(b"\r\n\r\n", 1)
            if re.search(rb"(?i)\r\ntransfer-encoding: *chunked", head):
                pending = skip_chunked(conn, pending)
            else:
                length = re.search(rb"(?i)content-length: *(\d+)", head)
                length = int(length.group(1)) if length else 0
                while len(pending) < length:
                    pending += conn.recv(65536)
                pending = pending[length:]
            status = head.split(b" ", 2)[1].decode()
            statuses[status] = statuses.get(status, 0) + 1
    return statuses


def instructions_per_request(args, work, scenario, config, requests):
    """Envoy under callgrind: instructions (all threads, user space) per request,
    counted over `--instr-requests` requests after `--instr-warmup` ones. The
    count is deterministic to a fraction of a percent, where CPU time on a
    shared machine varies by tens of percent."""
    out = work / "callgrind-envoy"
    out.mkdir(exist_ok=True)
    stem = scenario.key
    config_path = out / f"{stem}.json"
    config_path.write_text(json.dumps(config, indent=1))
    admin_path = out / f"{stem}.admin"
    for stale in [admin_path, *out.glob(f"{stem}.callgrind*")]:
        stale.unlink(missing_ok=True)
    envoy_bin = os.path.realpath(shutil.which(args.envoy) or args.envoy)
    real = real_envoy_binary(envoy_bin)
    proc = spawn(["valgrind", "--tool=callgrind", "--smc-check=all-non-file", "--instr-atstart=no",
                  f"--callgrind-out-file={out / (stem + '.callgrind')}", real, "-c", str(config_path),
                  "--admin-address-path", str(admin_path), "--disable-hot-restart", "--concurrency", "1",
                  "--log-level", args.envoy_log_level], out / f"{stem}.log")
    try:
        try:
            _, port = wait_ready(proc, admin_path, out / f"{stem}.log", timeout=300.0)
        except RuntimeError:
            vm_creation_failed(out / f"{stem}.log")
            raise
        control = ["callgrind_control"]
        subprocess.run(control + ["-i", "on", str(proc.pid)], check=True, capture_output=True)
        warm = send_sequentially(port, requests, 0, args.instr_warmup)
        subprocess.run(control + ["-z", str(proc.pid)], check=True, capture_output=True)
        statuses = send_sequentially(port, requests, args.instr_warmup, args.instr_requests)
        subprocess.run(control + ["-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        stop(proc, grace=30.0)
    vm_creation_failed(out / f"{stem}.log")
    total = allocations = 0
    for dump in out.glob(f"{stem}.callgrind.*"):
        text = dump.read_text(errors="replace")
        for line in text.splitlines():
            if line.startswith("summary:"):
                total += int(line.split()[1])
        allocations += heap_allocations(text)
    bad = scenario.unexpected(statuses) + scenario.unexpected(warm)
    return total / args.instr_requests, allocations / args.instr_requests, bad


# The C allocator's entry points. Envoy's own C++ allocations go through
# tcmalloc's `operator new`, under other names, so these count what native
# code that allocates with malloc (Rust's system allocator in a dynamic
# module) asks for; a Wasm module allocates inside its VM's memory, which
# no host function sees.
HEAP_ALLOCATORS = {"malloc", "calloc", "realloc", "aligned_alloc", "posix_memalign", "memalign"}


def heap_allocations(callgrind_text):
    """Calls of the C allocator in one callgrind dump (name-compressed
    `cfn=(id) name` lines, each followed by `calls=N …`)."""
    names, callee, count = {}, None, 0
    for line in callgrind_text.splitlines():
        if line.startswith(("cfn=", "fn=")):
            match = re.match(r"c?fn=\((\d+)\)(?: (.*))?$", line)
            if match:
                if match.group(2):
                    names[match.group(1)] = match.group(2)
                callee = match.group(1) if line.startswith("cfn=") else None
        elif line.startswith("calls=") and callee is not None:
            if names.get(callee) in HEAP_ALLOCATORS:
                count += int(line[6:].split()[0])
            callee = None
    return count


def vm_creation_failed(log_path):
    """V8 reserves several GB of address space per Wasm VM; valgrind's address
    space holds only a few (each filter has one VM per Envoy thread)."""
    if "Failed to create new Wasm instance" in log_path.read_text(errors="replace"):
        raise RuntimeError("a Wasm VM could not be created under valgrind (address space); "
                           "scenarios with several VMs cannot be counted")


def real_envoy_binary(path):
    """The pip package's `envoy` is a Python launcher; valgrind needs the ELF binary."""
    with open(path, "rb") as f:
        if f.read(4) == b"\x7fELF":
            return path
    found = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c",
                            "import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), '_bin', 'envoy'))"],
                           capture_output=True, text=True)
    candidate = found.stdout.strip()
    if found.returncode == 0 and os.path.exists(candidate):
        return candidate
    raise RuntimeError(f"cannot find the Envoy binary behind {path}")


def count_instructions(args, work, scenarios_to_count, configs_by_key):
    def one(s):
        try:
            requests = requests_of(work, s)
            value, allocations, bad = instructions_per_request(args, work, s, configs_by_key[s.key], requests)
            s.instructions, s.allocations, s.instr_non_2xx = value, allocations, bad
            say(f"{s.key:<24} {value:10,.0f} instructions/request, {allocations:6.1f} malloc calls/request"
                + (f"  non-2xx {bad}" if bad else ""))
        except Exception as error:
            s.instructions = None
            why = str(error).splitlines()[0][:300]
            s.note = (s.note + "; " if s.note else "") + f"instructions not counted: {why}"
            say(f"{s.key}: instruction count FAILED: {why}")

    with ThreadPoolExecutor(max_workers=max(1, args.instr_parallel)) as pool:
        list(pool.map(one, scenarios_to_count))


# --------------------------------------------------------------------------
# callgrind

def callgrind_total(out_file):
    for line in Path(out_file).read_text(errors="replace").splitlines():
        if line.startswith("summary:") or line.startswith("totals:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {out_file}")


def micro_benchmarks(args, work):
    binary = NATIVE_DIR / "policy-bench"
    listing = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True).stdout
    decisions = [line.split("\t", 1) for line in listing.splitlines() if line.strip()]
    cg_dir = work / "callgrind"
    cg_dir.mkdir(parents=True, exist_ok=True)

    def instructions(name, n):
        out = cg_dir / f"{name}.{n}.out"
        done = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                               str(binary), "--configs", str(work / "configs"), name, str(n)],
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"{name} ({n}): {done.stderr.strip()[-1500:]}")
        return callgrind_total(out)

    def one(decision):
        name, about = decision
        try:
            low = instructions(name, args.micro_low)
            high = instructions(name, args.micro_high)
            per = (high - low) / (args.micro_high - args.micro_low)
            return {"decision": name, "instructions": round(per), "about": about,
                    "total_low": low, "total_high": high, "status": "ok"}
        except Exception as error:  # reported in the table, not fatal
            return {"decision": name, "instructions": None, "about": about, "status": f"failed: {error}"}

    with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
        return list(pool.map(one, decisions))


# --------------------------------------------------------------------------
# report

def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def minimum(values):
    values = [v for v in values if v == v]
    return min(values) if values else float("nan")


def summarise(all_scenarios):
    by_key = {s.key: s for s in all_scenarios}
    rows = []
    for s in all_scenarios:
        runs = s.runs
        row = {"scenario": s.key, "label": s.label, "group": s.group, "status": s.status, "note": s.note,
               "rounds": len(runs)}
        if runs:
            cpu = [r["cpu_us_per_request"] for r in runs]
            row.update({
                "cpu_us_min": minimum(cpu), "cpu_us_median": median(cpu),
                "rps_median": median([r["rps"] for r in runs]),
                "p50_us_median": median([r["p50_us"] for r in runs]),
                "p99_us_median": median([r["p99_us"] for r in runs]),
                "rss_mb_median": median([r["rss_mb"] for r in runs]),
                "non_2xx": sum(r["non_2xx"] for r in runs),
                "requests": sum(r["requests"] for r in runs),
                "wrapped": sum(r["wrapped"] for r in runs),
                "foreign_cpu_median": median([r.get("foreign_cpu", float("nan")) for r in runs]),
            })
        row["startup_s"] = getattr(s, "startup_s", None)
        sizes = [(WASM_DIR / w).stat().st_size for w in s.wasm if (WASM_DIR / w).exists()]
        row["wasm_bytes"] = (sum(sizes) if sizes and len(sizes) == len(s.wasm) and s.status == "ok"
                             else None)

        def paired(base_key):
            base = by_key.get(base_key)
            if not base or not base.runs or not runs:
                return float("nan")
            base_by_round = {r["round"]: r["cpu_us_per_request"] for r in base.runs}
            ratios = [r["cpu_us_per_request"] / base_by_round[r["round"]] for r in runs
                      if r["round"] in base_by_round]
            return median(ratios)

        def of_mins(base_key):
            base = by_key.get(base_key)
            if not base or not base.runs or not runs:
                return float("nan")
            return row["cpu_us_min"] / minimum([r["cpu_us_per_request"] for r in base.runs])

        # The estimate is the min: on a shared machine, disturbances (other processes, the
        # host's other guests on the same cores) only ever add CPU time to a burst.
        row["baseline"] = s.baseline if s.baseline not in (None, "bare") else None
        row["ratio_bare"] = of_mins("bare") if s.key != "bare" else 1.0
        row["ratio_empty"] = of_mins(s.baseline) if row["baseline"] else float("nan")
        row["ratio_bare_paired_median"] = paired("bare") if s.key != "bare" else 1.0
        row["ratio_empty_paired_median"] = paired(s.baseline) if row["baseline"] else float("nan")
        row["instructions"] = getattr(s, "instructions", None)
        row["allocations"] = getattr(s, "allocations", None)
        row["instr_non_2xx"] = getattr(s, "instr_non_2xx", None)

        def instr_ratio(base_key):
            base = by_key.get(base_key)
            base_value = getattr(base, "instructions", None) if base else None
            return row["instructions"] / base_value if row["instructions"] and base_value else float("nan")

        row["instr_ratio_bare"] = instr_ratio("bare")
        row["instr_ratio_empty"] = instr_ratio(s.baseline) if s.baseline not in (None, "bare") else float("nan")
        if s.group == "probe" and s.baseline and row["instructions"]:
            base = getattr(by_key.get(s.baseline), "instructions", None)
            row["instr_per_call"] = (row["instructions"] - base) / PROBE_CALLS if base else float("nan")
        if s.group == "probe" and s.baseline:
            # Paired per round (the probes run back to back), then the median.
            base = by_key.get(s.baseline)
            base_by_round = {r["round"]: r["cpu_us_per_request"] for r in (base.runs if base else [])}
            per_call = [(r["cpu_us_per_request"] - base_by_round[r["round"]]) / PROBE_CALLS for r in runs
                        if r["round"] in base_by_round]
            row["per_call_us"] = median(per_call) if per_call else float("nan")
        bare = by_key.get("bare")
        if runs and bare and bare.runs:
            row["added_us"] = row["cpu_us_min"] - minimum([r["cpu_us_per_request"] for r in bare.runs])
        rows.append(row)
    return rows


def fmt(value, spec, missing="—"):
    if value is None or (isinstance(value, float) and value != value):
        return missing
    return format(value, spec)


def targets(rows):
    """(target, CPU ratio, instruction ratio, met by CPU, met by instructions); met is
    None when not measured."""
    by = {r["scenario"]: r for r in rows}

    def check(value, limit):
        return None if value is None or value != value else value <= limit

    lines = []

    def ratio_target(text, row, limit):
        cpu, instr = row.get("ratio_empty"), row.get("instr_ratio_empty")
        lines.append((text, cpu, instr, check(cpu, limit), check(instr, limit)))

    for r in rows:
        if r["group"] == "filter":
            ratio_target(f"{r['label']} alone ≤ {TARGET_SINGLE:.2f} × 1 empty filter", r, TARGET_SINGLE)
    c = by.get("chain")
    if c:
        ratio_target(f"full chain ≤ {TARGET_CHAIN:.2f} × {c['baseline'].split('-')[-1]} empty filters", c,
                     TARGET_CHAIN)
    m, b = by.get("module"), by.get("bare")
    if m:
        ratio_target(f"gateway module ≤ {TARGET_MODULE:.2f} × 1 empty filter", m, TARGET_MODULE)
        over = (m["rss_mb_median"] - b["rss_mb_median"]) if (m.get("rounds") and b and b.get("rounds")) else None
        lines.append((f"gateway module RSS ≤ bare Envoy + {TARGET_RSS_MB} MB (measured: MB over bare)", over,
                      None, check(over, TARGET_RSS_MB), None))
        instr = m.get("instr_ratio_bare")
        lines.append((f"gateway module ≤ {TARGET_WASM_MODULE_INSTR} × bare Envoy in instructions", None, instr,
                      None, check(instr, TARGET_WASM_MODULE_INSTR)))
    n = by.get("native-module")
    if n:
        cpu, instr = n.get("ratio_bare"), n.get("instr_ratio_bare")
        lines.append((f"native module ≤ {TARGET_NATIVE_CPU} × bare in CPU, ≤ {TARGET_NATIVE_INSTR} × in "
                      "instructions", cpu, instr, check(cpu, TARGET_NATIVE_CPU), check(instr, TARGET_NATIVE_INSTR)))
        allocations = n.get("allocations")
        lines.append((f"native module ≤ {TARGET_NATIVE_MALLOC} heap allocations per request (measured: count)",
                      allocations, None, check(allocations, TARGET_NATIVE_MALLOC), None))
        over = (n["rss_mb_median"] - b["rss_mb_median"]) if (n.get("rounds") and b and b.get("rounds")) else None
        lines.append((f"native module RSS ≤ bare Envoy + {TARGET_NATIVE_RSS_MB} MB (measured: MB over bare)", over,
                      None, check(over, TARGET_NATIVE_RSS_MB), None))
    for ours, theirs in (("native-ip-acl", "native-rbac"), ("native-throttling", "native-local-ratelimit")):
        o, e = by.get(ours), by.get(theirs)
        if o and e and b:
            def added(row, key):
                value, base = row.get(key), b.get(key)
                return value - base if value is not None and base is not None and value == value else None

            def ratio(key):
                ours_added, theirs_added = added(o, key), added(e, key)
                return ours_added / theirs_added if ours_added is not None and theirs_added else None

            cpu, instr = ratio("cpu_us_min"), ratio("instructions")
            lines.append((f"{o['label']} adds ≤ what {e['label']} adds (ratio of the added cost)", cpu, instr,
                          check(cpu, 1.0), check(instr, 1.0)))
    return lines


def side_by_side(rows):
    """Wasm filter vs Envoy's native filter for the same job: added µs over bare each."""
    by = {r["scenario"]: r for r in rows}
    out = []
    for wasm, native in (("ip-acl", "native-rbac"), ("throttling", "native-local-ratelimit")):
        w, n = by.get(wasm), by.get(native)
        if w and n and w.get("rounds") and n.get("rounds"):
            out.append((w["label"], n["label"], w["cpu_us_min"], n["cpu_us_min"],
                        w.get("added_us"), n.get("added_us"), w["cpu_us_min"] / n["cpu_us_min"]))
    return out


def write_results(args, work, rows, decisions, meta, runs, changes):
    out = work
    # CSV / JSON
    cols = ["scenario", "label", "status", "rounds", "cpu_us_min", "cpu_us_median", "ratio_bare", "baseline",
            "ratio_empty", "ratio_bare_paired_median", "ratio_empty_paired_median", "added_us", "rps_median", "p50_us_median", "p99_us_median", "rss_mb_median",
            "per_call_us", "instructions", "allocations", "instr_ratio_bare", "instr_ratio_empty", "instr_per_call", "wasm_bytes", "startup_s", "requests", "non_2xx", "foreign_cpu_median", "note"]
    with open(out / "results.csv", "w") as f:
        f.write(",".join(cols) + "\n")
        for r in rows:
            f.write(",".join(csv_cell(r.get(c)) for c in cols) + "\n")
    run_cols = ["scenario", "round", "requests", "non_2xx", "cpu_s", "wall_s", "cpu_us_per_request",
                "cpu_utilisation", "rps", "p50_us", "p99_us", "rss_mb", "wrapped", "rq_4xx", "rq_5xx",
                "foreign_cpu"]
    with open(out / "runs.csv", "w") as f:
        f.write(",".join(run_cols) + "\n")
        for r in runs:
            f.write(",".join(csv_cell(r.get(c)) for c in run_cols) + "\n")
    with open(out / "decisions.csv", "w") as f:
        f.write("decision,instructions,status\n")
        for d in decisions:
            f.write(f"{d['decision']},{csv_cell(d.get('instructions'))},{csv_cell(d['status'])}\n")
    (out / "results.json").write_text(json.dumps(
        {"meta": meta, "scenarios": rows, "runs": runs, "decisions": decisions, "config_changes": changes,
         "targets": [{"target": t, "cpu": v, "instructions": iv, "met_cpu": ok, "met_instructions": iok}
                     for t, v, iv, ok, iok in targets(rows)]},
        indent=1, default=str))

    md = [f"# Benchmark results ({meta['date']})", ""]
    md.append(f"Machine: {meta['machine']}. Envoy {meta['envoy']} (`--concurrency 1`, V8), "
              f"upstream {meta['upstream']}, wrk {meta['wrk_threads']} thread / {meta['connections']} "
              f"connections, {meta['rounds']} interleaved rounds of {meta['duration']} s "
              f"(after {meta['warmup']} s warm-up) per scenario. {meta['pinning']}")
    md.append("")
    md.append("Traffic (every scenario but the auth rows): " + ", ".join(f"`{m.split('|')[0]}`" for m in MIX) +
              "; every request signed (`X-Ca-*`, HmacSHA256, a unique nonce each). The auth rows (sign-auth "
              "alone in the native module, one mode each, and Envoy's jwt_authn) get one request again and "
              "again: `GET /partner/1` with the mode's credential, `GET /me` with an EdDSA token; their "
              "× empty is against bare Envoy given that request (`auth-bare`).")
    md.append("")
    md.append("| scenario | instructions/req | × bare | × empty | malloc/req | CPU µs/req min | median | × bare "
              "| × empty | req/s | p50 | p99 | RSS MB | .wasm |")
    md.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        if r["group"] == "probe":
            continue
        if not r.get("rounds") and not r.get("instructions"):
            md.append(f"| {r['label']} | {r['status']} | | | | | | | | | | | | {fmt_size(r.get('wasm_bytes'))} |")
            continue
        baseline_names = {"module": "module, local"}
        base = r.get("baseline") or ""
        which = (f" ({baseline_names.get(base, base.replace('empty-', '') + ' empty' if base.startswith('empty-') else base)})"
                 if base else "")
        md.append("| " + " | ".join([
            r["label"], fmt(r.get("instructions"), ",.0f"), fmt(r.get("instr_ratio_bare"), ".3f"),
            fmt(r.get("instr_ratio_empty"), ".3f") + (which if r.get("instructions") else ""),
            fmt(r.get("allocations") if not r.get("wasm_bytes") else None, ".1f"),
            fmt(r.get("cpu_us_min"), ".1f"), fmt(r.get("cpu_us_median"), ".1f"), fmt(r.get("ratio_bare"), ".3f"),
            fmt(r.get("ratio_empty"), ".3f") + (which if r.get("rounds") else ""),
            fmt(r.get("rps_median"), ",.0f"), fmt_us(r.get("p50_us_median", float("nan"))),
            fmt_us(r.get("p99_us_median", float("nan"))), fmt(r.get("rss_mb_median"), ".0f"),
            fmt_size(r.get("wasm_bytes"))]) + " |")
    md.append("")
    md.append(f"Instructions/req: Envoy's instructions (every thread, user space) per request under callgrind, "
              f"{args.instr_requests} requests of the mix sent one at a time after {args.instr_warmup} of "
              "warm-up. Deterministic to a fraction of a percent, so it is the measure to compare changes "
              "with; it does not see cache misses or the kernel. malloc/req: calls of the C allocator "
              "(malloc, calloc, realloc…) per request in the same count; Envoy's own C++ allocations go "
              "through tcmalloc under other names, so this is what native modules allocate (a Wasm "
              "module allocates inside its VM, unseen: shown —).")
    md.append("")
    md.append("CPU µs/req is Envoy's CPU time (all threads) per request served. Ratios and “+µs” use the "
              "min over the rounds: disturbances on a shared machine only ever add CPU time, so the least "
              "disturbed burst is the estimate (the median shows the spread; `results.csv` also has the "
              "median of per-round ratios). “× empty” compares a filter or the module with one empty Wasm "
              "filter, and the chain with as many as it has filters. req/s, p50 and p99 are medians over the rounds (wrk, "
              f"{meta['connections']} connections, closed loop). RSS is the Envoy process's VmRSS after "
              "its last burst.")
    bad = [r for r in rows if r.get("rounds") and (r["non_2xx"] or r["wrapped"])]
    for r in bad:
        md.append(f"\n**Warning**: {r['label']}: {r['non_2xx']} of {r['requests']} responses were not 2xx"
                  + (f", signed requests wrapped {r['wrapped']} times" if r["wrapped"] else "") + ".")
    notes = [r for r in rows if r.get("note")]
    if notes:
        md.append("")
        for r in notes:
            md.append(f"- {r['label']}: {r['note']}")
    foreign = [r["foreign_cpu"] for r in runs if r.get("foreign_cpu") == r.get("foreign_cpu")]
    if foreign:
        md.append("")
        md.append(f"Other work on the machine during the runs (not Envoy, wrk or the upstream): median "
                  f"{median(foreign):.2f} CPUs, max {max(foreign):.2f} CPUs of {os.cpu_count()}.")
    pairs = side_by_side(rows)
    if pairs:
        md.append("")
        md.append("## Side by side with Envoy's native filters")
        md.append("")
        md.append("| Wasm filter | native filter | Wasm µs/req | native µs/req | Wasm +µs vs bare | native +µs vs bare | Wasm ÷ native |")
        md.append("|---|---|---:|---:|---:|---:|---:|")
        for w, n, wc, nc, wa, na, ratio in pairs:
            md.append(f"| {w} | {n} | {wc:.1f} | {nc:.1f} | {fmt(wa, '+.1f')} | {fmt(na, '+.1f')} | {ratio:.3f} |")
    probes = [r for r in rows if r["group"] == "probe" and (r.get("rounds") or r.get("instructions"))]
    if probes:
        md.append("")
        md.append("## What one host call costs")
        md.append("")
        md.append(f"`bench/host-call-probe` repeats one kind of proxy-wasm host call {PROBE_CALLS} times on "
                  "each request's headers. Cost of one call = (instructions, or CPU µs, per request of the "
                  f"probe − of the probe making no call) ÷ {PROBE_CALLS}; CPU µs paired per round, median over "
                  "the rounds (noisy: the instruction counts are the exact figures).")
        md.append("")
        md.append("| host call | instructions per call | µs per call |")
        md.append("|---|---:|---:|")
        for r in probes:
            md.append(f"| {r['label']} | {fmt(r.get('instr_per_call'), ',.0f')} | "
                      f"{fmt(r.get('per_call_us'), '.2f')} |")
    md.append("")
    md.append("## Design targets (measured, not asserted)")
    md.append("")
    md.append("| target | by CPU time | | by instructions | |")
    md.append("|---|---:|---|---:|---|")

    def verdict(ok):
        return "met" if ok else ("not met" if ok is False else "not measured")

    for target, value, instr, ok, instr_ok in targets(rows):
        if "MB" in target:
            md.append(f"| {target} | {fmt(value, '+.1f')} | {verdict(ok)} | | |")
            continue
        if "count" in target:
            md.append(f"| {target} | {fmt(value, '.1f')} | {verdict(ok)} | | |")
            continue
        md.append(f"| {target} | {fmt(value, '.3f')} × | {verdict(ok)} | {fmt(instr, '.3f')} × | "
                  f"{verdict(instr_ok)} |")
    md.append("")
    md.append("## Policy decisions (native, callgrind)")
    md.append("")
    md.append(f"Instructions per decision = (Ir of {args.micro_high} iterations − Ir of {args.micro_low}) ÷ "
              f"{args.micro_high - args.micro_low}, release profile, x86-64 (`bench/policy-bench`).")
    md.append("")
    md.append("| decision | instructions | what |")
    md.append("|---|---:|---|")
    for d in decisions:
        value = f"{d['instructions']:,}" if d.get("instructions") is not None else d["status"]
        md.append(f"| `{d['decision']}` | {value} | {d['about']} |")
    md.append("")
    md.append("## Bench configuration")
    md.append("")
    md.append("Every scenario's listener, routes and clusters, and every policy filter, are what "
              "`gatewayctl build` writes for the demo's apis.yaml (`bench.apis.yaml`, `bench.*.yaml` beside "
              "this file), with these changes to the apis.yaml:")
    for c in changes:
        md.append(f"- {c}")
    md.append("")
    md.append(f"Chart: `{meta['chart']}`. Raw rounds: `runs.csv`; Envoy configs and logs: `runs/`.")
    (out / "results.md").write_text("\n".join(md) + "\n")


def csv_cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if value != value else f"{value:.4f}"
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if ("," in text or '"' in text) else text


def fmt_us(us):
    if us != us:
        return "—"
    return f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs"


def fmt_size(size):
    if not size:
        return "—"
    return f"{size / 1024:.0f} KB"


def chart(work, rows, decisions, meta):
    """results.png with matplotlib; results.svg, hand-written, without it."""
    measured = [r for r in rows if r.get("rounds")]
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return svg_chart(work, measured, decisions)
    colors = {"baseline": "#7f7f7f", "filter": "#1f77b4", "chain": "#ff7f0e", "module": "#2ca02c",
              "native": "#9467bd", "auth": "#8c564b"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 7.5), gridspec_kw={"width_ratios": [1.35, 1]})
    labels = [r["label"] for r in measured][::-1]
    med = [r["cpu_us_median"] for r in measured][::-1]
    mins = [r["cpu_us_min"] for r in measured][::-1]
    ax1.barh(labels, mins, color=[colors.get(r["group"], "#333") for r in measured][::-1])
    ax1.scatter(med, labels, color="black", marker="|", s=200, zorder=3, label="median")
    for y, (m, r) in enumerate(zip(mins, measured[::-1])):
        text = f"{m:.1f} µs"
        if r.get("baseline"):
            text += f"  ×{r['ratio_empty']:.2f}"
        ax1.text(max(m, med[y]), y, "  " + text, va="center", fontsize=8)
    by = {r["scenario"]: r for r in measured}
    chain_baseline = (by.get("chain") or {}).get("baseline") or "empty-1"
    for key, style in (("bare", ":"), ("empty-1", "--"), (chain_baseline, "-.")):
        if key in by:
            ax1.axvline(by[key]["cpu_us_min"], color="#555", linestyle=style, linewidth=0.8,
                        label=by[key]["label"])
    ax1.set_xlabel("Envoy CPU time per request, µs (bar: min over rounds, |: median; "
                   "× vs its empty-filter baseline)")
    ax1.set_title("Envoy CPU per request, one worker")
    ax1.set_xlim(0, max(med + mins) * 1.3 if med else 1)
    ax1.legend(loc="lower right", fontsize=8)
    ok = [d for d in decisions if d.get("instructions") is not None][::-1]
    ax2.barh([d["decision"] for d in ok], [d["instructions"] for d in ok], color="#17becf")
    for y, d in enumerate(ok):
        ax2.text(d["instructions"], y, f" {d['instructions']:,}", va="center", fontsize=8)
    ax2.set_xscale("log")
    ax2.set_xlabel("instructions per decision (callgrind, native, log scale)")
    ax2.set_title("Policy decisions")
    if ok:
        ax2.set_xlim(min(d["instructions"] for d in ok) / 2, max(d["instructions"] for d in ok) * 6)
    fig.suptitle(f"make bench, {meta['date']}: {meta['machine']}; Envoy {meta['envoy']}, "
                 f"{meta['rounds']} rounds × {meta['duration']} s per scenario", fontsize=9)
    fig.tight_layout()
    path = work / "results.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def svg_chart(work, measured, decisions):
    width, bar_h, left = 900, 22, 260
    rows = len(measured) + len(decisions) + 4
    height = rows * bar_h + 60
    top = max([r["cpu_us_min"] for r in measured] or [1])
    top_i = max([d["instructions"] or 0 for d in decisions] or [1]) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="sans-serif" font-size="12">', '<rect width="100%" height="100%" fill="white"/>',
             f'<text x="10" y="20" font-weight="bold">Envoy CPU µs per request (min over rounds)</text>']
    y = 35
    for r in measured:
        w = (width - left - 120) * r["cpu_us_min"] / top
        parts.append(f'<text x="10" y="{y + 15}">{html.escape(r["label"])}</text>'
                     f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h - 6}" fill="#1f77b4"/>'
                     f'<text x="{left + w + 5:.1f}" y="{y + 15}">{r["cpu_us_min"]:.1f}</text>')
        y += bar_h
    y += bar_h
    parts.append(f'<text x="10" y="{y}" font-weight="bold">Instructions per decision</text>')
    y += 10
    for d in decisions:
        v = d.get("instructions") or 0
        w = (width - left - 120) * v / top_i
        parts.append(f'<text x="10" y="{y + 15}">{d["decision"]}</text>'
                     f'<rect x="{left}" y="{y}" width="{w:.1f}" height="{bar_h - 6}" fill="#17becf"/>'
                     f'<text x="{left + w + 5:.1f}" y="{y + 15}">{v:,}</text>')
        y += bar_h
    parts.append("</svg>")
    path = work / "results.svg"
    path.write_text("\n".join(parts))
    return path


def machine_description(args):
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({model or platform.processor()}), {mem_gb:.0f} GB, Linux {platform.release()}"


def envoy_version(envoy):
    text = subprocess.run([envoy, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version: [^/]+/([^/]+)/", text)
    return m.group(1) if m else "?"


# --------------------------------------------------------------------------

def sign_requests(work, app, count):
    """`count` requests of the mix, each signed with its own nonce:
    work/signed.lua (wrk's script) and work/signed.txt (the signatures)."""
    say(f"signing {count} requests (one nonce each)")
    cmd = [str(NATIVE_DIR / "bench-requests"), "--key", app["key"], "--secret", app["secrets"][0],
           "--count", str(count), "--lua", str(work / "signed.lua"), "--data", str(work / "signed.txt")]
    for m in MIX:
        cmd += ["--request", m]
    subprocess.run(cmd, check=True)


# The scenarios that need Redis (and Webdis) running.
FLEET_SCENARIOS = ("module-fleet", "native-fleet-direct", "native-fleet-lease")


def start_services(args, work, all_scenarios, ports):
    """The upstream, the log sink and, when `module-fleet` runs, the fleet
    store: ([procs], description, Redis port or None)."""
    backend, sink, procs, description = start_upstream(args.upstream, work, args.client_cpu, ports)
    say(f"upstream: {description} on 127.0.0.1:{backend} (log sink :{sink})")
    redis = None
    if any(s.key in FLEET_SCENARIOS and s.status == "ok" for s in all_scenarios):
        redis, store_procs, store_desc = start_fleet_store(work, args.client_cpu, ports["store"], ports["redis"])
        procs += store_procs
        say(f"fleet store: {store_desc} on 127.0.0.1:{ports['store']}")
        description += f"; fleet store: {store_desc}"
    UPSTREAM_PIDS[:] = [p.pid for p in procs]
    return procs, description, redis


def smoke(args, work, all_scenarios, ports, app):
    """`make bench-smoke`: every scenario's Envoy starts and answers each
    request of the mix with a 2xx, and every policy decision runs natively
    and comes out as expected; no load, no callgrind. Returns the exit status."""
    rounds = 2
    sign_requests(work, app, len(MIX) * rounds)
    failures = []
    procs = []
    try:
        procs, _, _ = start_services(args, work, all_scenarios, ports)

        def one(s):
            envoy = None
            try:
                if s.status != "ok":
                    raise RuntimeError(s.note)
                envoy = Envoy(args, work, s, s.config)
                envoy.ready(timeout=120.0)
                statuses = send_sequentially(envoy.port, requests_of(work, s), 0, len(MIX) * rounds)
                envoy.alive()
                bad = {status: n for status, n in statuses.items() if not status.startswith(s.answers)}
                if bad:
                    raise RuntimeError(f"answers not {s.answers}xx {bad} (Envoy's log: {envoy.log_path})")
                say(f"smoke {s.key:<24} ok ({sum(statuses.values())} requests)")
            except Exception as error:
                failures.append(f"{s.key}: {str(error).splitlines()[0][:400]}")
                say(f"smoke {s.key:<24} FAILED: {error}")
            finally:
                if envoy is not None:
                    envoy.stop()

        with ThreadPoolExecutor(max_workers=max(1, min(2, os.cpu_count() or 1))) as pool:
            list(pool.map(one, all_scenarios))
    finally:
        for proc in procs:
            stop(proc)
        stop_all()
    binary = NATIVE_DIR / "policy-bench"
    listing = subprocess.run([str(binary), "--list"], capture_output=True, text=True, check=True).stdout
    for line in listing.splitlines():
        name = line.split("\t", 1)[0]
        done = subprocess.run([str(binary), "--configs", str(work / "configs"), name, "20"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            failures.append(f"decision {name}: {done.stderr.strip()[-400:]}")
            say(f"smoke decision {name:<28} FAILED: {done.stderr.strip()[-400:]}")
        else:
            say(f"smoke decision {name:<28} ok")
    if failures:
        say(f"{len(failures)} of {len(all_scenarios)} scenarios and the decisions failed:")
        for failure in failures:
            say(f"  {failure}")
        return 1
    say(f"smoke: {len(all_scenarios)} scenarios and every decision ok")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 8)))
    p.add_argument("--duration", type=int, default=int(os.environ.get("BENCH_DURATION", 1)),
                   help="seconds of measured load per scenario and round")
    p.add_argument("--warmup", type=int, default=int(os.environ.get("BENCH_WARMUP", 2)))
    p.add_argument("--connections", type=int, default=int(os.environ.get("BENCH_CONNECTIONS", 16)))
    p.add_argument("--threads", type=int, default=1, help="wrk threads")
    p.add_argument("--upstream", choices=["nginx", "echo"], default=os.environ.get("BENCH_UPSTREAM", "nginx"))
    p.add_argument("--only", default=os.environ.get("BENCH_ONLY", ""),
                   help="comma-separated scenario keys (default: all)")
    p.add_argument("--no-pin", action="store_true", default=os.environ.get("BENCH_PIN", "1") == "0",
                   help="do not pin Envoy and the client to separate CPUs")
    p.add_argument("--smoke", action="store_true",
                   help="every scenario's Envoy answers the mix with 2xx and every decision runs; "
                        "nothing is measured (`make bench-smoke`, in `make test`)")
    p.add_argument("--skip-load", action="store_true")
    p.add_argument("--skip-micro", action="store_true")
    p.add_argument("--micro-low", type=int, default=100)
    p.add_argument("--micro-high", type=int, default=1100)
    p.add_argument("--out", default=str(ROOT / "target" / "bench"))
    p.add_argument("--envoy", default=os.environ.get("ENVOY_BIN", str(ROOT / ".venv" / "bin" / "envoy")))
    p.add_argument("--envoy-log-level", default="warning")
    p.add_argument("--instructions", default=os.environ.get("BENCH_INSTRUCTIONS", "1") != "0",
                   action=argparse.BooleanOptionalAction,
                   help="also count Envoy's instructions per request under callgrind (deterministic)")
    p.add_argument("--instr-warmup", type=int, default=300)
    p.add_argument("--instr-requests", type=int, default=int(os.environ.get("BENCH_INSTR_REQUESTS", 350)))
    p.add_argument("--instr-parallel", type=int, default=max(1, (os.cpu_count() or 1))) 
    p.add_argument("--perf", action="store_true", default=os.environ.get("BENCH_PERF", "0") == "1",
                   help="after warm-up, profile one burst per scenario with `perf record` "
                        "(reports in <out>/perf/)")
    args = p.parse_args()

    started = time.time()
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    for stale in ("runs", "callgrind"):
        shutil.rmtree(work / stale, ignore_errors=True)
    cpus = os.cpu_count() or 1
    # Envoy alone on the last CPU; wrk and the upstream on the others.
    pin = cpus >= 2 and not args.no_pin
    args.envoy_cpu = cpus - 1 if pin else None
    args.client_cpu = ",".join(str(c) for c in range(cpus - 1)) if pin else None
    pinning = (f"Envoy pinned to CPU {args.envoy_cpu}, wrk and the upstream to CPU {args.client_cpu}."
               if pin else "No CPU pinning.")

    # The configurations: the demo's apis.yaml, changed for the bench, built by gatewayctl.
    ports = {"backend": free_port(), "sink": free_port(), "store": free_port(), "redis": free_port()}
    apis, changes = bench_apis(ports, fleet=None)
    fleet_apis, _ = bench_apis(ports, fleet="webdis", key_prefix="gw:module:")
    direct_apis, _ = bench_apis(ports, fleet="direct", key_prefix="gw:direct:")
    lease_apis, _ = bench_apis(ports, fleet="direct", key_prefix="gw:lease:", lease_units=100)
    built = {mode: Bootstrap(gatewayctl_build(work, "bench", apis, mode)) for mode in ("chain", "module", "native")}
    module_fleet = Bootstrap(gatewayctl_build(work, "bench-fleet", fleet_apis, "module"))
    native_fleets = [
        ("native-fleet-direct", "native module, fleet store on its own connection",
         Bootstrap(gatewayctl_build(work, "bench-fleet-direct", direct_apis, "native")),
         "the module-fleet configuration in the native module, the store on its own pipelined connection "
         "to Redis (no Webdis)"),
        ("native-fleet-lease", "native module, fleet quotas leased",
         Bootstrap(gatewayctl_build(work, "bench-fleet-lease", lease_apis, "native")),
         "only throttling in the fleet store (own connection), leasing 100 units at a time of quotas far "
         "from their limits; sign-auth and the breaker local, as in native-module"),
    ]
    configs = filter_configs(built["chain"])
    (work / "configs").mkdir(exist_ok=True)
    for name, config in configs.items():
        (work / "configs" / f"{name}.json").write_text(json.dumps(config, indent=1))

    all_scenarios = scenarios(built["chain"], built["module"], module_fleet, built["native"], native_fleets)
    if args.only:
        keep = set(args.only.split(","))
        unknown = keep - {s.key for s in all_scenarios}
        if unknown:
            raise SystemExit(f"bench: no scenario {', '.join(sorted(unknown))}")
        all_scenarios = [s for s in all_scenarios if s.key in keep]
    for s in all_scenarios:
        missing = [w for w in s.wasm if not (WASM_DIR / w).exists()]
        if missing:
            s.status, s.note = "failed", f"missing {', '.join(sorted(set(missing)))}"

    if args.smoke:
        sys.exit(smoke(args, work, all_scenarios, ports, configs["sign_auth"]["apps"][0]))

    runs, decisions = [], []
    upstream_desc = ""
    procs = []
    store_redis = None
    try:
        if not args.skip_load or args.instructions:
            # Signed requests: one burst takes at most 40k req/s (far above one Envoy worker
            # here) and every Envoy with sign-auth needs a fresh nonce for each request it sees.
            args.burst_requests = 40000 * args.duration
            args.requests = 40000 * max(args.warmup, 1) + args.rounds * (args.burst_requests + 10000)
            sign_requests(work, configs["sign_auth"]["apps"][0], args.requests)
            args.lua = work / "signed.lua"
            procs, upstream_desc, store_redis = start_services(args, work, all_scenarios, ports)
        if not args.skip_load:
            for s in all_scenarios:
                if s.status != "ok":
                    say(f"{s.key}: {s.status} {('(' + s.note + ')') if s.note else ''}")
            # Every scenario's Envoy runs for the whole benchmark (idle between its bursts),
            # so rounds are cheap and can interleave finely.
            envoys = {}
            for s in [s for s in all_scenarios if s.status == "ok"]:
                try:
                    t0 = time.time()
                    envoy = Envoy(args, work, s, s.config)
                    envoys[s.key] = envoy
                    envoy.ready()
                    s.startup_s = time.time() - t0
                    # Warm-up: V8 compiles and tiers up, connection pools and caches fill.
                    load(args, envoy, args.warmup, latency=False)
                    say(f"{s.key}: ready in {s.startup_s:.2f} s, warmed up")
                    if args.perf:
                        profile(args, work, envoy)
                except Exception as error:
                    s.status, s.note = "failed", str(error).splitlines()[0][:300]
                    say(f"{s.key}: FAILED: {error}")
                    if s.key in envoys:
                        envoys.pop(s.key).stop()
            runnable = [s for s in all_scenarios if s.status == "ok"]
            for round_no in range(1, args.rounds + 1):
                # Interleaved, and rotated each round, so drift touches every scenario alike.
                shift = (round_no - 1) % max(len(runnable), 1)
                order = runnable[shift:] + runnable[:shift]
                for s in order:
                    if s.status != "ok":
                        continue
                    try:
                        r = measure(args, envoys[s.key], s, round_no)
                    except Exception as error:
                        s.status, s.note = "failed", str(error).splitlines()[0][:300]
                        say(f"round {round_no} {s.key}: FAILED: {error}")
                        continue
                    s.runs.append(r)
                    runs.append(r)
                    say(f"round {round_no}/{args.rounds} {s.key:<24} {r['cpu_us_per_request']:7.2f} µs/req "
                        f"{r['rps']:9.0f} req/s  p99 {fmt_us(r['p99_us']):>9}  RSS {r['rss_mb']:5.0f} MB"
                        f"  other load {r['foreign_cpu']:4.2f} CPU"
                        + (f"  non-2xx {r['non_2xx']} (4xx {r['rq_4xx']}, 5xx {r['rq_5xx']})"
                           if r["non_2xx"] else "")
                        + (f"  WRAPPED {r['wrapped']}" if r["wrapped"] else ""))
            for s in all_scenarios:
                envoy = envoys.get(s.key)
                if envoy is None:
                    continue
                try:
                    _, text = http_get(envoy.admin, "/stats")
                    (envoy.dir / f"{s.key}.stats").write_text(text)
                except OSError:
                    pass
                if getattr(envoy, "wrapped_pool", False) and "sign_auth" in json.dumps(s.config):
                    s.note = (s.note + "; " if s.note else "") + "ran out of signed requests (nonces replayed)"
                envoy.stop()
        if args.instructions:
            if store_redis:
                flush_fleet_store(store_redis)
            counted = [s for s in all_scenarios if s.status == "ok" and len(s.wasm) <= 1]
            for s in all_scenarios:
                if s.status == "ok" and len(s.wasm) > 1:
                    # V8 reserves more address space per VM than valgrind offers.
                    s.instr_skipped = True
                    s.note = (s.note + "; " if s.note else "") + (
                        "instructions not counted: several Wasm VMs do not fit valgrind's address space")
            say(f"Envoy under callgrind: instructions per request ({len(counted)} scenarios, "
                f"{args.instr_parallel} at a time)")
            count_instructions(args, work, counted, {s.key: s.config for s in counted})
        for proc in procs:
            stop(proc)
        if not args.skip_micro:
            say("policy decisions under callgrind")
            decisions = micro_benchmarks(args, work)
            for d in decisions:
                say(f"{d['decision']:<28} {d['instructions'] if d['instructions'] is not None else d['status']}")
    finally:
        stop_all()

    rows = summarise(all_scenarios)
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine_description(args), "envoy": envoy_version(args.envoy),
        "upstream": upstream_desc or args.upstream, "wrk_threads": args.threads,
        "connections": args.connections, "rounds": args.rounds, "duration": args.duration,
        "warmup": args.warmup, "pinning": pinning, "elapsed_s": round(time.time() - started),
    }
    chart_path = chart(work, rows, decisions, meta)
    meta["chart"] = os.path.relpath(chart_path, ROOT) if chart_path else ""
    write_results(args, work, rows, decisions, meta, runs, changes)
    print()
    print((work / "results.md").read_text())
    say(f"done in {time.time() - started:.0f} s: {work / 'results.md'}, {chart_path}")
    failures = failed(args, all_scenarios, decisions)
    if failures:
        say(f"FAILED: {len(failures)} of the measurements could not be made as asked:")
        for failure in failures:
            say(f"  {failure}")
        sys.exit(1)


def failed(args, all_scenarios, decisions):
    """What makes `make bench` fail: a scenario that did not run, answered
    anything but 2xx (an error path is not the cost of a policy) or could
    not be counted, and a decision that did not run."""
    out = []
    for s in all_scenarios:
        if s.status != "ok":
            out.append(f"{s.key}: {s.status}: {s.note}")
            continue
        bad = sum(r["non_2xx"] for r in s.runs) + (getattr(s, "instr_non_2xx", 0) or 0)
        if bad:
            out.append(f"{s.key}: {bad} non-2xx answers")
        if args.instructions and getattr(s, "instructions", None) is None and not getattr(s, "instr_skipped", False):
            out.append(f"{s.key}: instructions not counted: {s.note}")
    out += [f"decision {d['decision']}: {d['status']}" for d in decisions if d["status"] != "ok"]
    # The empty native module allocates once per request (its context): a
    # count of none means the allocator's names were not recognised, and
    # every malloc/req figure would read 0 without saying so.
    empty = next((s for s in all_scenarios if s.key == "native-empty"), None)
    if empty is not None and getattr(empty, "allocations", None) is not None and empty.allocations < 0.5:
        out.append("native-empty: no heap allocation seen in callgrind's count (the allocator's "
                   f"names are not among {sorted(HEAP_ALLOCATORS)}): the malloc/req figures are not measured")
    return out


def on_signal(signum, _frame):
    stop_all()
    sys.exit(128 + signum)


if __name__ == "__main__":
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        main()
    except KeyboardInterrupt:
        stop_all()
        sys.exit(130)
