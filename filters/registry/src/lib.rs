//! The gateway's policies in one place, for everything that must know
//! them all: the gateway module (which loads each section with its
//! filter's code), gatewayctl (which writes and checks configurations),
//! the fuzz targets and the tests.
//!
//! - [`Section`]: the policies in the order a request meets them, each
//!   with what it [`Needs`] of where it runs;
//! - [`check`]: a policy's configuration compiled by its own filter's
//!   parser, exactly what Envoy runs when it loads the filter;
//! - [`document`]: the gateway module's one configuration document, a
//!   section per policy.

pub mod document;

pub use gateway_common::section::{Needs, Section};

use gateway_common::config::ConfigError;

/// Compiles `bytes` with the policy's own parser (and drops the result):
/// the configuration a filter would accept, or the error naming the field.
pub fn check(section: Section, bytes: &[u8]) -> Result<(), ConfigError> {
    match section {
        Section::SignAuth => sign_auth::compile_config(bytes).map(drop),
        Section::IpAcl => ip_acl::compile_config(bytes).map(drop),
        Section::ExtAuth => ext_auth::compile_config(bytes).map(drop),
        Section::AccessControl => access_control::compile_config(bytes).map(drop),
        Section::Routing => routing::compile_config(bytes).map(drop),
        Section::Throttling => throttling::compile_config(bytes).map(drop),
        Section::ParamValidation => param_validation::compile_config(bytes).map(drop),
        Section::ThreatProtection => threat_protection::compile_config(bytes).map(drop),
        Section::ResponseCache => response_cache::compile_config(bytes).map(drop),
        Section::ErrorMapping => error_mapping::compile_config(bytes).map(drop),
        Section::RequestMapping => request_mapping::compile_config(bytes).map(drop),
        Section::CircuitBreaker => circuit_breaker::compile_config(bytes).map(drop),
        Section::LogPush => log_push::compile_config(bytes).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_refuses_what_is_not_its_configuration_with_a_path() {
        for section in Section::ALL {
            let error = check(section, br#"{"no_such_field": 1}"#)
                .expect_err("an unknown field is refused");
            assert!(
                error.to_string().contains("no_such_field"),
                "{}: {error}",
                section.key()
            );
        }
    }

    #[test]
    fn section_keys_are_the_filter_names_in_the_order_policies_run() {
        let names = [
            sign_auth::FILTER_NAME,
            ip_acl::FILTER_NAME,
            ext_auth::FILTER_NAME,
            access_control::FILTER_NAME,
            routing::FILTER_NAME,
            throttling::FILTER_NAME,
            param_validation::FILTER_NAME,
            threat_protection::FILTER_NAME,
            response_cache::FILTER_NAME,
            error_mapping::FILTER_NAME,
            request_mapping::FILTER_NAME,
            circuit_breaker::FILTER_NAME,
            log_push::FILTER_NAME,
        ];
        assert_eq!(Section::ALL.map(Section::key), names);
        for section in Section::ALL {
            assert_eq!(Section::from_key(section.key()), Some(section));
        }
        assert_eq!(Section::from_key("cache"), None);
    }
}
