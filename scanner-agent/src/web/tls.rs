//! TLS for the HTTP endpoints, with rustls. The settings use the key names
//! of the Prometheus exporter-toolkit's `tls_server_config`, so the same
//! block works in `config.yaml` (`server.tls`) and in a `web-config.yml`.

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    RootCertStore, ServerConfig, SupportedProtocolVersion,
    crypto::{CryptoProvider, ring},
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _},
    server::WebPkiClientVerifier,
    version::{TLS12, TLS13},
};
use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{key}: cannot read {path}: {reason}")]
    Pem {
        key: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("{key}: {path} holds no certificate")]
    NoCertificate { key: &'static str, path: PathBuf },
    #[error("client_auth_type {0:?} needs client_ca_file")]
    NoClientCa(ClientAuth),
    #[error("client_ca_file is set but client_auth_type is NoClientCert")]
    UnusedClientCa,
    #[error("min_version {min:?} is above max_version {max:?}")]
    Versions { min: Version, max: Version },
    #[error("the certificate and key do not make a usable server identity: {0}")]
    Identity(rustls::Error),
    #[error("client certificate verification: {0}")]
    Verifier(String),
}

/// exporter-toolkit's `tls_server_config`, as far as rustls can honour it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA bundle that client certificates must chain to.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// Defaults to `RequireAndVerifyClientCert` when `client_ca_file` is set.
    #[serde(default)]
    pub client_auth_type: Option<ClientAuth>,
    #[serde(default)]
    pub min_version: Option<Version>,
    #[serde(default)]
    pub max_version: Option<Version>,
    /// Accepted for compatibility and ignored: rustls offers only modern
    /// suites and groups (a warning says so).
    #[serde(default)]
    pub cipher_suites: Option<serde_yaml::Value>,
    #[serde(default)]
    pub curve_preferences: Option<serde_yaml::Value>,
    #[serde(default)]
    pub prefer_server_cipher_suites: Option<bool>,
}

/// exporter-toolkit's client authentication types that can be verified.
/// `RequestClientCert` and `RequireAnyClientCert` accept unverified
/// certificates, which gives no security, so they are not offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum ClientAuth {
    NoClientCert,
    VerifyClientCertIfGiven,
    RequireAndVerifyClientCert,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Version {
    TLS12,
    TLS13,
}

impl TlsSettings {
    /// Makes relative paths relative to `dir` (the directory of the file
    /// they were read from), as exporter-toolkit does.
    pub fn relative_to(mut self, dir: &Path) -> Self {
        for path in [&mut self.cert_file, &mut self.key_file]
            .into_iter()
            .chain(self.client_ca_file.as_mut())
        {
            if path.is_relative() {
                *path = dir.join(&*path);
            }
        }
        self
    }

    /// What is accepted but has no effect.
    pub fn warnings(&self) -> Vec<String> {
        let ignored = [
            ("cipher_suites", self.cipher_suites.is_some()),
            ("curve_preferences", self.curve_preferences.is_some()),
            (
                "prefer_server_cipher_suites",
                self.prefer_server_cipher_suites.is_some(),
            ),
        ];
        ignored
            .iter()
            .filter(|(_, set)| *set)
            .map(|(key, _)| {
                format!("tls {key} is ignored: rustls offers only modern cipher suites and groups")
            })
            .collect()
    }

    /// Loads the certificate, key and client CA and builds the rustls
    /// configuration (also used to validate a configuration before use).
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(ring::default_provider());
        let min = self.min_version.unwrap_or(Version::TLS12);
        let max = self.max_version.unwrap_or(Version::TLS13);
        if min > max {
            return Err(TlsError::Versions { min, max });
        }
        let versions: Vec<&'static SupportedProtocolVersion> =
            [(Version::TLS12, &TLS12), (Version::TLS13, &TLS13)]
                .into_iter()
                .filter(|(v, _)| (min..=max).contains(v))
                .map(|(_, v)| v)
                .collect();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&versions)
            .map_err(TlsError::Identity)?;
        let builder = match self.client_verifier(provider)? {
            Some(verifier) => builder.with_client_cert_verifier(verifier),
            None => builder.with_no_client_auth(),
        };
        let mut config = builder
            .with_single_cert(self.certificates()?, self.key()?)
            .map_err(TlsError::Identity)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn certificates(&self) -> Result<Vec<CertificateDer<'static>>, TlsError> {
        read_certificates("cert_file", &self.cert_file)
    }

    fn key(&self) -> Result<PrivateKeyDer<'static>, TlsError> {
        PrivateKeyDer::from_pem_file(&self.key_file).map_err(|e| TlsError::Pem {
            key: "key_file",
            path: self.key_file.clone(),
            reason: e.to_string(),
        })
    }

    fn client_verifier(
        &self,
        provider: Arc<CryptoProvider>,
    ) -> Result<Option<Arc<dyn rustls::server::danger::ClientCertVerifier>>, TlsError> {
        let auth = self
            .client_auth_type
            .unwrap_or(if self.client_ca_file.is_some() {
                ClientAuth::RequireAndVerifyClientCert
            } else {
                ClientAuth::NoClientCert
            });
        let ca = match (auth, &self.client_ca_file) {
            (ClientAuth::NoClientCert, None) => return Ok(None),
            (ClientAuth::NoClientCert, Some(_)) => return Err(TlsError::UnusedClientCa),
            (_, None) => return Err(TlsError::NoClientCa(auth)),
            (_, Some(ca)) => ca,
        };
        let mut roots = RootCertStore::empty();
        for cert in read_certificates("client_ca_file", ca)? {
            roots
                .add(cert)
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
        }
        let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
        let builder = if auth == ClientAuth::VerifyClientCertIfGiven {
            builder.allow_unauthenticated()
        } else {
            builder
        };
        builder
            .build()
            .map(Some)
            .map_err(|e| TlsError::Verifier(e.to_string()))
    }
}

fn read_certificates(
    key: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem_error = |e: rustls::pki_types::pem::Error| TlsError::Pem {
        key,
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            key,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}
