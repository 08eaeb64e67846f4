//! Publishing a document to a running gateway without a restart: each
//! publish writes a new version of the gateway's dynamic configuration (the
//! route table, the clusters, every policy filter's configuration) into a
//! directory the Envoys of a [`crate::envoy::dynamic_bootstrap`] watch, and
//! swaps it in with one rename, as Kubernetes swaps a mounted ConfigMap:
//!
//! ```text
//! DIR/..data -> versions/000007        the version Envoy reads (swapped by rename)
//! DIR/routes.json -> ..data/routes.json, and one such link per resource file
//! DIR/versions/000007/                 the resources, the document, version.json
//! ```
//!
//! Versions are kept (the newest [`KEPT_VERSIONS`]); a rollback publishes an
//! earlier version's files again as a new version, so history only grows.
//!
//! A version serves a base document and, for each stage published on its
//! own (`--stage TEST`), that stage's document (`apis.TEST.yaml`): see
//! [`crate::stages`].

use crate::envoy::{self, Artifacts};
use crate::generate::{self, Generated};
use crate::source::{Source, SourceError};
use crate::stages::{self, RELEASE};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// How many versions a directory keeps; older ones are removed by a publish.
pub const KEPT_VERSIONS: usize = 50;

/// The link Envoy reads the current version through.
const CURRENT: &str = "..data";
const VERSIONS: &str = "versions";
const LOCK: &str = ".publish.lock";
/// Each version's record and base document.
const RECORD: &str = "version.json";
const DOCUMENT: &str = "apis.yaml";

/// What `changes` says of two equal documents.
const NO_CHANGE: &str = "no change";

/// The file of a stage's own document in a version.
fn stage_document(stage: &str) -> String {
    format!("apis.{stage}.yaml")
}

/// What a version is: written as `version.json` in its directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    pub version: u32,
    /// When it was published, RFC 3339 in UTC.
    pub published: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The file it was published from.
    pub source: String,
    /// The version that was current when this one was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<u32>,
    /// The version whose files this one publishes again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_of: Option<u32>,
    /// The one stage this version published to (none: every stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// What changed from `previous`, for people (`apis +orders ~search`).
    pub changes: String,
}

/// Who publishes and why, for the history.
#[derive(Debug, Clone, Default)]
pub struct Signature {
    pub author: Option<String>,
    pub message: Option<String>,
}

/// Why a publish or a rollback changed nothing.
#[derive(Debug)]
pub enum PublishError {
    /// The directory cannot be read or written.
    Io { path: PathBuf, error: io::Error },
    /// Another publish holds the directory's lock.
    Locked(PathBuf),
    /// No such version, or nothing to roll back to.
    NoVersion(String),
    /// The stage's document does not go with the others published.
    Invalid(Vec<SourceError>),
}

impl fmt::Display for PublishError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
            Self::Locked(path) => write!(
                f,
                "{}: another publish is running (remove the file if none is)",
                path.display()
            ),
            Self::NoVersion(why) => f.write_str(why),
            Self::Invalid(errors) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                f.write_str(&lines.join("\n"))
            }
        }
    }
}

impl std::error::Error for PublishError {}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PublishError + '_ {
    move |error| PublishError::Io {
        path: path.to_path_buf(),
        error,
    }
}

/// A checked document and what it was read from.
pub struct Publication<'a> {
    pub generated: &'a Generated,
    pub source: &'a Source,
    /// The document's text, kept with the version.
    pub text: &'a str,
    pub artifacts: &'a Artifacts,
    /// Published to this stage only, the others left as they are; none:
    /// to every stage (the stages' own documents are dropped).
    pub stage: Option<&'a str>,
}

/// The documents a version serves: the base one, and each stage's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Documents {
    pub base: String,
    /// Stage → its document's text.
    pub stages: BTreeMap<String, String>,
}

