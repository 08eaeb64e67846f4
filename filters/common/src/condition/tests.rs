use super::*;
use proptest::prelude::*;
use std::collections::HashMap;

/// A request as a map of values, counting reads.
#[derive(Default)]
struct Request {
    values: HashMap<Reference, String>,
    reads: usize,
}

impl Facts for &mut Request {
    fn lookup(&mut self, reference: &Reference) -> Option<String> {
        self.reads += 1;
        self.values.get(reference).cloned()
    }
}

fn request(values: &[(Reference, &str)]) -> Request {
    Request {
        values: values
            .iter()
            .map(|(r, v)| (r.clone(), v.to_string()))
            .collect(),
        reads: 0,
    }
}

fn holds_with(
    parameters: &[(&str, &str)],
    text: &str,
    request: &mut Request,
) -> Result<bool, String> {
    let parameters = parameters
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut compiler = Compiler::new(&parameters).map_err(|e| e.to_string())?;
    let condition = compiler.compile(text)?;
    let references = compiler.into_references();
    let mut values = Values::new(request, &references);
    Ok(condition.holds(&references, &mut values))
}

fn holds(text: &str, values: &[(Reference, &str)]) -> bool {
    holds_with(&[], text, &mut request(values)).unwrap_or_else(|err| panic!("{text}: {err}"))
}

fn error(text: &str) -> String {
    holds_with(&[], text, &mut request(&[])).expect_err(text)
}

fn q(name: &str) -> Reference {
    Reference::Query(name.into())
}

#[test]
fn comparisons_of_text_and_numbers() {
    let r = [(q("n"), "10"), (q("s"), "beta"), (Reference::App, "203751")];
    for (text, expected) in [
        ("query.n == 10", true),
        ("query.n = '10'", true),
        ("query.n == 10.0", true),
        ("query.n > 9", true),
        ("query.n > '9'", true),
        ("query.n < 9", false),
        ("query.n >= 10 && query.n <= 10", true),
        ("query.n != 10", false),
        ("query.s > 'alpha'", true),
        ("query.s < 'alpha'", false),
        ("query.s == 'Beta'", false),
        ("app == 203751", true),
        ("app == -203751", false),
        ("query.n == 1e1", true),
    ] {
        assert_eq!(holds(text, &r), expected, "{text}");
    }
}

#[test]
fn a_number_written_as_one_asks_for_a_number() {
    let r = [
        (q("days"), "100d"),
        (q("n"), "01"),
        (q("big"), "12345678901234567"),
        (q("other"), "12345678901234568"),
    ];
    for (text, expected) in [
        // Not a number: every comparison with a number fails but `!=`.
        ("query.days <= 31", false),
        ("query.days > 31", false),
        ("query.days == 100", false),
        ("query.days != 100", true),
        ("query.days in [100]", false),
        // Text against text is exact; a number literal compares numbers.
        ("query.n == '1'", false),
        ("query.n == 1", true),
        ("query.n in ['1']", false),
        ("query.n in [1]", true),
        // Long whole numbers are compared exactly, not as floats.
        ("query.big == query.other", false),
        ("query.big == 12345678901234568", false),
        ("query.big < query.other", true),
        ("query.big < 12345678901234568", true),
        ("-0 == 0", true),
    ] {
        assert_eq!(holds(text, &r), expected, "{text}");
    }
}

#[test]
fn two_values_the_request_lacks_are_not_equal() {
    assert!(!holds("query.x == query.y", &[]));
    assert!(holds("query.x != query.y", &[]));
    assert!(holds("query.x == null && null == query.y", &[]));
}

#[test]
fn a_regular_expression_keeps_its_backslashes() {
    let r = [(Reference::Path, "/v1/42/admin"), (q("a"), "a.b")];
    assert!(holds(r"path matches '^/v1/\d+/admin$'", &r));
    assert!(holds(r"query.a matches '^a\.b$'", &r));
    assert!(!holds(r"query.a matches '^a\.c$'", &r));
    assert!(holds(r"query.a == 'a.b' && 'x\\y' == 'x\\y'", &r));
}

#[test]
fn null_is_a_value_the_request_lacks() {
    let r = [(q("empty"), "")];
    for (text, expected) in [
        ("query.missing == null", true),
        ("query.missing != null", false),
        ("query.missing != 'x'", true),
        ("query.missing == 'x'", false),
        ("query.missing < 5", false),
        ("query.missing >= 5", false),
        ("query.missing", false),
        ("!query.missing", true),
        ("query.empty", false),
        ("query.empty == null", false),
        ("query.empty == ''", true),
        ("query.missing in [null, 'a']", true),
        ("query.missing in ['a']", false),
        ("query.missing matches '.*'", false),
        ("query.missing contains ''", false),
        ("null == null", true),
    ] {
        assert_eq!(holds(text, &r), expected, "{text}");
    }
}

