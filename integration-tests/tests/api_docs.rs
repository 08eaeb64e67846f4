//! `gatewayctl export openapi` and `gatewayctl docs` as a caller meets
//! them: the exported documents pass an OpenAPI validator of their own
//! kind, the HTML reference renders in a real headless chromium with its
//! content and working links, and every request the rendered page offers
//! to copy, run as written (credentials filled in), passes the gateway in
//! a real Envoy (the chain with no env, GATEWAY_MODULE=1, GATEWAY_NATIVE=1)
//! and reaches the backend.

use gatewayctl::export::{self, Options};
use gatewayctl::source::Source;
use integration_tests::browser::rendered_dom;
use integration_tests::echo::EchoServer;
use integration_tests::envoy::{start_yaml, workspace_root};
use integration_tests::gatewayctl::{build, load, test_document};
use std::path::{Path, PathBuf};
use std::process::Command;

/// openapi-spec-validator, which `scripts/setup.sh` installs into .venv.
fn openapi_validator() -> PathBuf {
    let default = workspace_root().join(".venv/bin/openapi-spec-validator");
    integration_tests::process::installed(
        "OPENAPI_VALIDATOR_BIN",
        &default.to_string_lossy(),
        "openapi-spec-validator",
    )
}

fn validate_openapi(file: &Path) {
    let output = Command::new(openapi_validator())
        .arg(file)
        .output()
        .expect("openapi-spec-validator");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && text.contains(": OK"),
        "{} is not valid OpenAPI:\n{text}\n{}",
        file.display(),
        std::fs::read_to_string(file).unwrap_or_default()
    );
}

fn example(name: &str) -> (Source, gatewayctl::generate::Generated) {
    let path = workspace_root().join("examples").join(name);
    let source = Source::read(&path.to_string_lossy()).expect("example");
    let generated = gatewayctl::load(&source).expect("the example checks");
    (source, generated)
}

/// Text of the DOM with its character references read.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

/// Every value of `attribute` in the DOM.
fn attributes<'a>(dom: &'a str, attribute: &str) -> Vec<&'a str> {
    let marker = format!(" {attribute}=\"");
    dom.match_indices(&marker)
        .filter_map(|(at, _)| {
            let rest = &dom[at + marker.len()..];
            rest.find('"').map(|end| &rest[..end])
        })
        .collect()
}

#[test]
fn exports_are_valid_openapi_for_every_selection() {
    let dir = tempfile::tempdir().expect("dir");
    for (name, options) in [
        ("demo.yaml", Options::default()),
        (
            "demo.yaml",
            Options {
                complete: true,
                ..Options::default()
            },
        ),
        ("shop.yaml", Options::default()),
        (
            "shop.yaml",
            Options {
                stage: Some("TEST".into()),
                ..Options::default()
            },
        ),
        (
            "shop.yaml",
            Options {
                group: Some("orders".into()),
                servers: vec!["https://api.example.com".into()],
                complete: true,
                ..Options::default()
            },
        ),
    ] {
        let (source, generated) = example(name);
        let exported = export::openapi(&source, &generated, &options).expect("exports");
        let file = dir
            .path()
            .join(format!("{name}.{:?}.yaml", options.complete));
        std::fs::write(&file, export::to_yaml(name, &exported)).expect("write");
        validate_openapi(&file);
    }
}

#[test]
fn the_reference_renders_in_a_browser_with_its_content_and_working_links() {
    for name in ["demo.yaml", "shop.yaml"] {
        let (source, generated) = example(name);
        let dir = tempfile::tempdir().expect("dir");
        let warnings =
            gatewayctl::html::write(dir.path(), &source, &generated, &Options::default())
                .expect("docs");
        assert!(warnings.is_empty(), "{warnings:?}");
        validate_openapi(&dir.path().join(gatewayctl::html::OPENAPI));
        let dom = rendered_dom(&dir.path().join(gatewayctl::html::PAGE));
        assert!(
            dom.contains(&format!("<title>APIs of {name}</title>")),
            "{dom}"
        );
        for api in &generated.document.apis {
            assert!(
                dom.contains(&format!("<section id=\"api-{}\">", api.name)),
                "{name}: no section for {}",
                api.name
            );
        }
        assert!(dom.contains("<h2>Error responses</h2>"));
        // Nothing is fetched from elsewhere: no script or image source, no
        // stylesheet link.
        assert!(
            attributes(&dom, "src").is_empty(),
            "{name}: the page loads something"
        );
        assert!(
            !dom.contains("<link"),
            "{name}: the page links a stylesheet"
        );
        let ids = attributes(&dom, "id");
        let links = attributes(&dom, "href");
        assert!(
            links.len() > generated.document.apis.len(),
            "{name}: {links:?}"
        );
        for link in links {
            match link.strip_prefix('#') {
                Some(id) => assert!(ids.contains(&id), "{name}: #{id} leads nowhere"),
                None => assert!(
                    !link.contains(':') && dir.path().join(link).is_file(),
                    "{name}: {link} is not a file beside the page"
                ),
            }
        }
    }
}

