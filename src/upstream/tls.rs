//! TLS to `https://` upstreams: the roots to trust (a CA file, or the system's), an optional
//! client certificate (mutual TLS), ALPN h2, and the server name checked against the
//! upstream's certificate.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use super::UpstreamTls;
use crate::tls::{load_certs, load_key, provider};

/// A client TLS configuration and the server name to present and verify.
pub(super) struct TlsConnect {
    connector: TlsConnector,
    server_name: ServerName<'static>,
}

impl TlsConnect {
    pub(super) async fn handshake(&self, tcp: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        self.connector.connect(self.server_name.clone(), tcp).await
    }
}

/// The TLS settings for an upstream whose first host is `host`; files are read now, so that
/// a missing or bad file stops start-up rather than every request.
pub(super) fn connect_config(tls: &UpstreamTls, host: &str) -> Result<TlsConnect, String> {
    let name = tls.server_name.as_deref().unwrap_or(host);
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| format!("{name:?} is not a valid TLS server name: {e}"))?;
    Ok(TlsConnect {
        connector: TlsConnector::from(client_config(tls)?),
        server_name,
    })
}

fn client_config(tls: &UpstreamTls) -> Result<Arc<ClientConfig>, String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS configuration: {e}"))?
        .with_root_certificates(roots(tls.ca_file.as_deref())?);
    let mut config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| {
                format!(
                    "client certificate {} and key {}: {e}",
                    cert.display(),
                    key.display()
                )
            })?,
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err("a client certificate needs its key".into()),
        (None, Some(_)) => return Err("a client key needs its certificate".into()),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The CA file's certificates, or the system's trusted roots (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` are honoured).
fn roots(ca_file: Option<&Path>) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            for cert in load_certs(path)? {
                roots
                    .add(cert)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
            }
        }
        None => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "no system root certificates found{why}: give the upstream's CA with --upstream-ca-file"
                ));
            }
        }
    }
    Ok(roots)
}
