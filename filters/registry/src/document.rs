//! The module's configuration: one JSON object with a section per policy,
//! each section exactly the configuration of the single filter. Splitting
//! it is all this module does; every section is compiled by its own
//! filter's code.

use gateway_common::config::{parse_json, ConfigError};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use gateway_common::section::Section;

/// The document as written: each section kept as its exact JSON text.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    sign_auth: Option<Box<RawValue>>,
    ip_acl: Option<Box<RawValue>>,
    ext_auth: Option<Box<RawValue>>,
    access_control: Option<Box<RawValue>>,
    routing: Option<Box<RawValue>>,
    throttling: Option<Box<RawValue>>,
    param_validation: Option<Box<RawValue>>,
    threat_protection: Option<Box<RawValue>>,
    response_cache: Option<Box<RawValue>>,
    error_mapping: Option<Box<RawValue>>,
    request_mapping: Option<Box<RawValue>>,
    circuit_breaker: Option<Box<RawValue>>,
    log_push: Option<Box<RawValue>>,
    /// The fleet store of every section's `fleet` that names none.
    fleet_store: Option<Box<RawValue>>,
}

impl Document {
    fn take(&mut self, section: Section) -> Option<Box<RawValue>> {
        match section {
            Section::SignAuth => self.sign_auth.take(),
            Section::IpAcl => self.ip_acl.take(),
            Section::ExtAuth => self.ext_auth.take(),
            Section::AccessControl => self.access_control.take(),
            Section::Routing => self.routing.take(),
            Section::Throttling => self.throttling.take(),
            Section::ParamValidation => self.param_validation.take(),
            Section::ThreatProtection => self.threat_protection.take(),
            Section::ResponseCache => self.response_cache.take(),
            Section::ErrorMapping => self.error_mapping.take(),
            Section::RequestMapping => self.request_mapping.take(),
            Section::CircuitBreaker => self.circuit_breaker.take(),
            Section::LogPush => self.log_push.take(),
        }
    }
}

/// Splits the module's configuration into the present sections, in the
/// order the policies run, each as the bytes its filter's parser takes: a
/// section's JSON text as written, or, when the section is a JSON string,
/// the string's content (the exact text a single filter would be given).
/// A section set to `null` is absent.
///
/// The module sends all of a request's fleet checks as one call, so the
/// sections with a `fleet` object share one store: the top-level
/// `fleet_store`, written into each `fleet` that names none.
pub fn split(bytes: &[u8]) -> Result<Vec<(Section, Vec<u8>)>, ConfigError> {
    let mut document: Document = parse_json(bytes)?;
    let fleet_store = document
        .fleet_store
        .take()
        .map(|raw| serde_json::from_str::<Value>(raw.get()))
        .transpose()
        .map_err(|err| ConfigError::new("fleet_store", err.to_string()))?;
    let mut sections = split_sections(document)?;
    share_fleet_store(&mut sections, fleet_store)?;
    Ok(sections)
}

fn share_fleet_store(
    sections: &mut [(Section, Vec<u8>)],
    fleet_store: Option<Value>,
) -> Result<(), ConfigError> {
    let mut shared: Option<(String, Value)> =
        fleet_store.map(|store| ("fleet_store".into(), store));
    let mut users = 0;
    for (section, bytes) in sections.iter_mut() {
        if !section.needs().fleet_store {
            continue;
        }
        // A section that is not an object is left to its own parser to refuse.
        let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(bytes) else {
            continue;
        };
        let Some(Value::Object(fleet)) = fields.get_mut("fleet") else {
            continue;
        };
        users += 1;
        let at = format!("{}.fleet.store", section.key());
        match (fleet.get("store"), &shared) {
            (Some(store), Some((first, first_store))) if store != first_store => {
                return Err(ConfigError::new(
                    at,
                    format!(
                        "differs from `{first}`: the module sends each request's fleet checks \
                         to one store (set the store once, as `fleet_store`)"
                    ),
                ));
            }
            (Some(store), None) => shared = Some((at, store.clone())),
            (Some(_), Some(_)) => {}
            (None, Some((_, store))) => {
                fleet.insert("store".into(), store.clone());
                *bytes = Value::Object(fields).to_string().into_bytes();
            }
            // Left to the section's parser, which names the missing field.
            (None, None) => {}
        }
    }
    if users == 0 && shared.is_some() {
        return Err(ConfigError::new(
            "fleet_store",
            "no section uses it: add `\"fleet\": {}` to the sign_auth, throttling or circuit_breaker section",
        ));
    }
    Ok(())
}

