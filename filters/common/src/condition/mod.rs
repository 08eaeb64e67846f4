//! The condition language access control and conditional routing share:
//! a condition on what the gateway knows of a request, compiled once when
//! the configuration loads, evaluated per request over values read on
//! demand (a value the evaluation does not reach is never read).
//!
//! ```text
//! app in ['203751', 'partner'] && query.action != 'delete'
//! !(header.x-user-type == 'guest') || user == param.userId
//! json.order.total > 1000 and stage == 'TEST'
//! header['x-odd.name'] matches '^[a-z]+$'
//! $userType == 'admin'            (a parameter declared Alibaba-style)
//! ```
//!
//! Values: `method`, `path` (without the query), `host`, `stage`
//! (`X-Ca-Stage`, `RELEASE` when absent), `app`, `app_name`, `user`,
//! `client_ip`, and by name `query.N`, `header.N`, `param.N` (a variable of
//! the API's path template), `form.N`, `json.a.b.0` (a field of a JSON
//! body). A value the request does not have is `null`.
//!
//! A response condition (error mapping) reads the response too: `status`,
//! `response.header.N` and `response.json.a.b` (a field of a JSON response
//! body), with the request's values but its body's.
//!
//! Operators: `==` (or `=`), `!=` (or `<>`), `<`, `<=`, `>`, `>=`, `in [..]`,
//! `not in [..]`, `matches` (or `=~`) and `!~` with a regular expression,
//! `contains`, `starts_with`, `ends_with`; `&&`/`and`, `||`/`or`,
//! `!`/`not`, parentheses. A number written as one (`31`, not `'31'`)
//! compares as a number, and a value that is not a number fails the
//! comparison; otherwise `==` and `!=` compare text exactly and the
//! orderings compare numbers when both sides are numbers, else text.
//! Whole numbers compare exactly, however long. A value alone holds when
//! the request has it and it is not empty. Any comparison but `!=` is false
//! when a side is `null`, except `== null` itself.

use crate::config::ConfigError;
use regex_lite::{Regex, RegexBuilder};
use std::cmp::Ordering;
use std::collections::BTreeMap;

/// Conditions longer than this are refused (bytes).
pub const MAX_CONDITION_BYTES: usize = 4096;
/// Parentheses and negations nest at most this deep.
pub const MAX_DEPTH: usize = 32;
/// A list (`in [..]`) has at most this many items.
pub const MAX_LIST_ITEMS: usize = 1024;
/// A regular expression compiles to at most this many bytes.
const MAX_REGEX_BYTES: usize = 256 * 1024;

/// A value of the request a condition reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reference {
    Method,
    /// The path without the query string.
    Path,
    /// The host, without a port.
    Host,
    /// `X-Ca-Stage`, `RELEASE` when absent.
    Stage,
    /// The authenticated app's key.
    App,
    AppName,
    /// The authenticated user (a Basic user, a token's subject, the
    /// authorizer's user).
    User,
    /// The client's address, as the policy's `client_address` resolves it.
    ClientIp,
    Query(String),
    /// By lower-case name.
    Header(String),
    /// A variable of the API's path template.
    Param(String),
    Form(String),
    /// A field of a JSON body: object keys, and array indexes as numbers.
    Json(Vec<String>),
    /// The response's status.
    Status,
    /// A response header, by lower-case name.
    ResponseHeader(String),
    /// A field of a JSON response body.
    ResponseJson(Vec<String>),
}

/// What a condition is evaluated on: a request (access control, routing),
/// or a response with the request it answers (error mapping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Request,
    Response,
}

impl std::fmt::Display for Reference {
    /// As a condition names it (`query.q`, `json.a.b`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reference::Method => f.write_str("method"),
            Reference::Path => f.write_str("path"),
            Reference::Host => f.write_str("host"),
            Reference::Stage => f.write_str("stage"),
            Reference::App => f.write_str("app"),
            Reference::AppName => f.write_str("app_name"),
            Reference::User => f.write_str("user"),
            Reference::ClientIp => f.write_str("client_ip"),
            Reference::Query(name) => write!(f, "query.{name}"),
            Reference::Header(name) => write!(f, "header.{name}"),
            Reference::Param(name) => write!(f, "param.{name}"),
            Reference::Form(name) => write!(f, "form.{name}"),
            Reference::Json(path) => write!(f, "json.{}", path.join(".")),
            Reference::Status => f.write_str("status"),
            Reference::ResponseHeader(name) => write!(f, "response.header.{name}"),
            Reference::ResponseJson(path) => write!(f, "response.json.{}", path.join(".")),
        }
    }
}

