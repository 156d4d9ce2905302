//! rustls configurations: the client side shared by the upstream pool and the token client, and
//! the server side of a listener with `[server.tls]`.
//!
//! ring is the crypto provider (pure Rust + asm, no C toolchain, no OpenSSL). Client roots are
//! the operating system's store (corporate CAs usually live there), Mozilla's web-PKI set (so a
//! minimal container without a CA bundle still reaches `*.coupahost.com`) and, when
//! `upstream.ca_file` is set, the CA certificates in that PEM bundle (an interception proxy's CA
//! in a container whose system store cannot be changed).
//!
//! Errors name the config key and the file, never the file's content: a key file's bytes must
//! not end up in a log line, even when they are malformed.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// ALPN protocols the listener offers: h2 first (callers that speak it get one multiplexed
/// connection), then HTTP/1.1, which every integration speaks.
const SERVER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the client TLS configuration, trusting the system and web-PKI roots plus the CA
/// certificates in `extra_ca` (a PEM bundle, `upstream.ca_file`). Native roots that fail to
/// parse are skipped with a warning (one bad certificate in `/etc/ssl` must not take the
/// gateway down); a bad `extra_ca` is an error, since the operator asked for it explicitly.
pub fn client_config(extra_ca: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
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
    if let Some(path) = extra_ca {
        add_ca_file(&mut roots, path)?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn add_ca_file(roots: &mut RootCertStore, path: &Path) -> Result<(), String> {
    let key = "upstream.ca_file";
    let bytes = read(key, path)?;
    let mut count = 0;
    for (i, cert) in CertificateDer::pem_slice_iter(&bytes).enumerate() {
        let cert = cert.map_err(|e| {
            format!(
                "{key}: \"{}\": {}; give a PEM bundle of CA certificates",
                path.display(),
                describe_pem_error(&e)
            )
        })?;
        roots.add(cert).map_err(|e| {
            format!(
                "{key}: \"{}\": certificate #{} is not a usable CA certificate ({e}); give the CA's own certificate, not a server's",
                path.display(),
                i + 1
            )
        })?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{key}: \"{}\" holds no certificate (no \"-----BEGIN CERTIFICATE-----\" section); give a PEM bundle of the CA certificates to trust",
            path.display()
        ));
    }
    tracing::debug!(path = %path.display(), count, "trusting extra CA certificates");
    Ok(())
}

/// Builds the listener's TLS configuration from `[server.tls]`: the certificate chain (leaf
/// first) and its private key (PKCS#8, PKCS#1 or SEC1), both PEM. ALPN offers `h2` and
/// `http/1.1`.
pub fn server_config(tls: &crate::config::ServerTls) -> Result<Arc<ServerConfig>, String> {
    let chain = read_chain(&tls.cert)?;
    let key = read_key(&tls.key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        // rustls' messages name the problem (key/certificate mismatch, unsupported key type),
        // never key material.
        .map_err(|e| {
            format!(
                "server.tls.key: \"{}\" cannot be used with the certificate in server.tls.cert \"{}\": {e}; check that the key belongs to the certificate",
                tls.key.display(),
                tls.cert.display()
            )
        })?;
    config.alpn_protocols = SERVER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// [`server_config`] as an acceptor for the listener.
pub fn acceptor(tls: &crate::config::ServerTls) -> Result<tokio_rustls::TlsAcceptor, String> {
    server_config(tls).map(tokio_rustls::TlsAcceptor::from)
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let key = "server.tls.cert";
    let bytes = read(key, path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            format!(
                "{key}: \"{}\": {}; give the certificate chain in PEM, leaf first",
                path.display(),
                describe_pem_error(&e)
            )
        })?;
    if chain.is_empty() {
        return Err(format!(
            "{key}: \"{}\" holds no certificate (no \"-----BEGIN CERTIFICATE-----\" section); give the certificate chain in PEM, leaf first",
            path.display()
        ));
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let key = "server.tls.key";
    let bytes = read(key, path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{key}: \"{}\" holds no private key (\"PRIVATE KEY\", \"RSA PRIVATE KEY\" or \"EC PRIVATE KEY\" PEM section); give the certificate's unencrypted private key",
            path.display()
        ),
        e => format!(
            "{key}: \"{}\": {}; give the certificate's unencrypted private key in PEM",
            path.display(),
            describe_pem_error(&e)
        ),
    })
}

fn read(key: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| {
        format!(
            "{key}: cannot read \"{}\": {e}; check the path and the file's permissions",
            path.display()
        )
    })
}

/// A PEM error without the offending bytes: `pem::Error`'s own messages quote lines of the
/// file, which for a key file could be key material.
fn describe_pem_error(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a PEM section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a PEM BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a PEM section is not valid base64",
        pem::Error::SectionTooLarge => "a PEM section is too large",
        pem::Error::NoItemsFound => "no PEM section of the expected kind",
        _ => "not valid PEM",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerTls;

    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "coupa-gateway-tls-{tag}-{}-{}",
                std::process::id(),
                rand::random::<u32>()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
        fn file(&self, name: &str, content: &str) -> std::path::PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, content).unwrap();
            p
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn ca_file_errors_name_the_key_and_the_path() {
        let dir = TempDir::new("ca");
        let missing = dir.0.join("missing.pem");
        let e = client_config(Some(&missing)).unwrap_err();
        assert!(e.starts_with("upstream.ca_file: cannot read"), "{e}");
        assert!(e.contains("missing.pem"), "{e}");

        let empty = dir.file("empty.pem", "no pem here\n");
        let e = client_config(Some(&empty)).unwrap_err();
        assert!(
            e.contains("upstream.ca_file") && e.contains("holds no certificate"),
            "{e}"
        );
        assert!(e.contains("empty.pem"), "{e}");

        let broken = dir.file(
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nnot*base64*secret\n-----END CERTIFICATE-----\n",
        );
        let e = client_config(Some(&broken)).unwrap_err();
        assert!(
            e.contains("upstream.ca_file") && e.contains("broken.pem"),
            "{e}"
        );
        assert!(
            !e.contains("secret"),
            "the file's content is not echoed: {e}"
        );

        assert!(client_config(None).is_ok());
    }

    #[test]
    fn server_key_errors_never_echo_the_file() {
        let dir = TempDir::new("key");
        let cert = dir.file("cert.pem", "");
        let key = dir.file(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\nTOP*SECRET*KEY\n-----END PRIVATE KEY-----\n",
        );
        let tls = ServerTls {
            cert: cert.clone(),
            key: key.clone(),
        };
        let e = server_config(&tls).unwrap_err();
        assert!(
            e.starts_with("server.tls.cert:") && e.contains("cert.pem"),
            "{e}"
        );
        assert!(e.contains("holds no certificate"), "{e}");

        // A chain that parses (the DER content is not checked until the key is paired with it).
        let cert = dir.file(
            "cert.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let tls = ServerTls { cert, key };
        let e = server_config(&tls).unwrap_err();
        assert!(
            e.starts_with("server.tls.key:") && e.contains("key.pem"),
            "{e}"
        );
        assert!(!e.contains("SECRET"), "{e}");

        let no_key = dir.file("nokey.pem", "just text\n");
        let tls = ServerTls {
            cert: tls.cert,
            key: no_key,
        };
        let e = server_config(&tls).unwrap_err();
        assert!(e.contains("holds no private key"), "{e}");
    }
}
