//! Publishing one stage while leaving the others: the gateway then serves
//! several documents at once. The base document serves RELEASE and every
//! stage that has no document of its own; a stage published on its own
//! (`publish --stage TEST`) is served by its document alone, as the
//! managed gateways publish an API to one environment.
//!
//! [`merge`] makes one document of them for the generator: a stage's APIs,
//! groups and policies are renamed with the stage's suffix (`search` of
//! TEST becomes `search--test`), so each stage has its own policy rules,
//! quota counters and per-API series, and the generator gives those APIs
//! routes that match only their stage's `X-Ca-Stage`. What every stage
//! shares (`gateway`, `settings`, `apps`, and a backend of the same name)
//! is the base document's: a stage's document being published must have
//! the same (so what it was written against is what serves it); a base
//! document published later may change them for every stage.

use serde_json::Value;
use std::collections::BTreeMap;

/// The stage every request without `X-Ca-Stage` is of.
pub const RELEASE: &str = "RELEASE";

/// The longest name of an API, policy or group.
const MAX_NAME: usize = 64;

/// The parts of a document every stage shares.
const SHARED: [&str; 4] = ["version", "gateway", "settings", "apps"];

/// What a name of a stage's document becomes in the merged one.
pub fn staged_name(name: &str, stage: &str) -> String {
    format!("{name}--{}", stage.to_ascii_lowercase())
}