impl Reference {
    /// Read from the request body.
    pub fn in_body(&self) -> bool {
        matches!(self, Reference::Form(_) | Reference::Json(_))
    }

    /// Read from the response body.
    pub fn in_response_body(&self) -> bool {
        matches!(self, Reference::ResponseJson(_))
    }

    /// Whether a condition of `phase` can read it: the response's values
    /// exist only for a response; a request body is not kept for it.
    fn readable_in(&self, phase: Phase) -> Result<(), String> {
        let of_response = matches!(
            self,
            Reference::Status | Reference::ResponseHeader(_) | Reference::ResponseJson(_)
        );
        match phase {
            Phase::Request if of_response => Err(format!(
                "`{self}` is a value of the response: only a response condition (error \
                 mapping) reads it"
            )),
            Phase::Response if self.in_body() => Err(format!(
                "`{self}`: the request body is not kept for the response (read \
                 `response.json.N` for the response's)"
            )),
            _ => Ok(()),
        }
    }

    /// A named value (`query.q`, `json.a.b`, `app`).
    fn named(space: &str, name: Option<String>) -> Result<Self, String> {
        let needs_name = |name: Option<String>| {
            name.filter(|n| !n.is_empty())
                .ok_or_else(|| format!("`{space}` needs a name: `{space}.NAME`"))
        };
        let no_name = |reference: Reference| match &name {
            Some(_) => Err(format!("`{space}` takes no name")),
            None => Ok(reference),
        };
        match space {
            "method" => no_name(Reference::Method),
            "path" => no_name(Reference::Path),
            "host" => no_name(Reference::Host),
            "stage" => no_name(Reference::Stage),
            "app" => no_name(Reference::App),
            "app_name" => no_name(Reference::AppName),
            "user" => no_name(Reference::User),
            "client_ip" => no_name(Reference::ClientIp),
            "status" => no_name(Reference::Status),
            "response" => {
                let name = needs_name(name)?;
                let (part, rest) = name.split_once('.').unwrap_or((&name, ""));
                match part {
                    "status" if rest.is_empty() => Ok(Reference::Status),
                    "header" if !rest.is_empty() => {
                        Ok(Reference::ResponseHeader(rest.to_ascii_lowercase()))
                    }
                    "json" if !rest.is_empty() => Ok(Reference::ResponseJson(
                        rest.split('.').map(str::to_string).collect(),
                    )),
                    _ => Err(format!(
                        "`response.{name}`: the response's values are `status`, \
                         `response.header.N` and `response.json.N`"
                    )),
                }
            }
            "query" => Ok(Reference::Query(needs_name(name)?)),
            "header" => Ok(Reference::Header(needs_name(name)?.to_ascii_lowercase())),
            "param" => Ok(Reference::Param(needs_name(name)?)),
            "form" => Ok(Reference::Form(needs_name(name)?)),
            "json" => Ok(Reference::Json(
                needs_name(name)?.split('.').map(str::to_string).collect(),
            )),
            other => Err(format!(
                "unknown value `{other}` (method, path, host, stage, app, app_name, user, \
                 client_ip, query.N, header.N, param.N, form.N, json.N; for a response \
                 status, response.header.N, response.json.N)"
            )),
        }
    }

    /// A parameter declared Alibaba-style, `Location` or `Location:Name`
    /// (`Query:action`, `System:CaAppKey`, `BodyJsonField:$.a.b`). For a
    /// response (`phase`), `StatusCode`, and `Header` and `BodyJsonField`
    /// are the response's, as in Alibaba's error mapping.
    pub fn from_location(location: &str, phase: Phase) -> Result<Self, String> {
        let (place, name) = match location.split_once(':') {
            Some((place, name)) => (place.trim(), Some(name.trim())),
            None => (location.trim(), None),
        };
        let named = |name: Option<&str>| {
            name.filter(|n| !n.is_empty())
                .map(str::to_string)
                .ok_or_else(|| format!("`{place}` needs a name: `{place}:NAME`"))
        };
        let response = phase == Phase::Response;
        match place.to_ascii_lowercase().as_str() {
            "statuscode" if response => Ok(Reference::Status),
            "header" if response => {
                Ok(Reference::ResponseHeader(named(name)?.to_ascii_lowercase()))
            }
            "bodyjsonfield" | "bodyjson" if response => {
                json_path(&named(name)?).map(Reference::ResponseJson)
            }
            "method" => Ok(Reference::Method),
            "path" if name.is_none() => Ok(Reference::Path),
            "path" | "parameter" => Ok(Reference::Param(named(name)?)),
            "header" => Ok(Reference::Header(named(name)?.to_ascii_lowercase())),
            "query" => Ok(Reference::Query(named(name)?)),
            "form" => Ok(Reference::Form(named(name)?)),
            "bodyjsonfield" | "bodyjson" => {
                let path = named(name)?;
                json_path(&path).map(Reference::Json)
            }
            "system" => match named(name)?.as_str() {
                "CaAppKey" | "CaAppId" => Ok(Reference::App),
                "CaAppName" => Ok(Reference::AppName),
                "CaClientIp" => Ok(Reference::ClientIp),
                "CaStage" => Ok(Reference::Stage),
                "CaDomain" => Ok(Reference::Host),
                "CaHttpMethod" => Ok(Reference::Method),
                other => Err(format!(
                    "system parameter `{other}` is not one of CaAppKey, CaAppId, CaAppName, \
                     CaClientIp, CaStage, CaDomain, CaHttpMethod"
                )),
            },
            "token" => Err(
                "`Token` values: copy the claim to a header with sign-auth's \
                 claims_to_headers and read `Header:NAME`"
                    .into(),
            ),
            "statuscode" => Err(
                "`StatusCode` is the response's: only a response condition (error mapping) \
                 reads it"
                    .into(),
            ),
            _ => Err(format!(
                "unknown location `{place}` (Method, Path, Header, Query, Form, Parameter, \
                 BodyJsonField, System{})",
                if response { ", StatusCode" } else { "" }
            )),
        }
    }
}