const APPS: &str = "apps:
  - key: \"203751\"
    secrets: [s3cret]
    huawei: [ { key: hw-key, secrets: [hw-s3cret] } ]
    appcodes: [c0de]
    basic: [ { username: ann, password: pw } ]
";

/// The placeholders of the page's requests and what this test's apps use.
const CREDENTIALS: [(&str, &str); 5] = [
    (
        "YOUR_APP_KEY --secret YOUR_APP_SECRET",
        "203751 --secret s3cret",
    ),
    (
        "--huawei --key 203751 --secret s3cret",
        "--huawei --key hw-key --secret hw-s3cret",
    ),
    ("YOUR_APPCODE", "c0de"),
    ("YOUR_USER:YOUR_PASSWORD", "ann:pw"),
    ("\n", " "),
];

/// The words of a shell command line, as `sh` splits them.
fn shell_words(line: &str) -> Vec<String> {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!("printf '%s\\0' {line}"))
        .output()
        .expect("sh");
    assert!(output.status.success(), "sh cannot read: {line}");
    String::from_utf8_lossy(&output.stdout)
        .split_terminator('\0')
        .map(String::from)
        .collect()
}

/// Runs a request the page offers (its comment lines aside): a
/// `gatewayctl sign … --curl` line gives the curl command, which is run;
/// the status curl got.
fn run_request(block: &str) -> (u16, String) {
    let mut line: String = block
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    for (placeholder, value) in CREDENTIALS {
        line = line.replace(placeholder, value);
    }
    let mut words = shell_words(&line);
    if words.first().map(String::as_str) == Some("gatewayctl") {
        assert_eq!(words[1], "sign", "{line}");
        let curl = gatewayctl::sign::output(words[2..].iter().cloned())
            .unwrap_or_else(|e| panic!("gatewayctl sign refuses the page's line: {e}\n{line}"));
        words = shell_words(&curl);
    }
    assert_eq!(words[0], "curl", "{line}");
    let output = Command::new("curl")
        .args(&words[1..])
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .output()
        .expect("curl");
    let status = String::from_utf8_lossy(&output.stdout).parse().unwrap_or(0);
    (status, line)
}

#[test]
fn every_request_the_page_offers_passes_the_gateway() {
    let backend = EchoServer::start("backend").expect("echo");
    let text = test_document(
        backend.port(),
        &format!(
            "{APPS}apis:
  - name: create-order
    method: POST
    path: /orders/{{shop}}
    backend: backend
    auth: [app, huawei_app, appcode, basic]
    parameters:
      - {{ name: shop, in: path, type: integer, minimum: 3 }}
      - {{ name: lang, in: query, required: true, enum: [en, zh] }}
      - {{ name: x-trace, in: header, required: true, max_length: 20 }}
    body_schema:
      type: object
      required: [items]
      properties:
        items: {{ type: array, minItems: 1, items: {{ $ref: '#/definitions/item' }} }}
      definitions:
        item:
          type: object
          required: [sku, count]
          properties: {{ sku: {{ type: string }}, count: {{ type: integer, minimum: 1 }} }}
  - {{ name: hello, method: GET, path: /hello, backend: backend, auth: anonymous }}
"
        ),
    );
    let envoy = start_yaml(&build("apis.yaml", &text), 2);
    let server = format!("http://127.0.0.1:{}", envoy.listener_port("http"));
    let (source, generated) = load("apis.yaml", &text);
    let dir = tempfile::tempdir().expect("dir");
    let options = Options {
        servers: vec![server],
        ..Options::default()
    };
    gatewayctl::html::write(dir.path(), &source, &generated, &options).expect("docs");
    let dom = rendered_dom(&dir.path().join(gatewayctl::html::PAGE));
    let blocks: Vec<String> = dom
        .split("<pre><code>")
        .skip(1)
        .filter_map(|rest| {
            rest.split_once("</code></pre>")
                .map(|(code, _)| unescape(code))
        })
        .collect();
    assert_eq!(blocks.len(), 5, "a request per way in: {blocks:?}");
    for block in &blocks {
        let before = backend.request_count();
        let (status, line) = run_request(block);
        assert_eq!(status, 200, "{line}\n{}", envoy.log());
        assert_eq!(backend.request_count(), before + 1, "{line}");
    }
    let orders: Vec<_> = backend
        .requests()
        .into_iter()
        .filter(|seen| seen.path == "/orders/3")
        .collect();
    assert_eq!(orders.len(), 4, "one per signed way in");
    for seen in orders {
        assert_eq!(seen.query, "lang=en");
        assert_eq!(seen.header("x-trace"), Some("X_TRACE"));
        assert_eq!(
            String::from_utf8_lossy(&seen.body),
            r#"{"items":[{"count":1,"sku":"text"}]}"#
        );
    }
}
