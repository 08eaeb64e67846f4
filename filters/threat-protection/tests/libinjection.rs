//! The detectors against libinjection's own test files and sample
//! payloads (`tests/libinjection`, BSD-3-Clause: see its `COPYING` and
//! `README.md`): each test file's input and the fingerprint
//! (`test-sqli-*`), the tokens (`test-tokens-*`) or the folded tokens
//! (`test-folding-*`) the C library (3.9.2) prints for it; each sample
//! line's fingerprint and XSS verdict by the C library.

use libinjectionrs::sqli::{SqliFlags, SqliState, SqliTokenizer, Token, TokenType};
use std::fs;
use std::path::Path;
use threat_protection::detect::{script_injection, sql_injection};

/// A test file's input and expected lines.
struct Case {
    input: Vec<u8>,
    expected: String,
}

/// Reads `--TEST--`, `--INPUT--` and `--EXPECTED--`; the input keeps its
/// bytes, its lines joined by `\n` (the C driver drops the last newline).
fn read_case(bytes: &[u8]) -> Case {
    let mut section = "";
    let mut input: Vec<&[u8]> = Vec::new();
    let mut expected: Vec<String> = Vec::new();
    for line in bytes.split(|b| *b == b'\n') {
        let trimmed = String::from_utf8_lossy(line).trim_end().to_string();
        if matches!(trimmed.as_str(), "--TEST--" | "--INPUT--" | "--EXPECTED--") {
            section = match trimmed.as_str() {
                "--INPUT--" => "input",
                "--EXPECTED--" => "expected",
                _ => "test",
            };
            continue;
        }
        match section {
            "input" => input.push(line),
            "expected" if !trimmed.is_empty() => expected.push(trimmed),
            _ => {}
        }
    }
    while input.last().is_some_and(|line| line.is_empty()) {
        input.pop();
    }
    Case {
        input: input.join(&b'\n'),
        expected: expected.join("\n"),
    }
}

/// A token as the C test driver prints it: its type, then its value
/// (strings with their quotes, variables with their `@`s).
fn print(token: &Token) -> String {
    let mut value = String::new();
    if token.token_type == TokenType::Variable {
        value.push_str(&"@".repeat(token.count.max(0) as usize));
    }
    let quoted = matches!(token.token_type, TokenType::String | TokenType::Variable);
    if quoted && token.str_open != 0 {
        value.push(char::from(token.str_open));
    }
    value.push_str(token.value_as_str());
    if quoted && token.str_close != 0 {
        value.push(char::from(token.str_close));
    }
    format!("{} {value}", token.token_type.to_char())
        .trim_end()
        .to_string()
}

/// The kinds of test files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Sqli,
    Tokens,
    Folding,
}

/// What the C driver prints for a file of `kind`.
fn run(kind: Kind, input: &[u8]) -> String {
    let flags = SqliFlags::FLAG_QUOTE_NONE | SqliFlags::FLAG_SQL_ANSI;
    match kind {
        Kind::Sqli => sql_injection(input).unwrap_or_default(),
        Kind::Tokens => {
            let mut tokenizer = SqliTokenizer::new(input, flags);
            let mut lines = Vec::new();
            while let Some(token) = tokenizer.next_token() {
                lines.push(print(&token));
            }
            lines.join("\n")
        }
        Kind::Folding => {
            let mut state = SqliState::new(input, flags);
            let count = state.fold_tokens();
            state.tokens[..count]
                .iter()
                .map(print)
                .collect::<Vec<_>>()
                .join("\n")
        }
    }
}

#[test]
fn every_sqli_tokens_and_folding_file_gives_what_the_c_library_prints() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libinjection/tests");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("test files")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    let mut failures = Vec::new();
    let mut counted = std::collections::BTreeMap::new();
    for name in &names {
        let kinds = [
            ("test-sqli-", Kind::Sqli),
            ("test-tokens-", Kind::Tokens),
            ("test-folding-", Kind::Folding),
        ];
        let kind = kinds
            .into_iter()
            .find(|(prefix, _)| name.starts_with(prefix))
            .map(|(_, kind)| kind);
        let Some(kind) = kind else { continue };
        let case = read_case(&fs::read(dir.join(name)).expect("read"));
        let got = run(kind, &case.input);
        *counted.entry(kind).or_insert(0) += 1;
        if got != case.expected {
            failures.push(format!(
                "{name}: input {:?}\n  expected {:?}\n  got      {:?}",
                String::from_utf8_lossy(&case.input),
                case.expected,
                got
            ));
        }
    }
    assert!(counted.values().sum::<usize>() > 100, "{counted:?}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_sample_payload_gets_the_c_librarys_verdicts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/libinjection/data");
    let mut names: Vec<_> = fs::read_dir(&dir)
        .expect("samples")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "txt"))
        .collect();
    names.sort();
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for path in &names {
        let bytes = fs::read(path).expect("read");
        lines.extend(
            bytes
                .split(|b| *b == b'\n')
                .filter(|line| !line.is_empty() && !line.starts_with(b"#"))
                .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
                .map(<[u8]>::to_vec),
        );
    }
    let expected = fs::read_to_string(dir.join("expected.tsv")).expect("expected.tsv");
    let expected: Vec<&str> = expected.lines().collect();
    assert_eq!(lines.len(), expected.len());
    let mut differences = Vec::new();
    let (mut sql, mut script) = (0, 0);
    for (line, verdicts) in lines.iter().zip(&expected) {
        let (fingerprint, xss) = verdicts.split_once('\t').expect("two columns");
        let got = (
            sql_injection(line).unwrap_or_default(),
            script_injection(line),
        );
        sql += usize::from(!fingerprint.is_empty());
        script += usize::from(xss == "1");
        if got != (fingerprint.to_string(), xss == "1") {
            differences.push(format!(
                "{:?}: C {verdicts:?}, got {got:?}",
                String::from_utf8_lossy(line)
            ));
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
    // The samples are mostly attacks: the C library finds most of them.
    assert!(sql > 300 && script > 100, "{sql} SQL, {script} XSS");
}