/// `$.a.b[0]` (or `a.b.0`) as path steps.
fn json_path(path: &str) -> Result<Vec<String>, String> {
    let path = path.strip_prefix('$').unwrap_or(path);
    let mut steps = Vec::new();
    for part in path.split('.').filter(|part| !part.is_empty()) {
        let (key, indexes) = part.split_once('[').unwrap_or((part, ""));
        if !key.is_empty() {
            steps.push(key.to_string());
        }
        if !indexes.is_empty() {
            for index in format!("[{indexes}").split('[').skip(1) {
                let index = index
                    .strip_suffix(']')
                    .filter(|i| i.parse::<usize>().is_ok())
                    .ok_or_else(|| format!("`{path}`: an index is `[N]`"))?;
                steps.push(index.to_string());
            }
        }
    }
    if steps.is_empty() {
        return Err(format!("`{path}` names no field"));
    }
    Ok(steps)
}

/// Where a condition's values come from, for one request.
pub trait Facts {
    fn lookup(&mut self, reference: &Reference) -> Option<String>;
}

/// A request's values, each read at most once for every condition of one
/// [`Compiler`]'s table.
pub struct Values<F> {
    facts: F,
    cache: Vec<Option<Option<String>>>,
}

impl<F: Facts> Values<F> {
    pub fn new(facts: F, references: &[Reference]) -> Self {
        Self {
            facts,
            cache: vec![None; references.len()],
        }
    }

    /// A value's text by its index (see [`Compiler::value`]), read once;
    /// `None` when the request or response lacks it.
    pub fn text(&mut self, references: &[Reference], index: usize) -> Option<&str> {
        let slot = self.cache.get_mut(index)?;
        if slot.is_none() {
            let reference = references.get(index)?;
            *slot = Some(self.facts.lookup(reference));
        }
        slot.as_ref().and_then(Option::as_deref)
    }

    /// Two operands' text, each `None` for `null` or a value the request
    /// does not have (both read first, then borrowed together).
    fn pair<'v>(
        &'v mut self,
        references: &[Reference],
        left: &'v Operand,
        right: &'v Operand,
    ) -> (Option<&'v str>, Option<&'v str>) {
        for operand in [left, right] {
            if let Operand::Value(index) = operand {
                self.text(references, *index);
            }
        }
        (self.cached(left), self.cached(right))
    }

    fn cached<'v>(&'v self, operand: &'v Operand) -> Option<&'v str> {
        match operand {
            Operand::Value(index) => self.cache.get(*index)?.as_ref()?.as_deref(),
            Operand::Literal(literal) => literal.as_text(),
        }
    }

    pub fn facts(&mut self) -> &mut F {
        &mut self.facts
    }
}

/// A constant of a condition: text, a number (kept as written; what it
/// is compared with must be a number too), or `null`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Literal {
    Text(String),
    Number(String),
    Null,
}

impl Literal {
    fn as_text(&self) -> Option<&str> {
        match self {
            Literal::Text(text) | Literal::Number(text) => Some(text),
            Literal::Null => None,
        }
    }

