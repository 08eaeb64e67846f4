//! TLS on the native module's own connections (Redis, its Sentinels):
//! rustls with the ring provider. A configuration's TLS settings are made
//! into a client configuration once and kept for every connection.

use gateway_common::sync::lock;
use gateway_common::tls::TlsTarget;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use std::collections::HashMap;
use std::io;
use std::net::TcpStream;
use std::sync::{Arc, Mutex, OnceLock};

/// The client side of a TLS session with `address`, its handshake done on
/// `stream` (whose timeouts bound it).
pub(crate) fn handshake(
    stream: &mut TcpStream,
    tls: &TlsTarget,
    address: &str,
) -> io::Result<ClientConnection> {
    let config = client_config(tls)?;
    let name = match &tls.server_name {
        Some(name) => name.clone(),
        None => host_of(address).to_string(),
    };
    let name = ServerName::try_from(name.clone()).map_err(|error| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TLS: the server name `{name}`: {error}"),
        )
    })?;
    let mut connection = ClientConnection::new(config, name)
        .map_err(|error| io::Error::other(format!("TLS: {error}")))?;
    // The connection's writer bounds what it seals at once (a batch of
    // commands); rustls's own bound would refuse part of a large batch.
    connection.set_buffer_limit(None);
    while connection.is_handshaking() {
        connection.complete_io(stream).map_err(|error| {
            let why = match error.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                    "no answer in time".to_string()
                }
                _ => error.to_string(),
            };
            io::Error::new(error.kind(), format!("TLS handshake with {address}: {why}"))
        })?;
    }
    Ok(connection)
}

/// `host` of `host:port` (an IPv6 address without its brackets).
fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn client_config(tls: &TlsTarget) -> io::Result<Arc<ClientConfig>> {
    static CONFIGS: OnceLock<Mutex<HashMap<TlsTarget, Arc<ClientConfig>>>> = OnceLock::new();
    let mut configs = lock(CONFIGS.get_or_init(Default::default));
    if let Some(config) = configs.get(tls) {
        return Ok(Arc::clone(config));
    }
    let config =
        Arc::new(make_config(tls).map_err(|error| io::Error::other(format!("TLS: {error}")))?);
    configs.insert(tls.clone(), Arc::clone(&config));
    Ok(config)
}

fn make_config(tls: &TlsTarget) -> io::Result<ClientConfig> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_pem {
        Some(pem) => {
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate = certificate.map_err(io::Error::other)?;
                roots.add(certificate).map_err(io::Error::other)?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(io::Error::other(
                    "no CA in the system's store: give `tls.ca_file`",
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(io::Error::other)?
        .with_root_certificates(roots);
    match &tls.client_pem {
        Some((chain, key)) => {
            let chain: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(chain).collect();
            let chain = chain.map_err(io::Error::other)?;
            let key = PrivateKeyDer::from_pem_slice(key).map_err(io::Error::other)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(io::Error::other)
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_checked_is_the_host_of_the_address() {
        assert_eq!(host_of("redis.internal:6380"), "redis.internal");
        assert_eq!(host_of("127.0.0.1:6380"), "127.0.0.1");
        assert_eq!(host_of("[::1]:6380"), "::1");
    }
}
