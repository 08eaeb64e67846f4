//! The documentation cannot drift from the code: every relative link and
//! anchor in README.md and docs/ resolves, every JSON and YAML example
//! parses, a policy page's JSON configurations are accepted by that
//! filter's own parser, and the apis.yaml and OpenAPI examples go through
//! gatewayctl.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use gatewayctl::check::compile_section;
use gatewayctl::generate::Section;
use gatewayctl::source::Source;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut dirs = vec![root().join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("docs/").flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                pages.push(path);
            }
        }
    }
    pages.sort();
    pages
}

fn name(page: &Path) -> String {
    page.strip_prefix(root())
        .unwrap_or(page)
        .display()
        .to_string()
}

/// A fenced block: its info string, first line number and text.
struct Block {
    info: String,
    line: usize,
    text: String,
}

/// The fenced code blocks, and the lines outside them.
fn split(markdown: &str) -> (Vec<Block>, Vec<(usize, String)>) {
    let mut blocks = Vec::new();
    let mut prose = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        match &mut open {
            Some(block) if trimmed.starts_with("```") => {
                blocks.push(std::mem::replace(
                    block,
                    Block {
                        info: String::new(),
                        line: 0,
                        text: String::new(),
                    },
                ));
                open = None;
            }
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            None if trimmed.starts_with("```") => {
                open = Some(Block {
                    info: trimmed.trim_start_matches('`').trim().to_string(),
                    line: index + 2,
                    text: String::new(),
                });
            }
            None => prose.push((index + 1, line.to_string())),
        }
    }
    (blocks, prose)
}

/// GitHub's anchors of a page's headings (`-1`, `-2` for repeats).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let (_, prose) = split(markdown);
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out = BTreeSet::new();
    for (_, line) in prose {
        let Some(heading) = line.strip_prefix('#') else {
            continue;
        };
        let heading = heading.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let slug: String = heading
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 1;
        while seen.contains(&unique) {
            unique = format!("{slug}-{n}");
            n += 1;
        }
        seen.insert(unique.clone());
        out.insert(unique);
    }
    out
}

/// `[text](target)` targets in a line.
fn links(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            out.push(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    out
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        let (_, prose) = split(&text);
        for (line_number, line) in prose {
            for target in links(&line) {
                if target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let (file, anchor) = target.split_once('#').unwrap_or((target.as_str(), ""));
                let file = if file.is_empty() {
                    page.clone()
                } else {
                    page.parent().expect("dir").join(file)
                };
                if !file.exists() {
                    broken.push(format!(
                        "{}:{line_number}: {target}: no such file",
                        name(&page)
                    ));
                    continue;
                }
                if !anchor.is_empty() {
                    let target_text = std::fs::read_to_string(&file).unwrap_or_default();
                    if !anchors(&target_text).contains(anchor) {
                        broken.push(format!(
                            "{}:{line_number}: {target}: no such heading",
                            name(&page)
                        ));
                    }
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// The policy a page under docs/policies/ documents.
fn page_section(page: &Path) -> Option<Section> {
    let stem = page.file_stem()?.to_str()?.replace('-', "_");
    Section::ALL.into_iter().find(|s| s.key() == stem)
}

#[test]
fn every_json_and_yaml_example_parses_and_policy_configs_are_accepted() {
    let mut failures = Vec::new();
    let mut configs = 0;
    let mut documents = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("page");
        let section = page_section(&page);
        let (blocks, _) = split(&text);
        for block in blocks {
            let at = format!("{}:{}", name(&page), block.line);
            match block.info.as_str() {
                "json" => {
                    // A fragment (`"fleet": {…}`) is a field of an object.
                    let parsed = serde_json::from_str(&block.text)
                        .or_else(|_| serde_json::from_str(&format!("{{{}}}", block.text)));
                    let value: serde_json::Value = match parsed {
                        Ok(value) => value,
                        Err(err) => {
                            failures.push(format!("{at}: not JSON: {err}"));
                            continue;
                        }
                    };
                    // A page's JSON object is its filter's configuration
                    // unless the parser finds it is something else (a
                    // record, a rule, a response): an unknown top-level field.
                    if let (Some(section), true) = (section, value.is_object()) {
                        match compile_section(section, value.to_string().as_bytes()) {
                            Ok(()) => configs += 1,
                            Err(err)
                                if err.message.starts_with("unknown field")
                                    && !err.path.contains(['.', '[']) => {}
                            Err(err) => {
                                failures.push(format!("{at}: {} refuses it: {err}", section.key()))
                            }
                        }
                    }
                }
                "yaml" => {
                    if let Err(err) = yaml_rust2::YamlLoader::load_from_str(&block.text) {
                        failures.push(format!("{at}: not YAML: {err}"));
                        continue;
                    }
                    let is_apis = block.text.lines().any(|l| l == "version: 1")
                        && block.text.lines().any(|l| l.starts_with("apis:"));
                    let is_openapi = block.text.starts_with("openapi:");
                    if is_apis || is_openapi {
                        documents += 1;
                        let result = Source::parse(&at, &block.text)
                            .map_err(|e| vec![e])
                            .and_then(|source| {
                                if is_openapi {
                                    let imported = gatewayctl::openapi::import(&source)
                                        .map_err(|e| vec![e])?;
                                    let text = gatewayctl::openapi::to_apis_yaml(&imported, &at);
                                    let apis = Source::parse(&at, &text).map_err(|e| vec![e])?;
                                    gatewayctl::load(&apis).map(drop)
                                } else {
                                    gatewayctl::load(&source).map(drop)
                                }
                            });
                        if let Err(errors) = result {
                            for err in errors {
                                failures.push(format!("{at}: {err}"));
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        configs >= 8,
        "only {configs} policy configurations were checked"
    );
    assert!(
        documents >= 2,
        "only {documents} apis.yaml/OpenAPI examples were checked"
    );
}