#[test]
fn lists_regular_expressions_and_text_tests() {
    let r = [
        (q("a"), "view"),
        (Reference::Path, "/v2/orders/7"),
        (Reference::Header("x-user".into()), "alice@example.com"),
        (q("n"), "3"),
    ];
    for (text, expected) in [
        ("query.a in ['view', 'list']", true),
        ("query.a in ['list']", false),
        ("query.a not in ['list']", true),
        ("query.a in []", false),
        ("query.n in [1, 2, 3.0]", true),
        ("path matches '^/v2/'", true),
        ("path =~ '^/v1/'", false),
        ("path !~ '^/v1/'", true),
        ("path starts_with '/v2'", true),
        ("path ends_with '/7'", true),
        ("path contains 'orders'", true),
        ("header.x-user ends_with '@example.com'", true),
        ("header.X-User contains query.a", false),
        ("header['x-user'] matches '^[a-z]+@'", true),
    ] {
        assert_eq!(holds(text, &r), expected, "{text}");
    }
}

#[test]
fn logic_binds_not_then_and_then_or() {
    let r = [(q("a"), "1"), (q("b"), "2")];
    for (text, expected) in [
        ("query.a == 1 || query.b == 9 && query.a == 9", true),
        ("(query.a == 1 || query.b == 9) && query.a == 9", false),
        ("!query.a == 1", false),
        ("!(query.a == 2)", true),
        ("not query.a == 2 and query.b == 2", true),
        ("query.a == 9 or query.b == 2", true),
        ("true && !false", true),
        ("!!query.a", true),
    ] {
        assert_eq!(holds(text, &r), expected, "{text}");
    }
}

#[test]
fn values_are_read_once_and_only_when_reached() {
    let mut r = request(&[(q("a"), "1"), (q("b"), "2")]);
    let text = "query.a == 1 || query.b == 2 || query.c == 3";
    assert!(holds_with(&[], text, &mut r).unwrap());
    assert_eq!(r.reads, 1, "the first alternative decides");
    let mut r = request(&[(q("a"), "1")]);
    let text = "query.a == 2 || query.a == 3 || query.a in ['1']";
    assert!(holds_with(&[], text, &mut r).unwrap());
    assert_eq!(r.reads, 1, "a value is read once");
}

#[test]
fn two_values_compare_with_each_other() {
    let r = [
        (Reference::User, "u-7"),
        (Reference::Param("userId".into()), "u-7"),
    ];
    assert!(holds("user == param.userId", &r));
    assert!(!holds("user != param.userId", &r));
    assert!(holds("param.userId starts_with user", &r));
}

#[test]
fn every_named_value_is_known() {
    let r = [
        (Reference::Method, "GET"),
        (Reference::Host, "shop"),
        (Reference::Stage, "TEST"),
        (Reference::AppName, "mobile"),
        (Reference::ClientIp, "10.0.0.1"),
        (Reference::Form("f".into()), "x"),
        (
            Reference::Json(vec!["order".into(), "items".into(), "0".into()]),
            "pen",
        ),
    ];
    assert!(holds(
        "method == 'GET' && host == 'shop' && stage == 'TEST' && app_name == 'mobile' \
         && client_ip starts_with '10.' && form.f == 'x' && json.order.items.0 == 'pen'",
        &r
    ));
}

#[test]
fn declared_parameters_read_their_locations() {
    let parameters = [
        ("appId", "System:CaAppKey"),
        ("action", "Query:action"),
        ("kind", "Header:X-Kind"),
        ("total", "BodyJsonField:$.order.lines[2].total"),
        ("uid", "Parameter:userId"),
        ("m", "Method"),
        ("p", "Path"),
    ];
    let mut r = request(&[
        (Reference::App, "203751"),
        (q("action"), "view"),
        (Reference::Header("x-kind".into()), "gold"),
        (
            Reference::Json(vec![
                "order".into(),
                "lines".into(),
                "2".into(),
                "total".into(),
            ]),
            "12.5",
        ),
        (Reference::Param("userId".into()), "7"),
        (Reference::Method, "POST"),
        (Reference::Path, "/o"),
    ]);
    let text = "$appId = 203751 and $action = 'view' and $kind == 'gold' and $total > 12 \
                and $uid == 7 and $m == 'POST' and $p == '/o'";
    assert_eq!(holds_with(&parameters, text, &mut r), Ok(true));
}