impl Documents {
    /// These documents with `text` published to `stage`: RELEASE's is the
    /// base document (the stages' own stay).
    fn with(mut self, stage: &str, text: &str) -> Self {
        if stage.eq_ignore_ascii_case(RELEASE) {
            self.base = text.to_string();
        } else {
            // One document per stage, whatever case it was named in.
            self.stages.retain(|s, _| !s.eq_ignore_ascii_case(stage));
            self.stages.insert(stage.to_string(), text.to_string());
        }
        self
    }

    /// The configuration serving all of them at once, checked; its errors
    /// are reported under `file`, the document being published.
    pub fn load(&self, file: &str, publishing: &str) -> Result<Generated, Vec<SourceError>> {
        let error = |message: String| {
            vec![SourceError {
                file: file.to_string(),
                line: None,
                path: String::new(),
                message,
            }]
        };
        let parse = |name: &str, text: &str| {
            Source::parse(name, text)
                .map(|source| source.value)
                .map_err(|err| vec![err])
        };
        let base = parse(DOCUMENT, &self.base)?;
        let mut stage_values = BTreeMap::new();
        for (stage, text) in &self.stages {
            stage_values.insert(stage.clone(), parse(&stage_document(stage), text)?);
        }
        let (merged, stage_only) =
            stages::merge(&base, &stage_values, Some(publishing)).map_err(error)?;
        let source = Source::unlocated(
            &format!("{file} (with the documents of the other stages)"),
            merged,
        );
        let generated = generate::generate_staged(&source, &stage_only).map_err(|e| vec![e])?;
        let errors = crate::check::check(&generated, &source);
        if errors.is_empty() {
            Ok(generated)
        } else {
            Err(errors)
        }
    }
}

/// The documents the current version of `dir` serves, if any.
pub fn current_documents(dir: &Path) -> Result<Option<Documents>, PublishError> {
    let Some(version) = current(dir)? else {
        return Ok(None);
    };
    documents_of(&version_dir(dir, version.version)).map(Some)
}

