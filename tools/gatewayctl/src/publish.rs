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

use crate::envoy::{self, Artifacts};
use crate::generate::Generated;
use crate::source::Source;
use serde::{Deserialize, Serialize};
use serde_json::Value;
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
/// Each version's record and document.
const RECORD: &str = "version.json";
const DOCUMENT: &str = "apis.yaml";

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
    let before = current
        .as_ref()
        .and_then(|version| read_document(dir, version.version));
    let after = &publication.source.value;
    let mut files: Vec<(String, Vec<u8>)> =
        envoy::dynamic_resources(publication.generated, publication.artifacts)
            .into_iter()
            .map(|(name, value)| (name, pretty_bytes(&value)))
            .collect();
    files.push((DOCUMENT.into(), publication.text.as_bytes().to_vec()));
    let next = Next {
        source: publication.source.file.clone(),
        previous: current.map(|v| v.version),
        rollback_of: None,
        signature,
    };
    commit(dir, next, before.as_ref(), after, files)
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
    let next = Next {
        source: record.source,
        previous: Some(current.version),
        rollback_of: Some(to),
        signature,
    };
    commit(dir, next, before.as_ref(), &after, files)
}

/// What the next version's record says of where it comes from.
struct Next {
    source: String,
    previous: Option<u32>,
    rollback_of: Option<u32>,
    signature: Signature,
}

/// Records and installs the next version, `after` being its document and
/// `before` the current one's.
fn commit(
    dir: &Path,
    next: Next,
    before: Option<&Value>,
    after: &Value,
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
        changes: changes(before, after),
    };
    let needs_restart =
        before.is_some_and(|before| bootstrap_part(before) != bootstrap_part(after));
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
    let path = version_dir(dir, version).join(DOCUMENT);
    let text = fs::read_to_string(&path).ok()?;
    Source::parse(&path.to_string_lossy(), &text)
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
        "no change".into()
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
        let source = Source::parse("apis.yaml", text).expect("parse");
        let generated = crate::load(&source).expect("valid");
        let publication = Publication {
            generated: &generated,
            source: &source,
            text,
            artifacts: &Artifacts::default(),
        };
        publish(dir, &publication, Signature::default())
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