fn split_sections(mut document: Document) -> Result<Vec<(Section, Vec<u8>)>, ConfigError> {
    let mut sections = Vec::new();
    for section in Section::ALL {
        let Some(raw) = document.take(section) else {
            continue;
        };
        let text = raw.get();
        let bytes = if text.starts_with('"') {
            serde_json::from_str::<String>(text)
                .map_err(|err| ConfigError::new(section.key(), err.to_string()))?
                .into_bytes()
        } else {
            text.as_bytes().to_vec()
        };
        sections.push((section, bytes));
    }
    if sections.is_empty() {
        return Err(ConfigError::new(
            "",
            format!(
                "no policy is configured; expected at least one of the sections {}",
                section_list()
            ),
        ));
    }
    Ok(sections)
}

/// `` `sign_auth`, `ip_acl`, … `` in order.
fn section_list() -> String {
    Section::ALL
        .iter()
        .map(|s| format!("`{}`", s.key()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(json: &str) -> Vec<&'static str> {
        split(json.as_bytes())
            .unwrap_or_else(|err| panic!("{err}"))
            .into_iter()
            .map(|(section, _)| section.key())
            .collect()
    }

    fn error_of(json: &str) -> String {
        match split(json.as_bytes()) {
            Ok(_) => panic!("accepted: {json}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn sections_come_out_in_policy_order_whatever_the_order_written() {
        assert_eq!(
            keys(
                r#"{"log_push":{}, "ip_acl":{}, "sign_auth":{}, "circuit_breaker":{}, "ext_auth":{}}"#
            ),
            [
                "sign_auth",
                "ip_acl",
                "ext_auth",
                "circuit_breaker",
                "log_push"
            ]
        );
    }

    #[test]
    fn an_absent_or_null_section_turns_its_policy_off() {
        assert_eq!(
            keys(r#"{"throttling": null, "request_mapping": {"rules": []}}"#),
            ["request_mapping"]
        );
    }

    #[test]
    fn a_section_is_handed_over_exactly_as_written() {
        let json = r#"{"ip_acl": {"deny" : ["10.0.0.0/8"],  "dry_run":true }}"#;
        let sections = split(json.as_bytes()).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            sections,
            [(
                Section::IpAcl,
                br#"{"deny" : ["10.0.0.0/8"],  "dry_run":true }"#.to_vec()
            )]
        );
    }

    #[test]
    fn a_section_given_as_a_string_is_handed_over_as_its_content() {
        let json = r#"{"ip_acl": "{\"deny\": [\"10.0.0.0/8\"]", "log_push": "not json"}"#;
        let sections = split(json.as_bytes()).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(
            sections,
            [
                (Section::IpAcl, br#"{"deny": ["10.0.0.0/8"]"#.to_vec()),
                (Section::LogPush, b"not json".to_vec()),
            ]
        );
    }

    #[test]
    fn an_unknown_section_is_refused_with_the_known_ones_listed() {
        assert_eq!(
            error_of(r#"{"ip-acl": {}}"#),
            "ip-acl: unknown field `ip-acl`, expected one of `sign_auth`, `ip_acl`, \
             `ext_auth`, `access_control`, `routing`, `throttling`, `param_validation`, `threat_protection`, `response_cache`, `error_mapping`, `request_mapping`, \
             `circuit_breaker`, `log_push`, `fleet_store` \
             at line 1 column 9"
        );
    }

    #[test]
    fn a_section_given_twice_is_refused() {
        assert_eq!(
            error_of(r#"{"ip_acl": {}, "ip_acl": {}}"#),
            "duplicate field `ip_acl` at line 1 column 23"
        );
    }

    #[test]
    fn a_configuration_that_is_not_an_object_is_refused() {
        for json in ["[]", "\"ip_acl\"", "42", "null"] {
            assert_eq!(
                error_of(json),
                "the filter configuration must be a JSON object"
            );
        }
        assert_eq!(
            error_of("  "),
            "the filter configuration is empty; expected a JSON object"
        );
    }

    #[test]
    fn a_configuration_without_any_section_is_refused() {
        assert_eq!(
            error_of("{}"),
            "no policy is configured; expected at least one of the sections `sign_auth`, \
             `ip_acl`, `ext_auth`, `access_control`, `routing`, `throttling`, `param_validation`, `threat_protection`, `response_cache`, `error_mapping`, `request_mapping`, \
             `circuit_breaker`, `log_push`"
        );
    }

    fn section_json(json: &str, section: Section) -> Value {
        let sections = split(json.as_bytes()).unwrap_or_else(|err| panic!("{err}"));
        let (_, bytes) = sections
            .into_iter()
            .find(|(s, _)| *s == section)
            .unwrap_or_else(|| panic!("no {section:?}"));
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn the_fleet_store_is_written_into_every_fleet_section_that_names_none() {
        let json = r#"{"fleet_store": {"cluster": "redis"},
            "sign_auth": {"apps": [], "fleet": {}},
            "throttling": {"rules": [], "fleet": {"failure_mode": "deny"}},
            "ip_acl": {"fleet": {}}}"#;
        let store = serde_json::json!({"cluster": "redis"});
        assert_eq!(
            section_json(json, Section::SignAuth)["fleet"]["store"],
            store
        );
        let throttling = section_json(json, Section::Throttling);
        assert_eq!(throttling["fleet"]["store"], store);
        assert_eq!(throttling["fleet"]["failure_mode"], "deny");
        // A policy without fleet state is handed its section as written.
        assert_eq!(
            section_json(json, Section::IpAcl)["fleet"],
            serde_json::json!({})
        );
    }

    #[test]
    fn sections_naming_their_own_store_must_name_the_same_one() {
        let same = r#"{"sign_auth": {"apps": [], "fleet": {"store": {"cluster": "a"}}},
            "throttling": {"rules": [], "fleet": {}}, "fleet_store": {"cluster": "a"}}"#;
        assert_eq!(keys(same), ["sign_auth", "throttling"]);
        let differing = r#"{"sign_auth": {"apps": [], "fleet": {"store": {"cluster": "a"}}},
            "throttling": {"rules": [], "fleet": {"store": {"cluster": "b"}}}}"#;
        assert!(error_of(differing)
            .starts_with("throttling.fleet.store: differs from `sign_auth.fleet.store`"));
        let against_top = r#"{"fleet_store": {"cluster": "a"},
            "throttling": {"rules": [], "fleet": {"store": {"cluster": "b"}}}}"#;
        assert!(
            error_of(against_top).starts_with("throttling.fleet.store: differs from `fleet_store`")
        );
    }

    #[test]
    fn a_fleet_store_no_section_uses_is_refused() {
        assert!(
            error_of(r#"{"fleet_store": {"cluster": "a"}, "ip_acl": {}}"#)
                .starts_with("fleet_store: no section uses it")
        );
    }

    #[test]
    fn malformed_json_is_refused_with_its_position() {
        assert!(error_of(r#"{"ip_acl": {"deny": [}"#).contains("line 1"));
    }
}