#[test]
fn bad_declarations_name_the_parameter() {
    for (name, location, expected) in [
        ("x", "Token:userId", "claims_to_headers"),
        ("x", "Cookie:a", "unknown location"),
        ("x", "Query", "needs a name"),
        ("x", "System:CaNope", "CaAppKey"),
        ("x", "BodyJsonField:$.a[b]", "[N]"),
        ("1x", "Query:a", "letters"),
    ] {
        let parameters = [(name.to_string(), location.to_string())].into();
        let err = Compiler::new(&parameters).expect_err(location);
        assert_eq!(err.path, format!("parameters.{name}"));
        assert!(err.message.contains(expected), "{location}: {err}");
    }
}

#[test]
fn mistakes_are_refused_with_where_and_why() {
    for (text, expected) in [
        ("", "at the end: a value expected"),
        ("query.a ==", "at the end: a value expected"),
        ("query.a == 1 &&", "at the end"),
        ("(query.a == 1", "`)` expected"),
        ("query.a == 1)", "at 13: unexpected `)`"),
        ("query == 1", "`query` needs a name"),
        ("app.x == 1", "`app` takes no name"),
        ("cookie.a == 1", "unknown value `cookie`"),
        ("$nope == 1", "`$nope` is not among `parameters`"),
        ("'a' ", "a comparison expected after a constant"),
        ("query.a in 'x'", "`[` expected after `in`"),
        ("query.a in ['x' 'y']", "`,` or `]` expected"),
        ("query.a in [query.b]", "a string, number or null expected"),
        ("query.a matches '('", "bad regular expression"),
        ("query.a matches query.b", "a quoted regular expression"),
        ("query.a == 'open", "a string is not closed"),
        ("query.a # 1", "at 9: unexpected `#`"),
        ("query.a == 1.2.3", "is not a number"),
        ("and == 1", "a value expected, not `and`"),
        ("header[1] == 1", "takes a quoted name"),
    ] {
        let err = error(text);
        assert!(err.contains(expected), "{text:?}: {err}");
    }
}

#[test]
fn limits_bound_what_a_configuration_can_ask() {
    let deep = format!("{}query.a{}", "(".repeat(40), ")".repeat(40));
    assert!(error(&deep).contains("nested deeper than 32"));
    let negations = format!("{}query.a", "!".repeat(40));
    assert!(error(&negations).contains("nested deeper"));
    let long = format!("query.a == '{}'", "x".repeat(MAX_CONDITION_BYTES));
    assert!(error(&long).contains("longer than"));
    let items = vec!["1"; MAX_LIST_ITEMS + 1].join(",");
    assert!(error(&format!("query.a in [{items}]")).contains("at most 1024 items"));
    let huge = "query.a matches '(((a{1,100}){1,100}){1,100})'";
    assert!(error(huge).contains("bad regular expression"));
}

#[test]
fn quotes_escape_inside_strings() {
    let r = [(q("a"), "it's \"x\"")];
    assert!(holds(r#"query.a == 'it\'s "x"'"#, &r));
    assert!(holds(r#"query.a == "it's \"x\"""#, &r));
}

#[test]
fn references_are_shared_across_the_conditions_of_a_compiler() {
    let mut compiler = Compiler::default();
    compiler.compile("query.a == 1 && app == 'x'").unwrap();
    compiler.compile("app == 'y' || json.a.b").unwrap();
    assert_eq!(
        compiler.references(),
        [
            q("a"),
            Reference::App,
            Reference::Json(vec!["a".into(), "b".into()])
        ]
    );
    assert!(compiler.references().iter().any(Reference::in_body));
}

proptest! {
    #[test]
    fn any_text_compiles_or_is_refused_without_panicking(text in "\\PC{0,64}") {
        let mut compiler = Compiler::default();
        let _ = compiler.compile(&text);
    }

    #[test]
    fn condition_like_text_never_panics_when_evaluated(
        text in "[a-z.()!&|=<>' \\[\\]0-9,$]{0,48}",
        value in "\\PC{0,8}",
    ) {
        let mut compiler = Compiler::default();
        if let Ok(condition) = compiler.compile(&text) {
            let references = compiler.into_references();
            let mut r = Request {
                values: references.iter().map(|r| (r.clone(), value.clone())).collect(),
                reads: 0,
            };
            let mut values = Values::new(&mut r, &references);
            let _ = condition.holds(&references, &mut values);
        }
    }
}
