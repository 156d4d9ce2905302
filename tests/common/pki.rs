//! Certificates made at run time with rcgen (a test CA and the leaves it signs), rustls
//! clients that trust only that CA, and mock Coupa instances that serve HTTPS with them.

use std::path::PathBuf;
use std::sync::Arc;

use coupa_mock::{MockCoupa, MockTls};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::{cli::TempDir, config::GatewayToml, mock_config, mock_with};

/// A test CA, its PEM in a file, and leaves it signs for `127.0.0.1` and `localhost`.
pub struct Pki {
    pub dir: TempDir,
    pub ca_pem: String,
    pub ca_file: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate and key, as PEM text and as files.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = TempDir::new(&format!("tls-{name}"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("coupa-gateway test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let ca_file = dir.file("ca.pem", &ca_pem);
        Pki {
            dir,
            ca_pem,
            ca_file,
            issuer: Issuer::new(params, key),
        }
    }

    pub fn leaf(&self, name: &str) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert_pem = params.signed_by(&key, &self.issuer).unwrap().pem();
        let key_pem = key.serialize_pem();
        Leaf {
            cert_file: self.dir.file(&format!("{name}.crt"), &cert_pem),
            key_file: self.dir.file(&format!("{name}.key"), &key_pem),
            cert_pem,
            key_pem,
        }
    }
}

impl Leaf {
    pub fn mock_tls(&self) -> MockTls {
        MockTls {
            cert_pem: self.cert_pem.clone(),
            key_pem: self.key_pem.clone(),
        }
    }
}

/// A rustls client configuration that trusts only `ca_pem`.
pub fn trusting(ca_pem: &str) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// A mock instance like [`super::mock`]'s, serving HTTPS with `leaf`.
pub async fn tls_mock(name: &str, leaf: &Leaf) -> MockCoupa {
    mock_with(mock_config(name).tls(leaf.mock_tls())).await
}

/// The set-up of the TLS and egress tests: [`GatewayToml::two_instances`] for `prod` and
/// `test`, with no token warm-up (reloads that re-mint would otherwise wait 5 s for it).
pub fn tls_test_toml(prod: &MockCoupa, test: &MockCoupa) -> GatewayToml {
    GatewayToml::two_instances(&prod.url(), &test.url()).token_warmup("0s")
}
