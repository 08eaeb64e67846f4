//! The format, the generator and the error locations, with exact texts.

use crate::envoy::{bootstrap, Artifacts, Host};
use crate::generate::{Provenance, Section};
use crate::source::Source;
use serde_json::{json, Value};

const BASE: &str = "\
version: 1
backends:
  - name: shop
    endpoints: [127.0.0.1:18081]
apps:
  - { key: \"203751\", name: web, secrets: [s1] }
";

/// BASE followed by `rest`.
fn document(rest: &str) -> String {
    format!("{BASE}{rest}")
}

fn errors_of(text: &str) -> Vec<String> {
    let source = Source::parse("apis.yaml", text).unwrap_or_else(|err| panic!("{err}"));
    match crate::load(&source) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn error_of(text: &str) -> String {
    let errors = errors_of(text);
    assert_eq!(errors.len(), 1, "{errors:?}");
    errors[0].clone()
}

fn generated(text: &str) -> crate::generate::Generated {
    let source = Source::parse("apis.yaml", text).unwrap_or_else(|err| panic!("{err}"));
    crate::load(&source).unwrap_or_else(|errors| {
        panic!(
            "{}",
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })
}

fn section(generated: &crate::generate::Generated, section: Section) -> Value {
    generated
        .sections
        .iter()
        .find(|(s, _)| *s == section)
        .map(|(_, config)| config.clone())
        .unwrap_or_else(|| panic!("no {section:?}"))
}

#[test]
fn the_shipped_example_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/shop.yaml");
    let source = Source::read(path).unwrap_or_else(|err| panic!("{err}"));
    let generated = crate::load(&source).unwrap_or_else(|errors| panic!("{errors:?}"));
    assert!(generated.warnings.is_empty(), "{:?}", generated.warnings);
}

#[test]
fn an_unknown_field_is_named_with_its_line_and_api() {
    let err = error_of(&document(
        "apis:\n  - name: get-order\n    metod: GET\n    path: /o\n    backend: shop\n    auth: anonymous\n",
    ));
    assert!(
        err.starts_with("apis.yaml:9: apis[0] (get-order): metod: unknown field `metod`, expected one of `name`, `group`, `method`"),
        "{err}"
    );
}

#[test]
fn the_version_is_checked() {
    assert_eq!(
        error_of("version: 2\napis: []\n"),
        "apis.yaml:1: version: this gatewayctl reads version 1"
    );
}

#[test]
fn a_filter_error_is_reported_against_the_api_that_wrote_it() {
    let err = error_of(&document(
        "apis:\n  - name: search\n    path: /search\n    backend: shop\n    auth: anonymous\n    parameters:\n      - { name: page, in: query, type: integer, maximum: ten }\n",
    ));
    assert_eq!(
        err,
        "apis.yaml:13: apis[0] (search): parameters[0].maximum: invalid type: string \"ten\", expected f64"
    );
}

#[test]
fn a_bound_policy_error_names_the_policy_and_the_api() {
    let err = error_of(&document(
        "policies:\n  - name: per-app\n    quota: { key: app, limit: 10, window: 10y }\napis:\n  - name: a\n    path: /a\n    backend: shop\n    auth: app\n    policies: [per-app]\n",
    ));
    assert_eq!(
        err,
        "apis.yaml:9: policies[0] (per-app): quota.window: `10y` is not a window; use a whole number \
         and a unit: `1s`, `10m`, `1h`, `1d` (as bound to apis[0] (a) by apis[0].policies[0])"
    );
}

#[test]
fn an_access_control_policy_becomes_the_apis_rule_and_its_errors_name_the_check() {
    let policy = "policies:\n  - name: own\n    access_control:\n      checks:\n        - { condition: \"user == param.id\", if_false: deny }\n";
    let text = document(&format!(
        "{policy}apis:\n  - name: notes\n    path: /users/{{id}}/notes\n    backend: shop\n    auth: anonymous\n    policies: [own]\n"
    ));
    let access = section(&generated(&text), Section::AccessControl);
    assert_eq!(access["rules"][0]["name"], "notes");
    assert_eq!(
        access["rules"][0]["checks"][0]["condition"],
        "user == param.id"
    );
    // A path variable the API lacks, and a condition that does not parse.
    let wrong_path = text.replace("/users/{id}/notes", "/notes");
    assert_eq!(
        error_of(&wrong_path),
        "apis.yaml:11: policies[0] (own): access_control.checks: `param.id`: the rule's path has \
         no variable `{id}` (its variables: none) (as bound to apis[0] (notes) by apis[0].policies[0])"
    );
    let bad = text.replace("user == param.id", "user == ");
    let err = error_of(&bad);
    assert!(
        err.starts_with("apis.yaml:11: policies[0] (own): access_control.checks[0].condition: at the end: a value expected"),
        "{err}"
    );
}

#[test]
fn an_error_mapping_policy_becomes_the_apis_rule_and_its_errors_name_the_field() {
    let policy = "policies:\n  - name: gone\n    error_mapping:\n      mappings:\n        - { code: \"404\", status: 410, message: \"Order ${param.id} is gone\" }\n";
    let text = document(&format!(
        "{policy}apis:\n  - name: orders\n    path: /orders/{{id}}\n    backend: shop\n    auth: anonymous\n    policies: [gone]\n"
    ));
    let mapping = section(&generated(&text), Section::ErrorMapping);
    assert_eq!(mapping["rules"][0]["name"], "orders");
    assert_eq!(mapping["rules"][0]["mappings"][0]["status"], 410);
    let bad = text.replace("status: 410", "status: 700");
    assert_eq!(
        error_of(&bad),
        "apis.yaml:11: policies[0] (gone): error_mapping.mappings[0].status: a status is 200 to 599 \
         and may have a body (not 204, 205 or 304), not 700 (as bound to apis[0] (orders) by apis[0].policies[0])"
    );
}

#[test]
fn a_cache_policy_keys_answers_by_the_apis_declared_query_parameters() {
    let policy = "policies:\n  - name: minute\n    cache: { ttl_seconds: 60 }\n";
    let text = document(&format!(
        "{policy}apis:\n  - name: items\n    path: /items\n    backend: shop\n    auth: anonymous\n    parameters:\n      - {{ name: page, in: query, type: integer }}\n      - {{ name: x-lang, in: header }}\n    policies: [minute]\n"
    ));
    let cache = section(&generated(&text), Section::ResponseCache);
    assert_eq!(cache["rules"][0]["name"], "items");
    assert_eq!(
        cache["rules"][0]["key"]["headers"],
        serde_json::json!(["x-lang"])
    );
    assert_eq!(
        cache["rules"][0]["key"]["query"],
        serde_json::json!(["page"])
    );
    // What the policy says wins; errors point at the policy.
    let own = text.replace(
        "{ ttl_seconds: 60 }",
        "{ ttl_seconds: 60, key: { query: [sort] } }",
    );
    let cache = section(&generated(&own), Section::ResponseCache);
    assert_eq!(
        cache["rules"][0]["key"]["query"],
        serde_json::json!(["sort"])
    );
    let bad = text.replace("ttl_seconds: 60", "ttl_seconds: 0");
    assert!(
        error_of(&bad).starts_with(
            "apis.yaml:9: policies[0] (minute): cache.ttl_seconds: must be 1 to 86400"
        ),
        "{}",
        error_of(&bad)
    );
}

#[test]
fn an_unknown_app_is_reported_where_the_apps_were_written() {
    let err = error_of(&document(
        "groups:\n  - name: g\n    auth: app\n    apps: [\"999\"]\napis:\n  - name: a\n    group: g\n    path: /a\n    backend: shop\n",
    ));
    assert_eq!(
        err,
        "apis.yaml:10: groups[0] (g): apps[0]: unknown app key `999`"
    );
}

#[test]
fn references_are_checked() {
    let api = |extra: &str| {
        document(&format!(
            "apis:\n  - name: a\n    path: /a\n    auth: anonymous\n{extra}"
        ))
    };
    assert_eq!(
        error_of(&api("    backend: nope\n")),
        "apis.yaml:11: apis[0] (a): backend: `nope` names no backend"
    );
    assert_eq!(
        error_of(&api("    backend: shop\n    group: g\n")),
        "apis.yaml:12: apis[0] (a): group: `g` names no group"
    );
    assert_eq!(
        error_of(&api("    backend: shop\n    policies: [p]\n")),
        "apis.yaml:12: apis[0] (a): policies[0]: `p` names no policy"
    );
    assert_eq!(
        error_of(&api("    backend: shop\n    stages: { TEST: nope }\n")),
        "apis.yaml:12: apis[0] (a): stages.TEST: `nope` names no backend"
    );
    assert_eq!(
        error_of(&api("")),
        "apis.yaml:8: apis[0] (a): an API needs a `backend` (its own or its group's) or a `mock`"
    );
}

#[test]
fn who_may_call_an_api_must_be_said() {
    let text = document("apis:\n  - name: a\n    path: /a\n    backend: shop\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:8: apis[0] (a): who may call the API is not said: set `auth` (app, huawei_app, appcode, basic, jwt, anonymous, ext_auth, or a list of them) on it or its group"
    );
    let text = document("apis:\n  - name: a\n    path: /a\n    backend: shop\n    auth: anonymous\n    apps: [\"203751\"]\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:12: apis[0] (a): apps: apps are allowed only with an app mode in `auth` (app, huawei_app, appcode, basic, jwt)"
    );
    let text =
        document("apis:\n  - name: a\n    path: /a\n    backend: shop\n    auth: ext_auth\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:11: apis[0] (a): auth: `ext_auth` needs the authorizer in `settings.ext_auth`"
    );
}

#[test]
fn names_are_unique_and_usable_in_metrics() {
    let text = document("apis:\n  - { name: a, path: /a, backend: shop, auth: anonymous }\n  - { name: a, path: /b, backend: shop, auth: anonymous }\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:9: apis[1] (a): name: `a` is already the name of apis[0]"
    );
    let text =
        document("apis:\n  - { name: get order, path: /a, backend: shop, auth: anonymous }\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:8: apis[0] (get order): name: `get order` must be 1 to 64 letters, digits, `-` or `_` (it names routes, rules and metrics)"
    );
}

#[test]
fn policies_are_one_kind_and_an_api_has_one_ip_control_and_one_breaker() {
    let text = document("policies:\n  - { name: p, quota: { limit: 1, window: 1s }, ip_control: { allow: [10.0.0.0/8] } }\napis:\n  - { name: a, path: /a, backend: shop, auth: anonymous, policies: [p] }\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:8: policies[0] (p): a policy is exactly one of `quota`, `ip_control`, `breaker`, `access_control`, `routing`, `mirror`, `error_mapping`, `cache` or `threat_protection`"
    );
    let text = document("policies:\n  - { name: p, ip_control: { allow: [10.0.0.0/8] } }\n  - { name: q, ip_control: { deny: [10.0.0.0/8] } }\ngroups:\n  - { name: g, policies: [p] }\napis:\n  - { name: a, group: g, path: /a, backend: shop, auth: anonymous, policies: [q] }\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:13: apis[0] (a): policies[0]: `q` and `p` are both ip_control policies; an API has one"
    );
}

#[test]
fn settings_cannot_hold_what_the_apis_make() {
    let text = document("settings:\n  throttling: { rules: [] }\napis:\n  - { name: a, path: /a, backend: shop, auth: anonymous }\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:8: settings.throttling.rules: rules are made from the APIs: bind policies to APIs instead"
    );
    let text = document("settings:\n  throttling: { fleet: {} }\napis:\n  - { name: a, path: /a, backend: shop, auth: anonymous }\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:8: settings.throttling.fleet: fleet-wide state needs a store: name it in `gateway.fleet_store`"
    );
}

#[test]
fn a_backend_path_is_made_of_the_api_path_variables() {
    let text = document("apis:\n  - name: a\n    path: /users/{id}\n    backend: shop\n    auth: anonymous\n    mapping: { backend: { path: \"/accounts/{user}\" } }\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:12: apis[0] (a): mapping.backend.path: `{user}` is not a variable of the API's path: the backend path is rewritten by Envoy's router from the path template's variables"
    );
}

#[test]
fn durations_and_addresses_are_checked() {
    let text =
        document("apis:\n  - { name: a, path: /a, backend: shop, auth: anonymous, timeout: 10 }\n");
    assert!(
        error_of(&text).starts_with("apis.yaml:8: apis[0] (a): timeout: invalid type"),
        "{}",
        error_of(&text)
    );
    let text = document(
        "apis:\n  - { name: a, path: /a, backend: shop, auth: anonymous, timeout: 10x }\n",
    );
    assert_eq!(
        error_of(&text),
        "apis.yaml:8: apis[0] (a): timeout: `10x` is not a duration (such as `500ms`, `2s`, `1.5s`, `5m`, `1h`)"
    );
    let text = "version: 1\nbackends:\n  - { name: shop, endpoints: [\"localhost\"] }\napis:\n  - { name: a, path: /a, backend: shop, auth: anonymous }\n";
    assert_eq!(
        error_of(text),
        "apis.yaml:3: backends[0] (shop): endpoints[0]: `localhost` is not `host:port`"
    );
}

#[test]
fn each_api_is_written_into_every_section_that_needs_it() {
    let text = document(
        "gateway:
  client_address: { trusted_proxies: [127.0.0.1] }
  fleet_store: shop
settings:
  throttling: { fleet: {} }
policies:
  - { name: per-app, quota: { key: app, limit: 10, window: 1m } }
groups:
  - { name: g, backend: shop, auth: app, policies: [per-app] }
apis:
  - { name: a, group: g, method: get, path: \"/a/{id}\" }
  - { name: b, group: g, path_prefix: /b, apps: [\"203751\"] }
  - { name: c, path: /c, backend: shop, auth: anonymous }
",
    );
    let generated = generated(&text);
    let keys: Vec<&str> = generated.sections.iter().map(|(s, _)| s.key()).collect();
    assert_eq!(keys, ["sign_auth", "throttling"]);
    let sign_auth = section(&generated, Section::SignAuth);
    assert_eq!(
        sign_auth["anonymous"], false,
        "a route sign-auth does not know needs credentials"
    );
    assert_eq!(
        sign_auth["rules"],
        json!([
            {"name": "a", "match": {"route_names": ["a"], "path": {"template": "/a/{id}"}}, "modes": ["app"]},
            {"name": "b", "match": {"route_names": ["b"]}, "apps": ["203751"], "modes": ["app"]},
            {"name": "c", "match": {"route_names": ["c"]}, "anonymous": true},
            {"name": "gateway-answers", "match": {"route_names": ["gateway.no-such-api"]}, "anonymous": true},
        ])
    );
    // Matched by method and path, a request no rule matches is anonymous.
    let by_request = self::generated(&text.replace("gateway:\n", "gateway:\n  match: request\n"));
    let sign_auth = section(&by_request, Section::SignAuth);
    assert_eq!(sign_auth["anonymous"], true);
    assert_eq!(sign_auth["rules"].as_array().map(Vec::len), Some(2));
    let throttling = section(&generated, Section::Throttling);
    assert_eq!(throttling["rules"][1]["name"], "b_per-app");
    assert_eq!(throttling["rules"][1]["limit"], 10);
    assert_eq!(
        throttling["client_address"],
        json!({"trusted_proxies": ["127.0.0.1"]})
    );
    assert_eq!(throttling["fleet"], json!({"store": {"cluster": "shop"}}));
    let routes: Vec<&str> = generated.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(routes, ["a", "b", "c", "gateway.no-such-api"]);
}

#[test]
fn auth_lists_become_sign_auth_modes_with_their_options() {
    let text = document(
        "apis:
  - { name: a, path: /a, backend: shop, auth: [huawei_app, appcode, basic], apps: [\"203751\"],
      auth_options: { appcode_query: AppCode, require_tls: true } }
  - { name: b, path: /b, backend: shop, auth: [basic, anonymous] }
  - { name: c, path: /c, backend: shop, auth: [app] }
",
    );
    let rules = &section(&generated(&text), Section::SignAuth)["rules"];
    assert_eq!(
        rules,
        &json!([
            {"name": "a", "match": {"route_names": ["a"]}, "modes": ["huawei_app", "appcode", "basic"],
             "apps": ["203751"], "appcode_query": "AppCode", "require_tls": true},
            {"name": "b", "match": {"route_names": ["b"]}, "modes": ["basic"], "anonymous": true},
            {"name": "c", "match": {"route_names": ["c"]}, "modes": ["app"]},
            {"name": "gateway-answers", "match": {"route_names": ["gateway.no-such-api"]}, "anonymous": true},
        ])
    );
}

#[test]
fn jwt_apis_take_the_issuers_of_the_settings_and_their_clusters_must_be_backends() {
    let settings = "settings:\n  sign_auth:\n    jwt:\n      issuers:\n        - { name: idp, jwks_uri: { cluster: CLUSTER, path: /keys } }\n";
    let api = "apis:\n  - { name: a, path: /a, backend: shop, auth: jwt, auth_options: { jwt_issuers: [idp], claims_to_headers: [ { claim: sub, header: x-user } ] } }\n";
    let text = document(&format!("{}{api}", settings.replace("CLUSTER", "shop")));
    let generated = generated(&text);
    let sign_auth = section(&generated, Section::SignAuth);
    assert_eq!(sign_auth["jwt"]["issuers"][0]["name"], "idp");
    assert_eq!(
        sign_auth["rules"][0],
        json!({"name": "a", "match": {"route_names": ["a"]}, "modes": ["jwt"], "jwt_issuers": ["idp"],
               "claims_to_headers": [{"claim": "sub", "header": "x-user"}]})
    );
    let text = document(&format!("{}{api}", settings.replace("CLUSTER", "idp")));
    assert_eq!(
        error_of(&text),
        "apis.yaml:11: settings.sign_auth.jwt.issuers[0] (idp): jwks_uri.cluster: `idp` names no backend"
    );
}

#[test]
fn auth_lists_that_make_no_sense_are_refused_at_their_line() {
    for (auth, error) in [
        (
            "[app, ext_auth]",
            "apis.yaml:12: apis[0] (a): auth: `ext_auth` stands alone: the authorizer decides every call of the API",
        ),
        (
            "[basic, basic]",
            "apis.yaml:12: apis[0] (a): auth: `basic` is listed twice",
        ),
        ("[]", "apis.yaml:12: apis[0] (a): auth: needs at least one mode"),
        (
            "oauth",
            "apis.yaml:12: apis[0] (a): auth: `auth` is one of app, huawei_app, appcode, basic, jwt, anonymous, ext_auth, or a list of them",
        ),
    ] {
        let text = document(&format!(
            "settings: {{ ext_auth: {{ authorizer: {{ cluster: shop }} }} }}\napis:\n  - name: a\n    path: /a\n    backend: shop\n    auth: {auth}\n"
        ));
        assert_eq!(error_of(&text), error, "{auth}");
    }
    let text = document("apis:\n  - name: a\n    path: /a\n    backend: shop\n    auth: appcode\n    auth_options: { anonymous: true }\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:12: apis[0] (a): auth_options.anonymous: not an auth option: appcode_query, require_tls, unsigned_payload, keep_credentials, jwt_issuers, claims_to_headers"
    );
    let text = document("apis:\n  - name: a\n    path: /a\n    backend: shop\n    auth: anonymous\n    auth_options: { require_tls: true }\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:12: apis[0] (a): auth_options: auth_options are allowed only with an app mode in `auth` (app, huawei_app, appcode, basic, jwt)"
    );
    // sign-auth's own check of an option names the option's line.
    let text = document("apis:\n  - name: a\n    path: /a\n    backend: shop\n    auth: appcode\n    auth_options:\n      appcode_query: \"\"\n");
    assert_eq!(
        error_of(&text),
        "apis.yaml:13: apis[0] (a): auth_options.appcode_query: must name a query parameter"
    );
}

#[test]
fn by_request_matching_writes_method_and_path() {
    let text = document("gateway: { match: request }\napis:\n  - { name: a, method: GET, path: \"/a/{id}\", backend: shop, auth: app }\n  - { name: b, path_prefix: /b, backend: shop, auth: app }\n");
    let rules = &section(&generated(&text), Section::SignAuth)["rules"];
    assert_eq!(
        rules[0]["match"],
        json!({"methods": ["GET"], "path": {"template": "/a/{id}"}})
    );
    assert_eq!(rules[1]["match"], json!({"path": {"prefix": "/b"}}));
}

#[test]
fn unused_settings_and_unbound_policies_are_warned_about() {
    let text = document("settings:\n  ext_auth: { authorizer: { cluster: shop } }\npolicies:\n  - { name: p, quota: { limit: 1, window: 1s } }\napis:\n  - { name: a, path: /a, backend: shop, auth: anonymous }\n");
    assert_eq!(
        generated(&text).warnings,
        [
            "apis.yaml: settings.ext_auth is given, but no API uses the policy: it is left out",
            "apis.yaml: policies[0] (p) is bound to no API or group: it is left out",
        ]
    );
}

#[test]
fn provenance_finds_the_longest_prefix_on_a_path_boundary() {
    let mut provenance = Provenance::default();
    provenance.add("ip_acl", "settings.ip_acl");
    provenance.add("ip_acl.rules[1]", "apis[1]");
    provenance.add("ip_acl.rules[10]", "apis[10]");
    assert_eq!(
        provenance.locate("ip_acl.rules[10].allow[0]").0,
        "apis[10].allow[0]"
    );
    assert_eq!(provenance.locate("ip_acl.rules[1]").0, "apis[1]");
    assert_eq!(
        provenance.locate("ip_acl.deny[0]").0,
        "settings.ip_acl.deny[0]"
    );
    assert_eq!(provenance.locate("log_push.sink").0, "log_push.sink");
}

fn routes_of(config: &Value) -> Vec<Value> {
    config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap()
        .clone()
}

const ROUTING: &str = "  - name: by-region
    routing:
      parameters: { tier: \"Header:X-Tier\" }
      routes:
        - { name: down, condition: \"header.x-maintenance == 'on'\", mock: { status: 503, body: later } }
        - { name: eu, condition: \"param.region == 'eu' && $tier\", backend: shop-eu }
  - name: copy
    mirror: { backend: shop-eu, percent: 12.5 }
";

fn routing_document(policies: &str, api: &str) -> String {
    format!(
        "version: 1\nbackends:\n  - name: shop\n    endpoints: [127.0.0.1:18081]\n  - name: shop-eu\n    endpoints: [127.0.0.1:18082]\npolicies:\n{policies}apis:\n{api}"
    )
}

#[test]
fn routing_writes_a_route_per_choice_before_the_apis_own_and_the_filter_its_conditions() {
    let text = routing_document(
        ROUTING,
        "  - { name: catalog, path: \"/catalog/{region}\", backend: shop, auth: anonymous, stages: { TEST: shop }, policies: [by-region, copy] }\n",
    );
    let generated = generated(&text);
    let config = bootstrap(&generated, Host::Module, &Artifacts::default());
    let routes = routes_of(&config);
    let names: Vec<&str> = routes.iter().filter_map(|r| r["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "catalog.route.down",
            "catalog.route.eu",
            "catalog.stage.test",
            "catalog.unknown-stage",
            "catalog",
            "gateway.no-such-api"
        ]
    );
    assert_eq!(
        routes[1]["match"]["headers"],
        json!([{"name": "x-gw-route", "string_match": {"exact": "catalog.route.eu"}}])
    );
    assert_eq!(
        routes[1]["request_headers_to_remove"],
        json!(["x-gw-route"])
    );
    assert_eq!(routes[0]["direct_response"]["status"], 503);
    assert_eq!(routes[1]["route"]["cluster"], "shop-eu");
    // The mirror on every route to a backend, not on answers.
    let mirror = json!([{"cluster": "shop-eu", "runtime_fraction": {"default_value": {
        "numerator": 1250, "denominator": "TEN_THOUSAND"}}}]);
    for i in [1, 2, 4] {
        assert_eq!(routes[i]["route"]["request_mirror_policies"], mirror, "{i}");
    }
    assert!(routes[0].get("route").is_none());
    // The filter's rule: the conditions and the names the routes match,
    // and every policy knows the routing routes as the API's.
    let routing = section(&generated, Section::Routing);
    assert_eq!(
        routing["rules"][0]["routes"],
        json!([
            {"condition": "header.x-maintenance == 'on'", "to": "catalog.route.down"},
            {"condition": "param.region == 'eu' && $tier", "to": "catalog.route.eu"}
        ])
    );
    assert_eq!(
        routing["rules"][0]["parameters"],
        json!({"tier": "Header:X-Tier"})
    );
    assert_eq!(
        routing["rules"][0]["match"]["route_names"],
        json!([
            "catalog",
            "catalog.stage.test",
            "catalog.route.down",
            "catalog.route.eu"
        ])
    );
}

#[test]
fn routing_and_mirror_mistakes_are_reported_at_the_policy() {
    let api = "  - { name: catalog, path: \"/catalog/{region}\", backend: shop, auth: anonymous, policies: [by-region] }\n";
    for (from, to, expected) in [
        (
            "backend: shop-eu }",
            "backend: nowhere }",
            "policies[0] (by-region): routing.routes[1].backend: `nowhere` names no backend",
        ),
        (
            ", backend: shop-eu }",
            " }",
            "policies[0] (by-region): routing.routes[1]: a route goes to a `backend` or answers with a `mock` (one of them)",
        ),
        (
            "name: eu,",
            "name: down,",
            "policies[0] (by-region): routing.routes[1].name: `down` names another route of the policy",
        ),
        (
            "name: eu,",
            "name: \"e u\",",
            "policies[0] (by-region): routing.routes[1].name: must be 1 to 64 letters",
        ),
        (
            "name: eu,",
            "name: eu, weight: 3,",
            "policies[0] (by-region): routing.routes[1].weight: unknown field `weight`",
        ),
        (
            "&& $tier\",",
            "&& $tier ==\",",
            "policies[0] (by-region): routing.routes[1].condition: at the end: a value expected",
        ),
        (
            "percent: 12.5",
            "percent: 0",
            "policies[1] (copy): mirror.percent: a share of the requests: more than 0, at most 100",
        ),
    ] {
        let policies = ROUTING.replace(from, to);
        assert_ne!(policies, ROUTING, "{from}");
        let api = if from.starts_with("percent") {
            api.replace("[by-region]", "[copy]")
        } else {
            api.to_string()
        };
        let err = error_of(&routing_document(&policies, &api));
        assert!(err.contains(expected), "{from} -> {to}:\n{err}");
    }
}

#[test]
fn routing_and_mirroring_on_istio_point_to_the_virtual_service() {
    let text = routing_document(
        ROUTING,
        "  - { name: catalog, path: \"/catalog/{region}\", backend: shop, auth: anonymous, policies: [by-region, copy] }\n",
    );
    let source = Source::parse("apis.yaml", &text).unwrap();
    let generated = crate::load_for(&source, crate::generate::Target::Istio).unwrap();
    assert!(generated
        .routes
        .iter()
        .all(|r| r.chosen_by_routing.is_none() && r.mirror.is_none()));
    assert_eq!(
        section(&generated, Section::Routing)["rules"][0]["routes"][1]["to"],
        "catalog.route.eu"
    );
    // Checked on Istio too.
    let wrong = routing_document(
        &ROUTING.replace("backend: shop-eu }", "backend: nowhere }"),
        "  - { name: catalog, path: \"/catalog/{region}\", backend: shop, auth: anonymous, policies: [by-region] }\n",
    );
    let source = Source::parse("apis.yaml", &wrong).unwrap();
    let errors = crate::load_for(&source, crate::generate::Target::Istio).unwrap_err();
    assert!(
        errors[0].to_string().contains("`nowhere` names no backend"),
        "{errors:?}"
    );
    let warnings = generated.warnings.join("\n");
    assert!(warnings.contains("policies[0] (by-region): on Istio the routes are the VirtualServices': the routing filter sets `x-gw-route`"), "{warnings}");
    assert!(warnings.contains("policies[1] (copy): on Istio the routes are the VirtualServices': left out: use the VirtualService's `mirror` and `mirrorPercentage`"), "{warnings}");
}

#[test]
fn the_bootstrap_has_a_route_per_api_and_stage_then_not_found() {
    let text = document("apis:\n  - { name: a, method: GET, path: \"/a/{id}\", backend: shop, auth: anonymous, stages: { TEST: shop } }\n  - { name: m, path: /m, auth: anonymous, mock: { status: 201, body: hi } }\n");
    let config = bootstrap(&generated(&text), Host::Module, &Artifacts::default());
    let routes = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
    let names: Vec<&str> = routes
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "a.stage.test",
            "a.unknown-stage",
            "a",
            "m",
            "gateway.no-such-api"
        ]
    );
    assert_eq!(
        routes[0]["match"]["headers"][1]["string_match"],
        json!({"exact": "TEST", "ignore_case": true})
    );
    assert_eq!(
        routes[2]["match"]["headers"][0],
        json!({"name": ":method", "string_match": {"exact": "GET", "ignore_case": true}})
    );
    assert_eq!(routes[3]["direct_response"]["status"], 201);
    assert_eq!(routes[4]["direct_response"]["status"], 404);
    // Envoy's per-route stats: one set per API, none for the not-found route.
    let prefixes: Vec<&Value> = routes
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["stat_prefix"])
        .collect();
    assert_eq!(
        prefixes,
        [
            &json!("a"),
            &json!("a"),
            &json!("a"),
            &json!("m"),
            &Value::Null
        ]
    );
    assert_eq!(
        config["stats_config"]["stats_tags"],
        crate::envoy::stats_tags()
    );
    // The module is one filter, anonymous APIs only: no policy section.
    let filters = &config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
        ["typed_config"]["http_filters"];
    assert_eq!(
        filters.as_array().unwrap().len(),
        1,
        "only the router: {filters}"
    );
    // Written as YAML, it reads back the same.
    let text = crate::yaml::to_yaml(&config);
    assert_eq!(Source::parse("out.yaml", &text).unwrap().value, config);
}

mod schema {
    use crate::format;
    use crate::source::Source;
    use serde::de::DeserializeOwned;
    use serde_json::Value;

    fn schema() -> Value {
        let text = include_str!("../schema/apis.schema.json");
        serde_json::from_str(text).expect("the schema is JSON")
    }

    /// The fields a format struct accepts, from serde's own refusal of an unknown one.
    fn fields_of<T: DeserializeOwned>() -> Vec<String> {
        let err = match serde_json::from_value::<T>(serde_json::json!({"zz_unknown": 1})) {
            Ok(_) => panic!("an unknown field is accepted"),
            Err(err) => err.to_string(),
        };
        let expected = err
            .split_once("expected ")
            .map(|(_, list)| list)
            .unwrap_or_else(|| panic!("{err}"));
        let mut fields: Vec<String> = expected
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect();
        fields.sort();
        fields
    }

    fn properties(schema: &Value, pointer: &str) -> Vec<String> {
        let mut names: Vec<String> = schema
            .pointer(&format!("{pointer}/properties"))
            .and_then(Value::as_object)
            .unwrap_or_else(|| panic!("no {pointer}"))
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    #[test]
    fn the_schema_has_exactly_the_fields_of_the_format() {
        let schema = schema();
        let pairs: Vec<(&str, Vec<String>)> = vec![
            ("", fields_of::<format::Document>()),
            ("/definitions/Gateway", fields_of::<format::Gateway>()),
            ("/definitions/Listener", fields_of::<format::Listener>()),
            ("/definitions/Tls", fields_of::<format::Tls>()),
            ("/definitions/Cors", fields_of::<format::Cors>()),
            ("/definitions/Timeouts", fields_of::<format::Timeouts>()),
            ("/definitions/Backend", fields_of::<format::Backend>()),
            ("/definitions/Retries", fields_of::<format::Retries>()),
            (
                "/definitions/HealthCheck",
                fields_of::<format::HealthCheck>(),
            ),
            (
                "/definitions/OutlierDetection",
                fields_of::<format::OutlierDetection>(),
            ),
            (
                "/definitions/UpstreamTls",
                fields_of::<format::UpstreamTls>(),
            ),
            ("/definitions/Policy", fields_of::<format::Policy>()),
            ("/definitions/Settings", fields_of::<format::Settings>()),
            ("/definitions/Group", fields_of::<format::Group>()),
            ("/definitions/Api", fields_of::<format::Api>()),
            ("/definitions/Mock", fields_of::<format::Mock>()),
        ];
        for (pointer, fields) in pairs {
            assert_eq!(properties(&schema, pointer), fields, "schema {pointer:?}");
            let closed = schema.pointer(&format!("{pointer}/additionalProperties"));
            assert_eq!(
                closed,
                Some(&Value::Bool(false)),
                "{pointer:?} refuses unknown fields"
            );
        }
    }

    fn schema_errors(document: &Value) -> Vec<String> {
        let schema = schema();
        let config = jsonschema_valid::Config::from_schema(
            &schema,
            Some(jsonschema_valid::schemas::Draft::Draft7),
        )
        .expect("the schema compiles");
        assert!(config.validate_schema().is_ok(), "a valid draft 7 schema");
        let errors = match config.validate(document) {
            Ok(()) => Vec::new(),
            Err(errors) => errors.map(|e| e.to_string()).collect(),
        };
        errors
    }

    #[test]
    fn the_examples_follow_the_schema_and_mistakes_do_not() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let example = Source::read(&format!("{root}/examples/shop.yaml")).expect("example");
        assert_eq!(schema_errors(&example.value), Vec::<String>::new());
        let mut wrong = example.value.clone();
        wrong["apis"][0]["metod"] = Value::from("GET");
        assert!(!schema_errors(&wrong).is_empty(), "an unknown field");
        let mut wrong = example.value.clone();
        wrong["apis"][0]["auth"] = Value::from("everyone");
        assert!(!schema_errors(&wrong).is_empty(), "an unknown auth");
        let mut wrong = example.value;
        wrong["policies"][0]["breaker"] = serde_json::json!({});
        assert!(!schema_errors(&wrong).is_empty(), "a policy of two kinds");
    }
}

#[test]
fn the_shipped_demo_configs_are_what_gatewayctl_builds_from_the_demo() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let text = std::fs::read_to_string(format!("{root}/examples/demo.yaml")).expect("demo");
    let source = Source::parse("examples/demo.yaml", &text).unwrap_or_else(|err| panic!("{err}"));
    let generated = crate::load(&source).unwrap_or_else(|errors| panic!("{errors:?}"));
    assert!(generated.warnings.is_empty(), "{:?}", generated.warnings);
    for (host, file) in [
        (Host::Chain, "envoy/gateway.yaml"),
        (Host::Module, "envoy/gateway-module.yaml"),
        (Host::Native, "envoy/gateway-native.yaml"),
    ] {
        let built = crate::build_envoy(
            &generated,
            "examples/demo.yaml",
            host,
            &Artifacts::default(),
        );
        let shipped = std::fs::read_to_string(format!("{root}/{file}")).expect(file);
        assert!(
            built == shipped,
            "{file} is not what `gatewayctl build examples/demo.yaml` writes: run `make demo-config`"
        );
    }
}

#[test]
fn for_istio_the_policies_match_by_request_and_request_mapping_keeps_the_backend_path() {
    let text = document("apis:\n  - name: a\n    method: GET\n    path: /users/{id}\n    backend: shop\n    auth: app\n    mapping: { backend: { path: \"/accounts/{id}\" } }\n");
    let source = Source::parse("apis.yaml", &text).unwrap();
    let istio = crate::load_for(&source, crate::generate::Target::Istio).unwrap();
    assert_eq!(
        section(&istio, Section::SignAuth)["rules"][0]["match"],
        json!({"methods": ["GET"], "path": {"template": "/users/{id}"}})
    );
    assert_eq!(
        section(&istio, Section::RequestMapping)["rules"][0]["backend"],
        json!({"path": "/accounts/{id}"})
    );
    // For Envoy, the router rewrites the path instead.
    let envoy = generated(&text);
    assert_eq!(
        section(&envoy, Section::RequestMapping)["rules"][0].get("backend"),
        None
    );
}

#[test]
fn paths_envoy_and_the_filters_would_read_differently_are_refused() {
    let api = |path: &str| {
        document(&format!(
            "apis:\n  - {{ name: a, path: \"{path}\", backend: shop, auth: anonymous }}\n"
        ))
    };
    for (path, message) in [
        (
            "/files/*/{id}",
            "has a character Envoy's routes and the filters read differently",
        ),
        (
            "/caf%c3%a9/{id}",
            "has a character Envoy's routes and the filters read differently",
        ),
        (
            "/orders/{order-id}",
            "is not a variable name Envoy's URI templates take",
        ),
        (
            "/o/{organizationIdentifier}",
            "is not a variable name Envoy's URI templates take",
        ),
        ("/o/x{id}", "a variable is a whole segment"),
        (
            "/{a}/{b}/{c}/{d}/{e}/{f}",
            "Envoy's URI templates take at most 5",
        ),
    ] {
        let err = error_of(&api(path));
        assert!(err.starts_with("apis.yaml:8: apis[0] (a): path: "), "{err}");
        assert!(err.contains(message), "{path}: {err}");
    }
    let prefix = document(
        "apis:\n  - { name: a, path_prefix: \"/a/{id}\", backend: shop, auth: anonymous }\n",
    );
    assert!(error_of(&prefix).contains("a prefix cannot be a template"));
}

#[test]
fn generated_route_names_cannot_be_an_api_name() {
    let text = document("apis:\n  - { name: pay-stage-beta, path: /x, backend: shop, auth: app }\n  - { name: pay, path: /pay, backend: shop, auth: app, stages: { beta: shop } }\n  - { name: no-such-api, path: /n, backend: shop, auth: anonymous }\n");
    let routes: Vec<String> = generated(&text)
        .routes
        .iter()
        .map(|r| r.name.clone())
        .collect();
    assert_eq!(
        routes,
        [
            "pay-stage-beta",
            "pay.stage.beta",
            "pay.unknown-stage",
            "pay",
            "no-such-api",
            "gateway.no-such-api"
        ]
    );
    let twice = document("apis:\n  - { name: a, path: /a, backend: shop, auth: anonymous, stages: { beta: shop, BETA: shop } }\n");
    assert!(
        error_of(&twice).contains("is another stage's name in another case"),
        "{}",
        error_of(&twice)
    );
}

#[test]
fn unsafe_or_unrepresentable_settings_are_refused() {
    let cors = document("gateway:\n  cors: { allow_origins: [\"*\"], allow_credentials: true }\napis:\n  - { name: a, path: /a, backend: shop, auth: anonymous }\n");
    assert!(
        error_of(&cors).starts_with(
            "apis.yaml:8: gateway.cors.allow_origins: `*` with `allow_credentials: true`"
        ),
        "{}",
        error_of(&cors)
    );
    let tiny = document(
        "apis:\n  - { name: a, path: /a, backend: shop, auth: anonymous, timeout: 0.0004s }\n",
    );
    assert!(error_of(&tiny).contains("is not a duration"));
    let prefix_mapping = document("apis:\n  - { name: a, path_prefix: /a, backend: shop, auth: anonymous, mapping: { backend: { path: /b } } }\n");
    assert!(error_of(&prefix_mapping).contains("a backend path needs the API's `path`"));
}

#[test]
fn for_istio_a_mapped_path_cannot_have_a_breaker() {
    let text = document("policies:\n  - { name: b, breaker: { window: { duration_ms: 1000, buckets: 10 }, trip: { min_calls: 5, failure_rate_percent: 50 } } }\napis:\n  - { name: a, path: /a, backend: shop, auth: anonymous, policies: [b], mapping: { backend: { path: /b } } }\n");
    let source = Source::parse("apis.yaml", &text).unwrap();
    let errors = crate::load_for(&source, crate::generate::Target::Istio)
        .err()
        .unwrap_or_default();
    assert!(
        errors[0]
            .to_string()
            .contains("for Istio, request-mapping rewrites the path"),
        "{errors:?}"
    );
    // For Envoy the router rewrites it, after every policy.
    generated(&text);
}

#[test]
fn settings_only_the_native_module_can_carry_out_are_named() {
    let api = "apis:\n  - { name: a, path: /a, backend: shop, auth: anonymous }\n";
    let kafka = document(&format!(
        "settings:\n  log_push:\n    sink: {{ format: kafka, brokers: [127.0.0.1:9092], topic: gw.calls }}\n{api}"
    ));
    assert_eq!(
        crate::native_only_setting(&generated(&kafka)),
        Some((
            "settings.log_push.sink".to_string(),
            "give the Wasm modules a Kafka REST proxy (format `kafka_rest`)"
        ))
    );
    let rest = document(&format!(
        "settings:\n  log_push:\n    sink: {{ cluster: shop, format: kafka_rest, topic: gw.calls }}\n{api}"
    ));
    assert_eq!(crate::native_only_setting(&generated(&rest)), None);
}

#[test]
fn the_fleet_store_may_be_webdis_redis_itself_or_both() {
    let document_with = |store: &str| {
        document(&format!(
            "gateway:\n  fleet_store: {store}\nsettings:\n  throttling: {{ fleet: {{}} }}\npolicies:\n  - {{ name: q, quota: {{ key: app, limit: 10, window: 1m }} }}\napis:\n  - {{ name: a, path: /a, backend: shop, auth: app, policies: [q] }}\n"
        ))
    };
    let store_of = |store: &str| {
        let generated = generated(&document_with(store));
        section(&generated, Section::Throttling)["fleet"]["store"].clone()
    };
    // Both: each form calls the one it can, so every form builds.
    let both = "{ webdis: shop, redis: { address: 127.0.0.1:6379, username: gw, password: s } }";
    assert_eq!(
        store_of(both),
        json!({"cluster": "shop", "redis": {"address": "127.0.0.1:6379", "username": "gw", "password": "s"}})
    );
    assert_eq!(
        crate::native_only_setting(&generated(&document_with(both))),
        None
    );
    // Redis alone is the native module's.
    let redis = "{ redis: { address: 127.0.0.1:6379 } }";
    assert_eq!(
        store_of(redis),
        json!({"redis": {"address": "127.0.0.1:6379"}})
    );
    assert_eq!(
        crate::native_only_setting(&generated(&document_with(redis))),
        Some((
            "gateway.fleet_store.redis".to_string(),
            "give the Wasm modules Webdis beside it (`gateway.fleet_store.webdis`)"
        ))
    );
    assert_eq!(store_of("{ webdis: shop }"), json!({"cluster": "shop"}));
    // Bad stores are named where they are written.
    assert_eq!(
        error_of(&document_with("{ redis: { address: localhost } }")),
        "apis.yaml:8: gateway.fleet_store.redis.address: `localhost` is not host:port"
    );
    assert_eq!(
        error_of(&document_with(
            "{ webdis: nowhere, redis: { address: 127.0.0.1:1 } }"
        )),
        "apis.yaml:8: gateway.fleet_store.webdis: `nowhere` names no backend"
    );
    assert!(error_of(&document_with("{ redis: {}, other: 1 }"))
        .contains("`fleet_store` is the backend of Webdis, or `{webdis: BACKEND, redis: {…}}`"));
    assert!(error_of(&document_with("{}")).contains("`fleet_store` is the backend of Webdis"));
}

#[test]
fn a_threat_protection_policy_becomes_the_apis_rule_and_its_errors_name_the_field() {
    let policy = "policies:\n  - name: free-text\n    threat_protection:\n      sensitivity: high\n      exempt: [json.snippet]\n";
    let text = document(&format!(
        "{policy}apis:\n  - {{ name: search, path: /search, backend: shop, auth: anonymous, policies: [free-text] }}\n"
    ));
    let threats = section(&generated(&text), Section::ThreatProtection);
    assert_eq!(threats["rules"][0]["name"], "search");
    assert_eq!(threats["rules"][0]["sensitivity"], "high");
    assert_eq!(threats["rules"][0]["exempt"], json!(["json.snippet"]));
    let bad = text.replace("json.snippet", "body.snippet");
    let err = error_of(&bad);
    assert!(
        err.starts_with("apis.yaml:11: policies[0] (free-text): threat_protection.exempt[0]: "),
        "{err}"
    );
}