fn documents_of(version_dir: &Path) -> Result<Documents, PublishError> {
    let read = |path: PathBuf| fs::read_to_string(&path).map_err(io_error(&path));
    let mut documents = Documents {
        base: read(version_dir.join(DOCUMENT))?,
        stages: BTreeMap::new(),
    };
    for entry in fs::read_dir(version_dir).map_err(io_error(version_dir))? {
        let entry = entry.map_err(io_error(version_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(stage) = name
            .strip_prefix("apis.")
            .and_then(|rest| rest.strip_suffix(".yaml"))
        {
            documents
                .stages
                .insert(stage.to_string(), read(entry.path())?);
        }
    }
    Ok(documents)
}

/// What a publish did.
#[derive(Debug)]
pub struct Published {
    pub version: Version,
    /// The document changes what only a restart applies (the bootstrap's
    /// part of `gateway`).
    pub needs_restart: bool,
    /// What went wrong after the version was live (removing old versions).
    pub warnings: Vec<String>,
}

/// Publishes a checked document as the next version of `dir` (created if
/// missing) and makes it current.
pub fn publish(
    dir: &Path,
    publication: &Publication<'_>,
    signature: Signature,
) -> Result<Published, PublishError> {
    fs::create_dir_all(dir.join(VERSIONS)).map_err(io_error(dir))?;
    let _lock = Lock::take(dir)?;
    let current = current(dir)?;
    let before = match &current {
        Some(version) => Some(documents_of(&version_dir(dir, version.version))?),
        None => None,
    };
    let after = &publication.source.value;
    let (documents, change) = match (publication.stage, &before) {
        (None, _) => {
            let documents = Documents {
                base: publication.text.to_string(),
                stages: BTreeMap::new(),
            };
            let change = documents_changes(before.as_ref(), &documents);
            (documents, change)
        }
        (Some(stage), None) => {
            return Err(PublishError::NoVersion(format!(
                "{}: nothing is published there yet: publish the whole document (without \
                 --stage {stage}) first",
                dir.display()
            )))
        }
        (Some(stage), Some(before)) => {
            let was = before
                .stages
                .iter()
                .find(|(s, _)| s.eq_ignore_ascii_case(stage))
                .map_or(&before.base, |(_, text)| text);
            let change = format!(
                "stage {stage}: {}",
                changes(document_value(was).as_ref(), after)
            );
            (before.clone().with(stage, publication.text), change)
        }
    };
    let merged;
    let generated = if documents.stages.is_empty() {
        publication.generated
    } else {
        merged = documents
            .load(
                &publication.source.file,
                publication.stage.unwrap_or(RELEASE),
            )
            .map_err(PublishError::Invalid)?;
        &merged
    };
    let mut files: Vec<(String, Vec<u8>)> =
        envoy::dynamic_resources(generated, publication.artifacts)
            .into_iter()
            .map(|(name, value)| (name, pretty_bytes(&value)))
            .collect();
    files.push((DOCUMENT.into(), documents.base.as_bytes().to_vec()));
    for (stage, text) in &documents.stages {
        files.push((stage_document(stage), text.as_bytes().to_vec()));
    }
    let needs_restart = before
        .as_ref()
        .and_then(|b| document_value(&b.base))
        .zip(document_value(&documents.base))
        .is_some_and(|(was, now)| bootstrap_part(&was) != bootstrap_part(&now));
    let next = Next {
        source: publication.source.file.clone(),
        previous: current.map(|v| v.version),
        rollback_of: None,
        stage: publication.stage.map(String::from),
        signature,
    };
    commit(dir, next, change, needs_restart, files)
}

/// Publishes version `to` again as a new version (`None`: the version that
/// was current before the current one).
pub fn rollback(
    dir: &Path,
    to: Option<u32>,
    signature: Signature,
) -> Result<Published, PublishError> {
    existing(dir)?;
    let _lock = Lock::take(dir)?;
    let current = current(dir)?.ok_or_else(|| {
        PublishError::NoVersion(format!("{}: nothing is published there", dir.display()))
    })?;
    let to = match to {
        Some(to) => to,
        None => current.previous.ok_or_else(|| {
            PublishError::NoVersion(format!(
                "version {} is the first: name the version to roll back to",
                current.version
            ))
        })?,
    };
    let from = version_dir(dir, to);
    let record = read_record(&from).ok_or_else(|| {
        PublishError::NoVersion(format!(
            "{}: there is no version {to} (see `gatewayctl history`)",
            dir.display()
        ))
    })?;
    let mut files = Vec::new();
    for entry in fs::read_dir(&from).map_err(io_error(&from))? {
        let entry = entry.map_err(io_error(&from))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != RECORD {
            files.push((
                name,
                fs::read(entry.path()).map_err(io_error(&entry.path()))?,
            ));
        }
    }
    let before = read_document(dir, current.version);
    let after = read_document(dir, to).unwrap_or(Value::Null);
    let needs_restart = before
        .as_ref()
        .is_some_and(|before| bootstrap_part(before) != bootstrap_part(&after));
    let change = documents_changes(
        documents_of(&version_dir(dir, current.version))
            .ok()
            .as_ref(),
        &documents_of(&from)?,
    );
    let next = Next {
        source: record.source,
        previous: Some(current.version),
        rollback_of: Some(to),
        stage: None,
        signature,
    };
    commit(dir, next, change, needs_restart, files)
}

/// What changed between the documents two versions serve: the base
/// document's changes, then each stage's own document added, changed or
/// dropped.
fn documents_changes(before: Option<&Documents>, after: &Documents) -> String {
    let base_after = document_value(&after.base).unwrap_or(Value::Null);
    let Some(before) = before else {
        return changes(None, &base_after);
    };
    let mut parts = vec![changes(document_value(&before.base).as_ref(), &base_after)];
    let (mut added, mut dropped) = (Vec::new(), Vec::new());
    for (stage, text) in &after.stages {
        match before.stages.get(stage) {
            None => added.push(stage.as_str()),
            Some(was) if was != text => {
                let now = document_value(text).unwrap_or(Value::Null);
                parts.push(format!(
                    "stage {stage}: {}",
                    changes(document_value(was).as_ref(), &now)
                ));
            }
            Some(_) => {}
        }
    }
    for stage in before.stages.keys() {
        if !after.stages.contains_key(stage) {
            dropped.push(stage.as_str());
        }
    }
    if !added.is_empty() {
        parts.push(format!("stage documents back: {}", added.join(", ")));
    }
    if !dropped.is_empty() {
        parts.push(format!("stage documents dropped: {}", dropped.join(", ")));
    }
    if parts.len() > 1 && parts[0] == NO_CHANGE {
        parts.remove(0);
    }
    parts.join("; ")
}

/// What the next version's record says of where it comes from.
struct Next {
    source: String,
    previous: Option<u32>,
    rollback_of: Option<u32>,
    stage: Option<String>,
    signature: Signature,
}

/// Records and installs the next version.
fn commit(
    dir: &Path,
    next: Next,
    changes: String,
    needs_restart: bool,
    files: Vec<(String, Vec<u8>)>,
) -> Result<Published, PublishError> {
    let version = Version {
        version: next_version(dir)?,
        published: now(),
        author: next.signature.author,
        message: next.signature.message,
        source: next.source,
        previous: next.previous,
        rollback_of: next.rollback_of,
        stage: next.stage,
        changes,
    };
    let warnings = install(dir, &version, files)?;
    Ok(Published {
        version,
        needs_restart,
        warnings,
    })
}

/// `dir` must be a directory something was published into.
fn existing(dir: &Path) -> Result<(), PublishError> {
    if dir.is_dir() {
        Ok(())
    } else {
        Err(PublishError::NoVersion(format!(
            "{}: no such directory (nothing is published there)",
            dir.display()
        )))
    }
}

/// Every version kept, oldest first, and the current one's number.
pub fn history(dir: &Path) -> Result<(Vec<Version>, Option<u32>), PublishError> {
    existing(dir)?;
    let current = current(dir)?.map(|v| v.version);
    let mut versions: Vec<Version> = numbers(dir)?
        .into_iter()
        .filter_map(|n| read_record(&version_dir(dir, n)))
        .collect();
    versions.sort_by_key(|v| v.version);
    Ok((versions, current))
}

/// The current version of `dir`, if any.
pub fn current(dir: &Path) -> Result<Option<Version>, PublishError> {
    let link = dir.join(CURRENT);
    match fs::read_link(&link) {
        Ok(target) => Ok(read_record(&dir.join(target))),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(PublishError::Io { path: link, error }),
    }
}

/// Makes `version` current: its directory written and synced, a link to
/// each of its resource files, then the swap. Removing old versions after
/// that is best effort: what fails is returned as a warning, the version
/// being live.
fn install(
    dir: &Path,
    version: &Version,
    mut files: Vec<(String, Vec<u8>)>,
) -> Result<Vec<String>, PublishError> {
    let mut record = serde_json::to_vec_pretty(version).unwrap_or_default();
    record.push(b'\n');
    files.push((RECORD.into(), record));
    let name = write_version(dir, version.version, &files)?;
    // The links Envoy's paths name, made once per resource file.
    for (file, _) in &files {
        if file.ends_with(".json") && file != RECORD {
            replace_link(dir, file, &format!("{CURRENT}/{file}"))?;
        }
    }
    replace_link(dir, CURRENT, &format!("{VERSIONS}/{name}"))?;
    sync_dir(dir)?;
    Ok(prune(dir, version.version)
        .err()
        .map(|error| format!("old versions were not all removed: {error}"))
        .into_iter()
        .collect())
}

/// Writes a version's files into `versions/.N.tmp`, syncs them, and renames
/// the directory to `versions/N`; its name.
fn write_version(
    dir: &Path,
    version: u32,
    files: &[(String, Vec<u8>)],
) -> Result<String, PublishError> {
    let name = version_name(version);
    let versions = dir.join(VERSIONS);
    let staging = versions.join(format!(".{name}.tmp"));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(io_error(&staging))?;
    for (file, bytes) in files {
        let path = staging.join(file);
        let mut out = fs::File::create(&path).map_err(io_error(&path))?;
        io::Write::write_all(&mut out, bytes).map_err(io_error(&path))?;
        out.sync_all().map_err(io_error(&path))?;
    }
    sync_dir(&staging)?;
    let final_dir = versions.join(&name);
    fs::rename(&staging, &final_dir).map_err(io_error(&final_dir))?;
    sync_dir(&versions)?;
    Ok(name)
}

/// Makes a directory's entries durable (a crash after a publish must not
/// leave `..data` naming files that were never written).
fn sync_dir(dir: &Path) -> Result<(), PublishError> {
    fs::File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(io_error(dir))
}

/// Points `dir/name` at `target` with one rename (what Envoy's directory
/// watch sees as a move), unless it already does.
fn replace_link(dir: &Path, name: &str, target: &str) -> Result<(), PublishError> {
    let link = dir.join(name);
    if fs::read_link(&link).is_ok_and(|t| t == Path::new(target)) {
        return Ok(());
    }
    let staging = dir.join(format!("{name}_tmp"));
    let _ = fs::remove_file(&staging);
    std::os::unix::fs::symlink(target, &staging).map_err(io_error(&staging))?;
    fs::rename(&staging, &link).map_err(io_error(&link))
}

/// Removes the oldest versions beyond [`KEPT_VERSIONS`] (never `current`).
fn prune(dir: &Path, current: u32) -> Result<(), PublishError> {
    let numbers = numbers(dir)?;
    let excess = numbers.len().saturating_sub(KEPT_VERSIONS);
    for number in numbers.into_iter().take(excess) {
        if number != current {
            let old = version_dir(dir, number);
            fs::remove_dir_all(&old).map_err(io_error(&old))?;
        }
    }
    Ok(())
}

/// The numbers of the versions kept, ascending.
fn numbers(dir: &Path) -> Result<Vec<u32>, PublishError> {
    let versions = dir.join(VERSIONS);
    let entries = match fs::read_dir(&versions) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(PublishError::Io {
                path: versions,
                error,
            })
        }
    };
    let mut numbers: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    numbers.sort_unstable();
    Ok(numbers)
}

