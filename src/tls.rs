//! The one rustls client configuration shared by the upstream pool and the token client.
//!
//! ring is the crypto provider (pure Rust + asm, no C toolchain, no OpenSSL). Roots are the
//! operating system's store (corporate CAs usually live there) plus Mozilla's web-PKI set, so a
//! minimal container without a CA bundle still reaches `*.coupahost.com`.

use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

/// Builds the client TLS configuration. Native roots that fail to parse are skipped with a
/// warning (one bad certificate in `/etc/ssl` must not take the gateway down).
pub fn client_config() -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for err in &native.errors {
        tracing::debug!(error = %err, "could not read a native root certificate store");
    }
    let (_added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::warn!(ignored, "skipped unparsable native root certificates");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}