    /// Whether `value` is this constant: the same text, the same number,
    /// never for `null`.
    fn equals(&self, value: &str) -> bool {
        match self {
            Literal::Text(text) => text == value,
            Literal::Number(number) => compare_numbers(value, number) == Some(Ordering::Equal),
            Literal::Null => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Value(usize),
    Literal(Literal),
}

impl Operand {
    fn is(&self, literal: fn(&Literal) -> bool) -> bool {
        matches!(self, Operand::Literal(l) if literal(l))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compare {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextTest {
    Contains,
    StartsWith,
    EndsWith,
}

#[derive(Debug, Clone)]
enum Expr {
    Constant(bool),
    Present(usize),
    Compare(Operand, Compare, Operand),
    In(Operand, Vec<Literal>),
    Matches(Operand, Regex),
    Text(Operand, TextTest, Operand),
    Not(Box<Expr>),
    All(Vec<Expr>),
    Any(Vec<Expr>),
}

/// A compiled condition. Its values are indexes into the table of the
/// [`Compiler`] that made it.
#[derive(Debug, Clone)]
pub struct Condition {
    expr: Expr,
}

impl Condition {
    /// Whether the condition holds for the request behind `values` (made
    /// over the same table).
    pub fn holds<F: Facts>(&self, references: &[Reference], values: &mut Values<F>) -> bool {
        eval(&self.expr, references, values)
    }
}

fn eval<F: Facts>(expr: &Expr, refs: &[Reference], values: &mut Values<F>) -> bool {
    match expr {
        Expr::Constant(value) => *value,
        Expr::Present(index) => values.text(refs, *index).is_some_and(|v| !v.is_empty()),
        Expr::Not(inner) => !eval(inner, refs, values),
        Expr::All(all) => all.iter().all(|e| eval(e, refs, values)),
        Expr::Any(any) => any.iter().any(|e| eval(e, refs, values)),
        Expr::Compare(left_operand, op, right_operand) => {
            // A number written as one asks for numbers: a value that is not
            // one fails the comparison (`!=` holds), as `null` does.
            let numeric = [left_operand, right_operand]
                .iter()
                .any(|o| o.is(|l| matches!(l, Literal::Number(_))));
            let with_null = [left_operand, right_operand]
                .iter()
                .any(|o| o.is(|l| *l == Literal::Null));
            let ordering = match values.pair(refs, left_operand, right_operand) {
                (Some(left), Some(right)) if numeric => compare_numbers(left, right),
                (Some(left), Some(right)) if matches!(op, Compare::Eq | Compare::Ne) => {
                    Some(left.cmp(right))
                }
                (Some(left), Some(right)) => {
                    Some(compare_numbers(left, right).unwrap_or_else(|| left.cmp(right)))
                }
                // `null == null`, and a value the request lacks `== null`.
                (None, None) if with_null => Some(Ordering::Equal),
                _ => None,
            };
            match ordering {
                Some(ordering) => op.holds(ordering),
                None => *op == Compare::Ne,
            }
        }
        Expr::In(left, items) => match values.pair(refs, left, left).0 {
            Some(left) => items.iter().any(|item| item.equals(left)),
            None => items.contains(&Literal::Null),
        },
        Expr::Matches(left, regex) => values
            .pair(refs, left, left)
            .0
            .is_some_and(|v| regex.is_match(v)),
        Expr::Text(left, test, right) => match values.pair(refs, left, right) {
            (Some(left), Some(right)) => match test {
                TextTest::Contains => left.contains(right),
                TextTest::StartsWith => left.starts_with(right),
                TextTest::EndsWith => left.ends_with(right),
            },
            _ => false,
        },
    }
}

/// Two numbers compared, `None` when either is not one. Whole numbers
/// are compared exactly, however long (`12345678901234567` and
/// `12345678901234568` differ); others as 64-bit floats.
fn compare_numbers(left: &str, right: &str) -> Option<Ordering> {
    if let (Some(l), Some(r)) = (integer(left), integer(right)) {
        return Some(compare_integers(l, r));
    }
    number(left)?.partial_cmp(&number(right)?)
}

/// A whole number as (negative, digits without leading zeros).
fn integer(text: &str) -> Option<(bool, &str)> {
    let text = text.trim();
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let digits = digits.trim_start_matches('0');
    // -0 is 0.
    Some((negative && !digits.is_empty(), digits))
}

fn compare_integers((l_negative, l): (bool, &str), (r_negative, r): (bool, &str)) -> Ordering {
    let magnitude = l.len().cmp(&r.len()).then_with(|| l.cmp(r));
    match (l_negative, r_negative) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
    }
}

fn number(text: &str) -> Option<f64> {
    let text = text.trim();
    if text.is_empty()
        || !text
            .bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
    {
        return None;
    }
    text.parse::<f64>().ok().filter(|n| n.is_finite())
}

impl Compare {
    fn holds(self, ordering: Ordering) -> bool {
        match self {
            Compare::Eq => ordering == Ordering::Equal,
            Compare::Ne => ordering != Ordering::Equal,
            Compare::Lt => ordering == Ordering::Less,
            Compare::Le => ordering != Ordering::Greater,
            Compare::Gt => ordering == Ordering::Greater,
            Compare::Ge => ordering != Ordering::Less,
        }
    }
}

/// Compiles the conditions of one policy scope over one table of values,
/// with the parameters the scope declares Alibaba-style (`$name`).
#[derive(Debug, Default)]
pub struct Compiler {
    declared: BTreeMap<String, Reference>,
    references: Vec<Reference>,
    phase: Phase,
}

impl Compiler {
    /// `parameters`: name → `Location:Name`; an error names the parameter
    /// (`parameters.userId`).
    pub fn new(parameters: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        Self::with_phase(parameters, Phase::Request)
    }

    /// A compiler of conditions on a response (and its request).
    pub fn with_phase(
        parameters: &BTreeMap<String, String>,
        phase: Phase,
    ) -> Result<Self, ConfigError> {
        let mut declared = BTreeMap::new();
        for (name, location) in parameters {
            let at = format!("parameters.{name}");
            if !valid_name(name) {
                return Err(ConfigError::new(
                    at,
                    "a parameter's name is letters, digits and `_`, not starting with a digit",
                ));
            }
            let reference = Reference::from_location(location, phase)
                .and_then(|reference| reference.readable_in(phase).map(|()| reference))
                .map_err(|err| ConfigError::new(at, err))?;
            declared.insert(name.clone(), reference);
        }
        Ok(Self {
            declared,
            references: Vec::new(),
            phase,
        })
    }

    /// [`Compiler::value`] of a declared parameter named as Alibaba names
    /// it (`resultCode`), or of a value (`$resultCode`, `app`,
    /// `response.json.code`).
    pub fn named_value(&mut self, text: &str) -> Result<usize, String> {
        if self.declared.contains_key(text.trim()) {
            self.value(&format!("${}", text.trim()))
        } else {
            self.value(text)
        }
    }

    /// Compiles a single value (`$name`, `response.json.code`, `status`),
    /// read later with [`Values::text`]; its index among the references.
    pub fn value(&mut self, text: &str) -> Result<usize, String> {
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens,
            at: 0,
            depth: 0,
            compiler: self,
        };
        let operand = parser.operand()?;
        if let Some(token) = parser.tokens.get(parser.at) {
            return Err(format!("at {}: unexpected {}", token.at + 1, token.kind));
        }
        match operand {
            Operand::Value(index) => Ok(index),
            Operand::Literal(_) => Err("a value is expected, not a literal".into()),
        }
    }

    /// Compiles `text`; an error says where in it and why.
    pub fn compile(&mut self, text: &str) -> Result<Condition, String> {
        if text.len() > MAX_CONDITION_BYTES {
            return Err(format!(
                "longer than {MAX_CONDITION_BYTES} bytes ({} bytes)",
                text.len()
            ));
        }
        let tokens = lex(text)?;
        let mut parser = Parser {
            tokens,
            at: 0,
            depth: 0,
            compiler: self,
        };
        let expr = parser.expr()?;
        if let Some(token) = parser.tokens.get(parser.at) {
            return Err(format!("at {}: unexpected {}", token.at + 1, token.kind));
        }
        Ok(Condition { expr })
    }

    /// Every `param.` value the conditions read is a variable of the
    /// rule's path template (`variables`).
    pub fn check_path_variables(&self, variables: &[&str]) -> Result<(), String> {
        for reference in &self.references {
            if let Reference::Param(name) = reference {
                if !variables.contains(&name.as_str()) {
                    let known = if variables.is_empty() {
                        "none".to_string()
                    } else {
                        variables.join(", ")
                    };
                    return Err(format!(
                        "`param.{name}`: the rule's path has no variable `{{{name}}}` (its variables: {known})"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The values the compiled conditions read, by index.
    pub fn references(&self) -> &[Reference] {
        &self.references
    }

    pub fn into_references(self) -> Vec<Reference> {
        self.references
    }

    fn intern(&mut self, reference: Reference) -> usize {
        if let Some(index) = self.references.iter().position(|r| *r == reference) {
            return index;
        }
        self.references.push(reference);
        self.references.len() - 1
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    /// A name: `app`, `query.q`, `header.x-user`, and the keywords.
    Word(String),
    /// `$name`.
    Declared(String),
    Text(String),
    /// As written.
    Number(String),
    Op(&'static str),
    Open,
    Close,
    OpenList,
    CloseList,
    Comma,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kind::Word(word) => write!(f, "`{word}`"),
            Kind::Declared(name) => write!(f, "`${name}`"),
            Kind::Text(_) => f.write_str("a string"),
            Kind::Number(_) => f.write_str("a number"),
            Kind::Op(op) => write!(f, "`{op}`"),
            Kind::Open => f.write_str("`(`"),
            Kind::Close => f.write_str("`)`"),
            Kind::OpenList => f.write_str("`[`"),
            Kind::CloseList => f.write_str("`]`"),
            Kind::Comma => f.write_str("`,`"),
        }
    }
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    /// Byte offset in the condition.
    at: usize,
}

const OPERATORS: [&str; 13] = [
    "==", "!=", "<>", "<=", ">=", "=~", "!~", "&&", "||", "<", ">", "=", "!",
];

fn lex(text: &str) -> Result<Vec<Token>, String> {
    let bytes = text.as_bytes();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\r' | b'\n' => {
                i += 1;
                continue;
            }
            b'(' => Kind::Open,
            b')' => Kind::Close,
            b'[' => Kind::OpenList,
            b']' => Kind::CloseList,
            b',' => Kind::Comma,
            b'\'' | b'"' => {
                let (value, end) = string(text, i)?;
                tokens.push(Token {
                    kind: Kind::Text(value),
                    at: start,
                });
                i = end;
                continue;
            }
            b'$' => {
                let end = word_end(bytes, i + 1, false);
                let name = &text[i + 1..end];
                if name.is_empty() {
                    return Err(format!("at {}: `$` needs a parameter's name", i + 1));
                }
                tokens.push(Token {
                    kind: Kind::Declared(name.to_string()),
                    at: start,
                });
                i = end;
                continue;
            }
            b'0'..=b'9' | b'-' | b'+' if starts_number(bytes, i) => {
                let mut end = i + 1;
                while end < bytes.len()
                    && (bytes[end].is_ascii_digit()
                        || bytes[end] == b'.'
                        || ((bytes[end] == b'e' || bytes[end] == b'E')
                            && bytes
                                .get(end + 1)
                                .is_some_and(|b| b.is_ascii_digit() || *b == b'-' || *b == b'+'))
                        || ((bytes[end] == b'-' || bytes[end] == b'+')
                            && matches!(bytes[end - 1], b'e' | b'E')))
                {
                    end += 1;
                }
                let literal = &text[i..end];
                if number(literal).is_none() {
                    return Err(format!("at {}: `{literal}` is not a number", i + 1));
                }
                tokens.push(Token {
                    kind: Kind::Number(literal.to_string()),
                    at: start,
                });
                i = end;
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = word_end(bytes, i, true);
                tokens.push(Token {
                    kind: Kind::Word(text[i..end].to_string()),
                    at: start,
                });
                i = end;
                continue;
            }
            _ => {
                let Some(op) = OPERATORS.iter().find(|op| text[i..].starts_with(**op)) else {
                    let ch = text[i..].chars().next().unwrap_or('?');
                    return Err(format!("at {}: unexpected `{ch}`", i + 1));
                };
                tokens.push(Token {
                    kind: Kind::Op(op),
                    at: start,
                });
                i += op.len();
                continue;
            }
        };
        tokens.push(Token { kind, at: start });
        i += 1;
    }
    Ok(tokens)
}

fn starts_number(bytes: &[u8], i: usize) -> bool {
    match bytes[i] {
        b'-' | b'+' => bytes.get(i + 1).is_some_and(u8::is_ascii_digit),
        _ => true,
    }
}

/// The end of a name: letters, digits, `_`, and (in a dotted name) `.`
/// and `-` (header names).
fn word_end(bytes: &[u8], mut i: usize, dotted: bool) -> usize {
    while i < bytes.len()
        && (bytes[i].is_ascii_alphanumeric()
            || bytes[i] == b'_'
            || (dotted && (bytes[i] == b'.' || bytes[i] == b'-')))
    {
        i += 1;
    }
    i
}

/// A quoted string from `start` (its quote); the value and the offset
/// after the closing quote. `\` escapes the next character.
fn string(text: &str, start: usize) -> Result<(String, usize), String> {
    let quote = text[start..].chars().next().unwrap_or('\'');
    let mut value = String::new();
    let mut chars = text[start + 1..].char_indices();
    while let Some((offset, ch)) = chars.next() {
        match ch {
            // Only quotes and the backslash are escaped: a regular
            // expression keeps its own backslashes (`'^\d+$'`).
            '\\' => match chars.clone().next() {
                Some((_, escaped @ ('\'' | '"' | '\\'))) => {
                    chars.next();
                    value.push(escaped);
                }
                _ => value.push('\\'),
            },
            c if c == quote => return Ok((value, start + 1 + offset + 1)),
            c => value.push(c),
        }
    }
    Err(format!("at {}: a string is not closed", start + 1))
}

struct Parser<'c> {
    tokens: Vec<Token>,
    at: usize,
    depth: usize,
    compiler: &'c mut Compiler,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Kind> {
        self.tokens.get(self.at).map(|t| &t.kind)
    }

    fn is_word(&self, words: &[&str]) -> bool {
        matches!(self.peek(), Some(Kind::Word(w)) if words.contains(&w.as_str()))
    }

    fn is_op(&self, ops: &[&str]) -> bool {
        matches!(self.peek(), Some(Kind::Op(op)) if ops.contains(op))
    }

    fn here(&self) -> String {
        match self.tokens.get(self.at) {
            Some(token) => format!("at {}", token.at + 1),
            None => "at the end".into(),
        }
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.tokens.get(self.at) {
            Some(token) => format!("at {}: {wanted}, not {}", token.at + 1, token.kind),
            None => format!("at the end: {wanted}"),
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut any = vec![self.all()?];
        while self.is_op(&["||"]) || self.is_word(&["or"]) {
            self.at += 1;
            any.push(self.all()?);
        }
        Ok(if any.len() == 1 {
            any.remove(0)
        } else {
            Expr::Any(any)
        })
    }

    fn all(&mut self) -> Result<Expr, String> {
        let mut all = vec![self.unary()?];
        while self.is_op(&["&&"]) || self.is_word(&["and"]) {
            self.at += 1;
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 {
            all.remove(0)
        } else {
            Expr::All(all)
        })
    }

    fn nested<T>(
        &mut self,
        inner: impl FnOnce(&mut Self) -> Result<T, String>,
    ) -> Result<T, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!("{}: nested deeper than {MAX_DEPTH}", self.here()));
        }
        let result = inner(self);
        self.depth -= 1;
        result
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.is_op(&["!"]) || self.is_word(&["not"]) {
            self.at += 1;
            return self.nested(|p| Ok(Expr::Not(Box::new(p.unary()?))));
        }
        if self.peek() == Some(&Kind::Open) {
            self.at += 1;
            let expr = self.nested(Self::expr)?;
            if self.peek() != Some(&Kind::Close) {
                return Err(self.unexpected("`)` expected"));
            }
            self.at += 1;
            return Ok(expr);
        }
        if self.is_word(&["true", "false"]) {
            let value = self.is_word(&["true"]);
            self.at += 1;
            return Ok(Expr::Constant(value));
        }
        self.predicate()
    }

    fn predicate(&mut self) -> Result<Expr, String> {
        let left = self.operand()?;
        let compare = match self.peek() {
            Some(Kind::Op("==" | "=")) => Some(Compare::Eq),
            Some(Kind::Op("!=" | "<>")) => Some(Compare::Ne),
            Some(Kind::Op("<")) => Some(Compare::Lt),
            Some(Kind::Op("<=")) => Some(Compare::Le),
            Some(Kind::Op(">")) => Some(Compare::Gt),
            Some(Kind::Op(">=")) => Some(Compare::Ge),
            _ => None,
        };
        if let Some(compare) = compare {
            self.at += 1;
            let right = self.operand()?;
            return Ok(Expr::Compare(left, compare, right));
        }
        if self.is_word(&["in"]) {
            self.at += 1;
            return Ok(Expr::In(left, self.list()?));
        }
        if self.is_word(&["not"])
            && matches!(self.tokens.get(self.at + 1).map(|t| &t.kind), Some(Kind::Word(w)) if w == "in")
        {
            self.at += 2;
            return Ok(Expr::Not(Box::new(Expr::In(left, self.list()?))));
        }
        if self.is_word(&["matches"]) || self.is_op(&["=~", "!~"]) {
            let negated = self.is_op(&["!~"]);
            self.at += 1;
            let regex = self.regex()?;
            let matches = Expr::Matches(left, regex);
            return Ok(if negated {
                Expr::Not(Box::new(matches))
            } else {
                matches
            });
        }
        let text_test = match self.peek() {
            Some(Kind::Word(w)) if w == "contains" => Some(TextTest::Contains),
            Some(Kind::Word(w)) if w == "starts_with" => Some(TextTest::StartsWith),
            Some(Kind::Word(w)) if w == "ends_with" => Some(TextTest::EndsWith),
            _ => None,
        };
        if let Some(test) = text_test {
            self.at += 1;
            return Ok(Expr::Text(left, test, self.operand()?));
        }
        match left {
            Operand::Value(index) => Ok(Expr::Present(index)),
            Operand::Literal(_) => Err(self.unexpected("a comparison expected after a constant")),
        }
    }

    fn operand(&mut self) -> Result<Operand, String> {
        let Some(token) = self.tokens.get(self.at).cloned() else {
            return Err(self.unexpected("a value expected"));
        };
        self.at += 1;
        let at = token.at + 1;
        let reference = match token.kind {
            Kind::Text(text) => return Ok(Operand::Literal(Literal::Text(text))),
            Kind::Number(number) => return Ok(Operand::Literal(Literal::Number(number))),
            Kind::Word(word) if word == "null" => return Ok(Operand::Literal(Literal::Null)),
            Kind::Declared(name) => self
                .compiler
                .declared
                .get(&name)
                .cloned()
                .ok_or_else(|| format!("at {at}: `${name}` is not among `parameters`"))?,
            Kind::Word(word) if is_keyword(&word) => {
                return Err(format!("at {at}: a value expected, not `{word}`"));
            }
            Kind::Word(word) => {
                let (space, name) = match word.split_once('.') {
                    Some((space, name)) => (space.to_string(), Some(name.to_string())),
                    None => (word, None),
                };
                // `header['x.odd']`: a name that is not a plain word.
                let name = if name.is_none() && self.peek() == Some(&Kind::OpenList) {
                    let Some(Kind::Text(name)) = self.tokens.get(self.at + 1).map(|t| &t.kind)
                    else {
                        return Err(format!("at {at}: `{space}[` takes a quoted name"));
                    };
                    let name = name.clone();
                    if self.tokens.get(self.at + 2).map(|t| &t.kind) != Some(&Kind::CloseList) {
                        return Err(format!("at {at}: `]` expected after the name"));
                    }
                    self.at += 3;
                    Some(name)
                } else {
                    name
                };
                Reference::named(&space, name)
                    .and_then(|reference| {
                        reference
                            .readable_in(self.compiler.phase)
                            .map(|()| reference)
                    })
                    .map_err(|err| format!("at {at}: {err}"))?
            }
            other => return Err(format!("at {at}: a value expected, not {other}")),
        };
        Ok(Operand::Value(self.compiler.intern(reference)))
    }

    fn list(&mut self) -> Result<Vec<Literal>, String> {
        if self.peek() != Some(&Kind::OpenList) {
            return Err(self.unexpected("`[` expected after `in`"));
        }
        self.at += 1;
        let mut items = Vec::new();
        loop {
            if self.peek() == Some(&Kind::CloseList) && items.is_empty() {
                self.at += 1;
                return Ok(items);
            }
            let item = match self.tokens.get(self.at).map(|t| &t.kind) {
                Some(Kind::Text(text)) => Literal::Text(text.clone()),
                Some(Kind::Number(number)) => Literal::Number(number.clone()),
                Some(Kind::Word(word)) if word == "null" => Literal::Null,
                _ => return Err(self.unexpected("a string, number or null expected in a list")),
            };
            self.at += 1;
            items.push(item);
            if items.len() > MAX_LIST_ITEMS {
                return Err(format!(
                    "{}: a list has at most {MAX_LIST_ITEMS} items",
                    self.here()
                ));
            }
            match self.peek() {
                Some(Kind::Comma) => self.at += 1,
                Some(Kind::CloseList) => {
                    self.at += 1;
                    return Ok(items);
                }
                _ => return Err(self.unexpected("`,` or `]` expected")),
            }
        }
    }

    fn regex(&mut self) -> Result<Regex, String> {
        let Some(Token {
            kind: Kind::Text(pattern),
            at,
        }) = self.tokens.get(self.at).cloned()
        else {
            return Err(self.unexpected("a quoted regular expression expected"));
        };
        self.at += 1;
        RegexBuilder::new(&pattern)
            .size_limit(MAX_REGEX_BYTES)
            .build()
            .map_err(|err| format!("at {}: bad regular expression: {err}", at + 1))
    }
}

fn is_keyword(word: &str) -> bool {
    matches!(
        word,
        "and"
            | "or"
            | "not"
            | "in"
            | "matches"
            | "contains"
            | "starts_with"
            | "ends_with"
            | "true"
            | "false"
    )
}

mod request;
pub mod rules;
pub use request::{request_headers_read, Body, RequestValues, ResponseValues};

#[cfg(test)]
mod tests;
