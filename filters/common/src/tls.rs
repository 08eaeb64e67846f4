//! TLS to a server the native module connects to itself (Redis, Kafka):
//! the CAs that sign the server's certificate, an optional client
//! certificate, and the name checked. The files are read and their PEM
//! checked when the configuration loads, so a wrong path or a file that
//! holds no certificate is refused with its field named, never found at
//! the first connection.

use crate::config::ConfigError;
use serde::Deserialize;

/// `tls` of a server's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// A PEM file of the CAs that sign the servers' certificates (default:
    /// the system's CA store).
    #[serde(default)]
    pub ca_file: Option<String>,
    /// A PEM file of a client certificate chain, for servers that ask for
    /// one (Redis does unless `tls-auth-clients no`), with its key.
    #[serde(default)]
    pub cert_file: Option<String>,
    #[serde(default)]
    pub key_file: Option<String>,
    /// The name the server's certificate must hold (default: the host of
    /// the address connected to).
    #[serde(default)]
    pub server_name: Option<String>,
}

/// A checked [`TlsConfig`], with the files' contents.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TlsTarget {
    /// PEM certificates of the CAs; `None`: the system's store.
    pub ca_pem: Option<Vec<u8>>,
    /// PEM certificate chain and private key of the client.
    pub client_pem: Option<(Vec<u8>, Vec<u8>)>,
    pub server_name: Option<String>,
}

impl TlsTarget {
    /// Reads and checks the files (field names relative to `tls`).
    pub fn compile(config: &TlsConfig) -> Result<Self, ConfigError> {
        let ca_pem = config
            .ca_file
            .as_deref()
            .map(|path| certificates("ca_file", path))
            .transpose()?;
        let client_pem = match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(key)) => Some((certificates("cert_file", cert)?, private_key(key)?)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::new("key_file", "required with `cert_file`"))
            }
            (None, Some(_)) => {
                return Err(ConfigError::new("cert_file", "required with `key_file`"))
            }
        };
        if let Some(name) = &config.server_name {
            if !is_server_name(name) {
                return Err(ConfigError::new(
                    "server_name",
                    format!("`{name}` is not a DNS name or an IP address"),
                ));
            }
        }
        Ok(Self {
            ca_pem,
            client_pem,
            server_name: config.server_name.clone(),
        })
    }
}

/// A name TLS can check a certificate against, as rustls reads it.
fn is_server_name(name: &str) -> bool {
    #[cfg(not(target_arch = "wasm32"))]
    {
        rustls_pki_types::ServerName::try_from(name).is_ok()
    }
    #[cfg(target_arch = "wasm32")]
    {
        !name.is_empty()
    }
}

fn read(field: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    if cfg!(target_arch = "wasm32") {
        return Err(ConfigError::new(
            field,
            "the Wasm modules cannot open connections of their own (TLS is the native module's)",
        ));
    }
    std::fs::read(path)
        .map_err(|error| ConfigError::new(field, format!("cannot read `{path}`: {error}")))
}

/// A file of one or more PEM certificates.
fn certificates(field: &str, path: &str) -> Result<Vec<u8>, ConfigError> {
    let pem = read(field, path)?;
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::CertificateDer;
        let parsed: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&pem).collect();
        match parsed {
            Ok(certificates) if !certificates.is_empty() => {}
            Ok(_) => {
                return Err(ConfigError::new(
                    field,
                    format!("`{path}` holds no PEM certificate"),
                ))
            }
            Err(error) => {
                return Err(ConfigError::new(
                    field,
                    format!("`{path}` is not PEM certificates: {error}"),
                ))
            }
        }
    }
    Ok(pem)
}

/// A file of one PEM private key (PKCS#8, PKCS#1 or SEC1).
fn private_key(path: &str) -> Result<Vec<u8>, ConfigError> {
    let pem = read("key_file", path)?;
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::PrivateKeyDer;
        if let Err(error) = PrivateKeyDer::from_pem_slice(&pem) {
            return Err(ConfigError::new(
                "key_file",
                format!("`{path}` holds no PEM private key: {error}"),
            ));
        }
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    #[test]
    fn files_are_read_and_checked_when_the_configuration_loads() {
        let empty = file("no certificate here\n");
        let path = |f: &tempfile::NamedTempFile| f.path().to_string_lossy().into_owned();
        let compile = |config: TlsConfig| TlsTarget::compile(&config).map_err(|e| e.to_string());
        assert_eq!(
            compile(TlsConfig::default()),
            Ok(TlsTarget {
                ca_pem: None,
                client_pem: None,
                server_name: None,
            })
        );
        let missing = compile(TlsConfig {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        })
        .expect_err("missing");
        assert!(
            missing.starts_with("ca_file: cannot read `/nonexistent/ca.pem`"),
            "{missing}"
        );
        let no_certificate = compile(TlsConfig {
            ca_file: Some(path(&empty)),
            ..Default::default()
        })
        .expect_err("empty");
        assert!(
            no_certificate.ends_with("holds no PEM certificate"),
            "{no_certificate}"
        );
        assert_eq!(
            compile(TlsConfig {
                cert_file: Some(path(&empty)),
                ..Default::default()
            }),
            Err("key_file: required with `cert_file`".to_string())
        );
        for bad in ["a b", "a..b", "-x", ""] {
            let error = compile(TlsConfig {
                server_name: Some(bad.into()),
                ..Default::default()
            });
            assert!(error.expect_err(bad).starts_with("server_name:"), "{bad}");
        }
        for good in ["redis.internal", "redis_primary", "10.0.0.7", "::1"] {
            let name = compile(TlsConfig {
                server_name: Some(good.into()),
                ..Default::default()
            });
            assert!(name.is_ok(), "{good}: {name:?}");
        }
    }
}