/// A stage name `publish --stage` takes: 1 to 32 letters, digits, `-`, `_`
/// (it suffixes names that are at most 64 long).
pub fn check_stage(stage: &str) -> Result<(), String> {
    let valid = !stage.is_empty()
        && stage.len() <= 32
        && stage
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{stage}` is not a stage name: 1 to 32 letters, digits, `-` or `_`"
        ))
    }
}

/// One document serving the base document's stages and each of `stages`'
/// own (stage → its document), and which APIs serve one stage only (API
/// name → stage). `publishing` is the stage whose document is being
/// published: its shared parts must be the base's. An error names the
/// stage and the field that cannot be merged.
pub fn merge(
    base: &Value,
    stages: &BTreeMap<String, Value>,
    publishing: Option<&str>,
) -> Result<(Value, BTreeMap<String, String>), String> {
    let mut merged = base.clone();
    let mut stage_only = BTreeMap::new();
    if stages.is_empty() {
        return Ok((merged, stage_only));
    }
    if base["gateway"]["match"].as_str() == Some("request") {
        return Err(
            "gateway.match: a stage is published on its own only with policies matched by \
             route (`match: route`, the default): matched by method and path, two stages' \
             APIs would share their rules"
                .into(),
        );
    }
    for (stage, document) in stages {
        let lowered = stage.to_ascii_lowercase();
        if stages
            .keys()
            .any(|other| other != stage && other.eq_ignore_ascii_case(stage))
        {
            return Err(format!(
                "stage {stage}: another stage has this name in another case"
            ));
        }
        let checked = publishing.is_some_and(|p| p.eq_ignore_ascii_case(stage));
        for field in SHARED {
            if checked && document[field] != base[field] {
                return Err(format!(
                    "stage {stage}: `{field}` differs from the base document's; every stage \
                     shares it: publish it with the base document (--stage RELEASE, or \
                     without --stage), then this document with the same"
                ));
            }
        }
        for backend in list(document, "backends") {
            let name = backend["name"].as_str().unwrap_or_default();
            match list(&merged, "backends").iter().find(|b| b["name"] == name) {
                Some(shared) if checked && *shared != backend => {
                    return Err(format!(
                        "stage {stage}: backends.{name} differs from the base document's; \
                         backends are shared by every stage: give the stage's a name of its own"
                    ))
                }
                // The shared one: the base's, or the stage's that came first.
                Some(_) => {}
                None => push(&mut merged, "backends", backend),
            }
        }
        let renamed = |value: &Value| match value.as_str() {
            Some(name) => Value::String(staged_name(name, &lowered)),
            None => value.clone(),
        };
        for field in ["apis", "policies", "groups"] {
            if let Some(long) = list(document, field).iter().find_map(|entry| {
                let name = entry["name"].as_str()?;
                (staged_name(name, stage).len() > MAX_NAME).then(|| name.to_string())
            }) {
                return Err(format!(
                    "stage {stage}: {field}: `{long}` becomes `{}` in the stage, longer than \
                     {MAX_NAME} characters: give it a shorter name",
                    staged_name(&long, stage)
                ));
            }
        }
        let rename_list = |value: &mut Value| {
            if let Some(names) = value.as_array_mut() {
                for name in names {
                    *name = renamed(name);
                }
            }
        };
        for mut policy in list(document, "policies") {
            policy["name"] = renamed(&policy["name"]);
            push(&mut merged, "policies", policy);
        }
        for mut group in list(document, "groups") {
            group["name"] = renamed(&group["name"]);
            rename_list(&mut group["policies"]);
            push(&mut merged, "groups", group);
        }
        for mut api in list(document, "apis") {
            let name = renamed(&api["name"]);
            if list(base, "apis").iter().any(|a| a["name"] == name) {
                return Err(format!(
                    "stage {stage}: API `{}` of the stage would be named `{}`, the name of \
                     an API of the base document: rename one",
                    api["name"].as_str().unwrap_or_default(),
                    name.as_str().unwrap_or_default()
                ));
            }
            api["name"] = name.clone();
            if let Some(group) = api.get("group").filter(|g| g.is_string()) {
                api["group"] = renamed(group);
            }
            if let Some(policies) = api.get_mut("policies") {
                rename_list(policies);
            }
            stage_only.insert(name.as_str().unwrap_or_default().to_string(), stage.clone());
            push(&mut merged, "apis", api);
        }
    }
    Ok((merged, stage_only))
}

/// A top-level list of a document (empty when absent).
fn list(document: &Value, field: &str) -> Vec<Value> {
    document[field].as_array().cloned().unwrap_or_default()
}

fn push(document: &mut Value, field: &str, entry: Value) {
    // A document's top level is a mapping (`Source` reads no other).
    if let Some(map) = document.as_object_mut() {
        let list = map.entry(field).or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(entries) = list {
            entries.push(entry);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "version": 1,
            "backends": [{ "name": "shop", "endpoints": ["127.0.0.1:8080"] }],
            "policies": [{ "name": "per-client", "quota": { "limit": 5 } }],
            "groups": [{ "name": "public", "auth": "anonymous" }],
            "apis": [{ "name": "search", "group": "public", "path": "/search",
                       "backend": "shop", "policies": ["per-client"] }],
        })
    }

    #[test]
    fn a_stage_document_is_renamed_into_the_base_and_its_apis_serve_the_stage_only() {
        let mut test = base();
        test["backends"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "name": "shop-next", "endpoints": ["127.0.0.1:8081"] }));
        test["policies"][0]["quota"]["limit"] = json!(50);
        test["apis"][0]["backend"] = json!("shop-next");
        let stages = BTreeMap::from([("TEST".to_string(), test)]);
        let (merged, stage_only) = merge(&base(), &stages, Some("TEST")).unwrap();
        let names = |field: &str| -> Vec<String> {
            list(&merged, field)
                .iter()
                .map(|entry| entry["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names("apis"), ["search", "search--test"]);
        assert_eq!(names("policies"), ["per-client", "per-client--test"]);
        assert_eq!(names("groups"), ["public", "public--test"]);
        assert_eq!(names("backends"), ["shop", "shop-next"]);
        let staged = &merged["apis"][1];
        assert_eq!(staged["group"], "public--test");
        assert_eq!(staged["policies"], json!(["per-client--test"]));
        assert_eq!(staged["backend"], "shop-next");
        assert_eq!(merged["policies"][1]["quota"]["limit"], 50);
        assert_eq!(
            stage_only,
            BTreeMap::from([("search--test".to_string(), "TEST".to_string())])
        );
    }

    #[test]
    fn what_every_stage_shares_is_the_base_documents() {
        let mut test = base();
        test["settings"] = json!({ "log_push": { "sink": "x" } });
        let stages = BTreeMap::from([("TEST".to_string(), test)]);
        let error = merge(&base(), &stages, Some("TEST")).unwrap_err();
        assert!(
            error.starts_with("stage TEST: `settings` differs"),
            "{error}"
        );
        // A base published later changes them for every stage.
        let (merged, _) = merge(&base(), &stages, Some("RELEASE")).expect("the base's win");
        assert!(merged.get("settings").is_none());

        let mut test = base();
        test["backends"][0]["endpoints"] = json!(["127.0.0.1:9999"]);
        let stages = BTreeMap::from([("TEST".to_string(), test)]);
        let error = merge(&base(), &stages, Some("TEST")).unwrap_err();
        assert!(
            error.starts_with("stage TEST: backends.shop differs"),
            "{error}"
        );
        let (merged, _) = merge(&base(), &stages, None).expect("the base's win");
        assert_eq!(merged["backends"], base()["backends"]);

        let mut by_request = base();
        by_request["gateway"] = json!({ "match": "request" });
        let stages = BTreeMap::from([("TEST".to_string(), by_request.clone())]);
        let error = merge(&by_request, &stages, Some("TEST")).unwrap_err();
        assert!(error.starts_with("gateway.match:"), "{error}");
    }

    #[test]
    fn a_staged_name_longer_than_names_may_be_is_refused() {
        let mut long = base();
        long["apis"][0]["name"] = json!("a".repeat(60));
        let stages = BTreeMap::from([("TEST".to_string(), long)]);
        let error = merge(&base(), &stages, Some("TEST")).unwrap_err();
        assert!(error.contains("longer than 64 characters"), "{error}");
    }

    #[test]
    fn a_staged_name_may_not_take_a_base_api_s_name() {
        let mut with_clash = base();
        with_clash["apis"]
            .as_array_mut()
            .unwrap()
            .push(json!({ "name": "search--test", "path": "/s", "backend": "shop" }));
        let stages = BTreeMap::from([("TEST".to_string(), base())]);
        let error = merge(&with_clash, &stages, Some("TEST")).unwrap_err();
        assert!(
            error.contains("`search--test`, the name of an API"),
            "{error}"
        );
    }

    #[test]
    fn stage_names_are_checked() {
        assert!(check_stage("TEST").is_ok());
        assert!(check_stage("pre-2").is_ok());
        assert!(check_stage("").is_err());
        assert!(check_stage("a b").is_err());
        assert!(check_stage(&"x".repeat(33)).is_err());
    }
}