fn next_version(dir: &Path) -> Result<u32, PublishError> {
    let last = numbers(dir)?.last().copied();
    // A pruned directory still counts on from its newest.
    Ok(last.map_or(1, |n| n + 1))
}

fn version_name(version: u32) -> String {
    format!("{version:06}")
}

fn version_dir(dir: &Path, version: u32) -> PathBuf {
    dir.join(VERSIONS).join(version_name(version))
}

fn read_record(version_dir: &Path) -> Option<Version> {
    serde_json::from_slice(&fs::read(version_dir.join(RECORD)).ok()?).ok()
}

/// A version's document, as read for the diff.
fn read_document(dir: &Path, version: u32) -> Option<Value> {
    document_value(&fs::read_to_string(version_dir(dir, version).join(DOCUMENT)).ok()?)
}

/// A published document's text as read for the diff (published documents
/// were checked, so one that no longer parses has nothing to compare).
fn document_value(text: &str) -> Option<Value> {
    Source::parse(DOCUMENT, text)
        .ok()
        .map(|source| source.value)
}

fn pretty_bytes(value: &Value) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(value).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The part of `gateway` a dynamic bootstrap holds (so only a restart
/// applies it): listeners, admin, the connection manager's timeouts and
/// buffer limit, and whether CORS is on.
fn bootstrap_part(document: &Value) -> [Value; 5] {
    let gateway = &document["gateway"];
    [
        gateway["listeners"].clone(),
        gateway["admin"].clone(),
        gateway["timeouts"].clone(),
        gateway["buffer_limit_bytes"].clone(),
        Value::Bool(!gateway["cors"].is_null()),
    ]
}

/// What changed between two documents, for people: per list of named
/// entries, `+added ~changed -removed`; per other top-level entry, `~`.
pub fn changes(before: Option<&Value>, after: &Value) -> String {
    let Some(before) = before else {
        let apis = after["apis"].as_array().map_or(0, Vec::len);
        return format!("first version: {apis} APIs");
    };
    let mut parts = Vec::new();
    for list in ["apis", "backends", "policies", "apps", "groups"] {
        let named = |document: &Value| -> Vec<(String, Value)> {
            document[list]
                .as_array()
                .into_iter()
                .flatten()
                .map(|entry| {
                    let name = entry["name"].as_str().or_else(|| entry["key"].as_str());
                    (name.unwrap_or("?").to_string(), entry.clone())
                })
                .collect()
        };
        let (old, new) = (named(before), named(after));
        let mut marks = Vec::new();
        for (name, entry) in &new {
            match old.iter().find(|(n, _)| n == name) {
                None => marks.push(format!("+{name}")),
                Some((_, was)) if was != entry => marks.push(format!("~{name}")),
                Some(_) => {}
            }
        }
        for (name, _) in &old {
            if !new.iter().any(|(n, _)| n == name) {
                marks.push(format!("-{name}"));
            }
        }
        if !marks.is_empty() {
            parts.push(format!("{list} {}", marks.join(" ")));
        }
    }
    for section in ["gateway", "settings"] {
        if before[section] != after[section] {
            parts.push(format!("{section} ~"));
        }
    }
    if parts.is_empty() {
        NO_CHANGE.into()
    } else {
        parts.join("; ")
    }
}

/// The directory's lock, held for one publish or rollback.
struct Lock(PathBuf);

impl Lock {
    fn take(dir: &Path) -> Result<Self, PublishError> {
        let path = dir.join(LOCK);
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => Ok(Self(path)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                Err(PublishError::Locked(path))
            }
            Err(error) => Err(PublishError::Io { path, error }),
        }
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document(apis: &str, listener: &str) -> String {
        format!(
            "version: 1\ngateway: {{ listeners: [ {{ name: http, address: \"{listener}\" }} ] }}\n\
             backends: [ {{ name: b, endpoints: [\"127.0.0.1:1\"] }} ]\napis:\n{apis}"
        )
    }

    const A: &str = "  - { name: a, path: /a, backend: b, auth: anonymous }\n";
    const B: &str = "  - { name: b, path: /b, backend: b, auth: anonymous }\n";

    fn publish_text(dir: &Path, text: &str) -> Result<Published, PublishError> {
        publish_to(dir, None, text)
    }

    fn publish_to(dir: &Path, stage: Option<&str>, text: &str) -> Result<Published, PublishError> {
        let source = Source::parse("apis.yaml", text).expect("parse");
        let generated = crate::load(&source).expect("valid");
        let publication = Publication {
            generated: &generated,
            source: &source,
            text,
            artifacts: &Artifacts::default(),
            stage,
        };
        publish(dir, &publication, Signature::default())
    }

    /// The route names of the current version, in Envoy's order.
    fn route_names(dir: &Path) -> Vec<String> {
        let routes: Value =
            serde_json::from_slice(&fs::read(dir.join("routes.json")).expect("routes"))
                .expect("json");
        routes["resources"][0]["virtual_hosts"][0]["routes"]
            .as_array()
            .expect("routes")
            .iter()
            .map(|route| route["name"].as_str().expect("name").to_string())
            .collect()
    }

    #[test]
    fn a_stage_published_alone_is_served_by_its_document_and_the_others_stay() {
        let dir = tempfile::tempdir().expect("dir");
        let release = document(A, "0.0.0.0:8080");
        assert!(matches!(
            publish_to(dir.path(), Some("TEST"), &release),
            Err(PublishError::NoVersion(why)) if why.contains("nothing is published there yet")
        ));
        publish_text(dir.path(), &release).expect("publish");
        let test = document(&format!("{A}{B}"), "0.0.0.0:8080");
        let staged = publish_to(dir.path(), Some("TEST"), &test).expect("stage");
        assert_eq!(staged.version.changes, "stage TEST: apis +b");
        assert_eq!(staged.version.stage.as_deref(), Some("TEST"));
        assert!(!staged.needs_restart);
        // The stage's APIs, then its 404, then the base document's.
        assert_eq!(
            route_names(dir.path()),
            [
                "a--test",
                "b--test",
                "gateway.test.no-such-api",
                "a",
                "gateway.no-such-api"
            ]
        );
        let documents = current_documents(dir.path()).expect("read").expect("some");
        assert_eq!(documents.base, release);
        assert_eq!(
            documents.stages,
            BTreeMap::from([("TEST".into(), test.clone())])
        );
        // RELEASE alone replaces the base document; TEST keeps its own.
        let both = document(&format!("{A}{B}"), "0.0.0.0:8080");
        let released = publish_to(dir.path(), Some("RELEASE"), &both).expect("release");
        assert_eq!(released.version.changes, "stage RELEASE: apis +b");
        assert_eq!(
            route_names(dir.path()),
            [
                "a--test",
                "b--test",
                "gateway.test.no-such-api",
                "a",
                "b",
                "gateway.no-such-api"
            ]
        );
        // A stage's document sharing what every stage shares, or nothing.
        let moved = document(A, "0.0.0.0:9090");
        let Err(PublishError::Invalid(errors)) = publish_to(dir.path(), Some("TEST"), &moved)
        else {
            panic!("a stage's own listeners are refused")
        };
        assert!(
            errors[0]
                .to_string()
                .contains("stage TEST: `gateway` differs"),
            "{errors:?}"
        );
        // The base document may change them for every stage, keeping
        // TEST's own document.
        let moved_both = document(&format!("{A}{B}"), "0.0.0.0:9090");
        let shared = publish_to(dir.path(), Some("RELEASE"), &moved_both).expect("release");
        assert!(shared.needs_restart);
        assert_eq!(route_names(dir.path())[0], "a--test");
        // The whole document to every stage: the stage's own is dropped.
        let whole = publish_text(dir.path(), &release).expect("publish");
        assert_eq!(
            whole.version.changes,
            "apis -b; gateway ~; stage documents dropped: TEST"
        );
        assert_eq!(route_names(dir.path()), ["a", "gateway.no-such-api"]);
        // A rollback brings the stage's document back with its version.
        let back = rollback(dir.path(), Some(3), Signature::default()).expect("rollback");
        assert_eq!(back.version.changes, "apis +b; stage documents back: TEST");
        assert_eq!(route_names(dir.path())[0], "a--test");
    }

    fn current_version(dir: &Path) -> Option<u32> {
        current(dir).expect("current").map(|v| v.version)
    }

    #[test]
    fn each_publish_is_a_version_envoy_reads_through_the_links() {
        let dir = tempfile::tempdir().expect("dir");
        let first = publish_text(dir.path(), &document(A, "0.0.0.0:8080")).expect("publish");
        assert_eq!((first.version.version, first.version.previous), (1, None));
        let second = publish_text(dir.path(), &document(&format!("{A}{B}"), "0.0.0.0:8080"))
            .expect("publish");
        assert_eq!(
            (second.version.version, second.version.previous),
            (2, Some(1))
        );
        assert!(!second.needs_restart);
        assert_eq!(second.version.changes, "apis +b");
        assert_eq!(current_version(dir.path()), Some(2));
        // Envoy's paths resolve to the current version's files.
        let routes = fs::read_to_string(dir.path().join("routes.json")).expect("routes");
        assert!(routes.contains("\"name\": \"b\""), "{routes}");
        for file in [
            "clusters.json",
            "gateway.gateway.json",
            "gateway.module.json",
            "gateway.sign_auth.json",
        ] {
            assert_eq!(
                fs::read_link(dir.path().join(file)).expect(file),
                Path::new("..data").join(file)
            );
        }
        assert!(!dir.path().join(LOCK).exists(), "the lock is released");
        // A changed listener needs a restart; the rest is published.
        let moved = publish_text(dir.path(), &document(A, "0.0.0.0:9090")).expect("publish");
        assert!(moved.needs_restart);
        assert_eq!(moved.version.changes, "apis -b; gateway ~");
    }

    #[test]
    fn a_rollback_publishes_an_earlier_version_again() {
        let dir = tempfile::tempdir().expect("dir");
        assert!(matches!(
            rollback(dir.path(), None, Signature::default()),
            Err(PublishError::NoVersion(_))
        ));
        publish_text(dir.path(), &document(A, "0.0.0.0:8080")).expect("publish");
        assert!(matches!(
            rollback(dir.path(), None, Signature::default()),
            Err(PublishError::NoVersion(why)) if why.contains("is the first")
        ));
        publish_text(dir.path(), &document(&format!("{A}{B}"), "0.0.0.0:8080")).expect("publish");
        let rolled = rollback(dir.path(), None, Signature::default()).expect("rollback");
        assert_eq!(
            (
                rolled.version.version,
                rolled.version.rollback_of,
                rolled.version.changes.as_str()
            ),
            (3, Some(1), "apis -b")
        );
        let read =
            |n: u32, file: &str| fs::read(version_dir(dir.path(), n).join(file)).expect(file);
        assert_eq!(read(3, "routes.json"), read(1, "routes.json"));
        assert_eq!(read(3, DOCUMENT), read(1, DOCUMENT));
        // Rolling the rollback back returns to version 2's files.
        let again = rollback(dir.path(), None, Signature::default()).expect("rollback");
        assert_eq!(again.version.rollback_of, Some(2));
        assert_eq!(read(4, "routes.json"), read(2, "routes.json"));
        assert!(matches!(
            rollback(dir.path(), Some(17), Signature::default()),
            Err(PublishError::NoVersion(why)) if why.contains("no version 17")
        ));
        assert_eq!(current_version(dir.path()), Some(4));
    }

    #[test]
    fn a_held_lock_changes_nothing_and_old_versions_are_pruned() {
        let dir = tempfile::tempdir().expect("dir");
        publish_text(dir.path(), &document(A, "0.0.0.0:8080")).expect("publish");
        fs::write(dir.path().join(LOCK), "").expect("lock");
        assert!(matches!(
            publish_text(dir.path(), &document(B, "0.0.0.0:8080")),
            Err(PublishError::Locked(_))
        ));
        assert_eq!(current_version(dir.path()), Some(1));
        fs::remove_file(dir.path().join(LOCK)).expect("unlock");
        for _ in 0..KEPT_VERSIONS + 1 {
            publish_text(dir.path(), &document(B, "0.0.0.0:8080")).expect("publish");
        }
        let (versions, current) = history(dir.path()).expect("history");
        assert_eq!(versions.len(), KEPT_VERSIONS);
        assert_eq!(versions.first().map(|v| v.version), Some(3));
        assert_eq!(current, Some(KEPT_VERSIONS as u32 + 2));
        assert_eq!(
            versions.last().map(|v| v.changes.as_str()),
            Some("no change")
        );
    }

    #[test]
    fn changes_name_what_was_added_changed_and_removed() {
        let parse = |text: &str| Source::parse("x", text).expect("parse").value;
        let before = parse(
            "apis: [ {name: a, path: /a}, {name: b, path: /b} ]\npolicies: [ {name: q, quota: {limit: 1}} ]\nsettings: {}",
        );
        let after = parse(
            "apis: [ {name: a, path: /a2}, {name: c, path: /c} ]\npolicies: [ {name: q, quota: {limit: 2}} ]\nsettings: { log_push: {} }\napps: [ {key: k1} ]",
        );
        assert_eq!(
            changes(Some(&before), &after),
            "apis ~a +c -b; policies ~q; apps +k1; settings ~"
        );
        assert_eq!(changes(Some(&after), &after), "no change");
        assert_eq!(changes(None, &after), "first version: 2 APIs");
    }
}
