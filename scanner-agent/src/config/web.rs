//! The Prometheus exporter-toolkit's `web-config.yml` (`tls_server_config`,
//! `basic_auth_users` with bcrypt hashes), accepted so that users of other
//! exporters need not learn a new format.

use std::{collections::BTreeMap, path::Path};

use serde::{Deserialize, Deserializer};

use super::{
    BasicAuth, Password, Username,
    values::{checked_str, yaml_error},
};
use crate::web::tls::TlsSettings;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WebConfig {
    #[serde(default)]
    pub(super) tls_server_config: Option<TlsSettings>,
    /// `http2` and `headers`: accepted and ignored, with a warning.
    #[serde(default)]
    pub(super) http_server_config: Option<serde_yaml::Value>,
    #[serde(default)]
    basic_auth_users: BTreeMap<Username, BcryptHash>,
}

/// A password hash; exporter-toolkit accepts nothing else here.
#[derive(Debug)]
struct BcryptHash(Password);

impl<'de> Deserialize<'de> for BcryptHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a bcrypt hash", |v| {
            if v.starts_with("$2") {
                Password::bcrypt(v).map(Self)
            } else {
                Err(
                    "not a bcrypt hash (create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                        .to_owned(),
                )
            }
        })
    }
}

impl WebConfig {
    /// Reads `path`; relative certificate paths are relative to its directory.
    pub(super) fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        let mut web = Self::parse(&text)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        web.tls_server_config = web.tls_server_config.map(|t| t.relative_to(dir));
        Ok(web)
    }

    /// Parses the file's text; the error names the key and line.
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_yaml::from_str(text).map_err(yaml_error)
    }

    pub(super) fn users(&self) -> Vec<BasicAuth> {
        self.basic_auth_users
            .iter()
            .map(|(username, hash)| BasicAuth {
                username: username.clone(),
                password: hash.0.clone(),
            })
            .collect()
    }
}
