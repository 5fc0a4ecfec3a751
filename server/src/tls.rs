//! TLS for the links chinwagd opens itself: to the cluster's NATS bus
//! (cluster/bus.rs) and to the PostgreSQL store (store/pg.rs). One rustls
//! client configuration shape for both, always on the ring provider (named
//! here, never left to whichever provider a build happens to enable).
//! Files are read when the configuration is built, so a missing or
//! unreadable CA, certificate or key is a clear error at start.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

use crate::config::read_secret_file;

/// How much of the server's certificate is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// Signed by a trusted CA and naming the host we dialled.
    Full,
    /// Signed by a trusted CA, whatever name it carries (libpq's verify-ca).
    Chain,
    /// Not at all: the link is encrypted against a passive listener only
    /// (libpq's require and prefer without a root certificate).
    Nothing,
}

/// Where the trusted CAs come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots<'a> {
    /// The certificates (PEM) in this file, and only those.
    File(&'a Path),
    /// The system's store (`/etc/ssl/certs` and the like).
    System,
}

/// A client certificate and its key (PEM files) for mutual TLS.
#[derive(Debug, Clone, Copy)]
pub struct Identity<'a> {
    pub cert: &'a Path,
    pub key: &'a Path,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The trusted CAs. A file that holds no certificate, or one rustls
/// cannot take, is an error naming the file.
pub fn root_store(roots: Roots<'_>) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::File(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: cannot read CA certificates: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: holds no PEM certificate", path.display()));
            }
            for c in certs {
                store
                    .add(c)
                    .map_err(|e| format!("{}: not a usable CA certificate: {e}", path.display()))?;
            }
        }
        Roots::System => {
            let found = rustls_native_certs::load_native_certs();
            for e in &found.errors {
                log::warn!("tls: system CA store: {e}");
            }
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err("the system's CA store holds no usable certificate".into());
            }
        }
    }
    Ok(store)
}

/// A client configuration: `roots` trusted as `verify` says, and the
/// client certificate of `identity` offered when the server asks. The key
/// file must be readable by its owner only.
pub fn client_config(
    roots: Roots<'_>,
    verify: Verify,
    identity: Option<Identity<'_>>,
) -> Result<ClientConfig, String> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let chain = match verify {
        Verify::Nothing => None,
        Verify::Full | Verify::Chain => Some(
            WebPkiServerVerifier::builder_with_provider(
                Arc::new(root_store(roots)?),
                provider.clone(),
            )
            .build()
            .map_err(|e| format!("tls: {e}"))?,
        ),
    };
    let builder = match chain {
        Some(webpki) if verify == Verify::Full => builder.with_webpki_verifier(webpki),
        chain => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Lenient { chain, provider })),
    };
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => {
            let certs = CertificateDer::pem_file_iter(id.cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("{}: cannot read the certificate: {e}", id.cert.display()))?;
            if certs.is_empty() {
                return Err(format!("{}: holds no PEM certificate", id.cert.display()));
            }
            let pem = read_secret_file(id.key, "the TLS key").map_err(|e| e.to_string())?;
            let key = PrivateKeyDer::from_pem_slice(&pem)
                .map_err(|e| format!("{}: not a PEM private key: {e}", id.key.display()))?;
            builder.with_client_auth_cert(certs, key).map_err(|e| {
                format!(
                    "{}: does not go with the certificate: {e}",
                    id.key.display()
                )
            })
        }
    }
}

/// Less than a full check: verify-ca (`chain`: the chain must lead to a
/// trusted CA, whatever name the certificate carries) or, without `chain`,
/// any certificate (libpq's require without a root certificate). Either
/// way the handshake's signatures are checked: the peer holds the key of
/// the certificate it shows.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        // The chain is checked before the name: a name error means the
        // chain was good.
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
