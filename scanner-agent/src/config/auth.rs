//! `auth`: who may call the agent and for what. `auth.basic` (the seed's
//! key) and the web config's `basic_auth_users` may do everything;
//! `auth.users` and `auth.bearer_tokens` entries may be limited to scopes
//! and to the networks they call from. Every entry is checked when read:
//! empty names and passwords, malformed bcrypt hashes, unknown scopes and
//! duplicates are errors naming the key and the line.

use std::{collections::HashSet, fmt, net::IpAddr, str::FromStr as _};

use ipnet::IpNet;
use serde::{
    Deserialize, Deserializer,
    de::{self, IntoDeserializer as _, value::MapAccessDeserializer},
};

use super::values::checked_str;

/// What a credential may call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `/metrics`, `/healthz` and the firewall listener.
    Metrics,
    /// `/query` and `/query/{id}`: makes the host send probes.
    Query,
    /// The node_exporter passthrough route.
    Passthrough,
}

impl Scope {
    pub const ALL: [Self; 3] = [Self::Metrics, Self::Query, Self::Passthrough];

    pub fn name(self) -> &'static str {
        match self {
            Self::Metrics => "metrics",
            Self::Query => "query",
            Self::Passthrough => "passthrough",
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a scope: metrics, query or passthrough", |v| {
            Self::ALL
                .into_iter()
                .find(|s| s.name() == v)
                .ok_or_else(|| {
                    format!("unknown scope {v:?} (expected metrics, query or passthrough)")
                })
        })
    }
}

/// A set of scopes, never empty when read from a file.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub const ALL: Self = Self(0b111);

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set()
            .entries(Scope::ALL.into_iter().filter(|s| self.contains(*s)))
            .finish()
    }
}

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list: Vec<Scope> = non_empty_list(
            d,
            "a list of scopes",
            "no scope: such a credential could call nothing (scopes are metrics, query, passthrough)",
        )?;
        Ok(Self(list.iter().fold(0, |bits, s| bits | s.bit())))
    }
}

/// Reads a list and refuses an empty one inside the deserializer, so the
/// error names the key and the line.
fn non_empty_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
    expected: &'static str,
    when_empty: &'static str,
) -> Result<Vec<T>, D::Error> {
    struct V<T>(&'static str, &'static str, std::marker::PhantomData<T>);
    impl<'de, T: Deserialize<'de>> de::Visitor<'de> for V<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let mut items = Vec::new();
            while let Some(item) = seq.next_element()? {
                items.push(item);
            }
            if items.is_empty() {
                return Err(de::Error::custom(self.1));
            }
            Ok(items)
        }
    }
    d.deserialize_seq(V(expected, when_empty, std::marker::PhantomData))
}

/// The networks a credential may be used from; absent: anywhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Networks(Vec<IpNet>);

impl Networks {
    /// Whether `peer` is inside one of the networks. IPv4 clients of the
    /// dual-stack listener appear as `::ffff:a.b.c.d`: they match IPv4 networks.
    pub fn contain(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.0.iter().any(|n| n.contains(&peer))
    }
}

/// One network: a CIDR range or a single address.
struct Network(IpNet);

impl<'de> Deserialize<'de> for Network {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "an address or CIDR range", |v| {
            v.parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| v.parse::<IpAddr>().map(IpNet::from))
                .map(Self)
                .map_err(|_| format!("{v:?} is not an address or CIDR range"))
        })
    }
}

impl<'de> Deserialize<'de> for Networks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list: Vec<Network> = non_empty_list(
            d,
            "a list of addresses and CIDR ranges",
            "an empty list admits no one: leave the key out to allow every address",
        )?;
        Ok(Self(list.into_iter().map(|n| n.0).collect()))
    }
}

/// A basic-auth user name: not empty, and without `:` (which the
/// `Authorization` header cannot carry in a name).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Username(pub String);

impl Username {
    pub fn parse(v: &str) -> Result<Self, String> {
        if v.is_empty() {
            Err("the username is empty".into())
        } else if v.contains(':') {
            Err(format!(
                "the username {v:?} contains ':', which basic auth cannot send"
            ))
        } else if v.chars().any(char::is_control) {
            Err(format!("the username {v:?} contains control characters"))
        } else {
            Ok(Self(v.to_owned()))
        }
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for Username {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a user name", Self::parse)
    }
}

/// Prefixes of password hashes other than bcrypt, which would otherwise be
/// taken for plain passwords that never match what a client sends.
const OTHER_HASHES: [(&str, &str); 6] = [
    ("$1$", "MD5-crypt"),
    ("$apr1$", "Apache MD5"),
    ("$5$", "SHA-256-crypt"),
    ("$6$", "SHA-512-crypt"),
    ("$y$", "yescrypt"),
    ("$argon2", "Argon2"),
];

/// A configured password: a bcrypt hash, or (as old configs have) plain text.
#[derive(Clone, PartialEq, Eq)]
pub enum Password {
    Bcrypt { hash: String, cost: u32 },
    Plain(String),
}

impl Password {
    /// A bcrypt hash or a plain password. Anything starting with `$2` is a
    /// bcrypt hash and must be a well-formed one; other hash formats are refused.
    pub fn parse(v: &str) -> Result<Self, String> {
        if v.is_empty() {
            return Err("the password is empty".into());
        }
        if v.starts_with("$2") {
            return Self::bcrypt(v);
        }
        if let Some((_, scheme)) = OTHER_HASHES.iter().find(|(p, _)| v.starts_with(p)) {
            return Err(format!(
                "this is a {scheme} hash: only bcrypt hashes (or plain passwords) are accepted"
            ));
        }
        Ok(Self::Plain(v.to_owned()))
    }

    /// A bcrypt hash, and nothing else.
    pub fn bcrypt(v: &str) -> Result<Self, String> {
        let parts = bcrypt::HashParts::from_str(v).map_err(|e| {
            format!(
                "looks like a bcrypt hash but is not a valid one ({e}); create one with `htpasswd -nBC 10 \"\" | tr -d ':\\n'`"
            )
        })?;
        Ok(Self::Bcrypt {
            hash: v.to_owned(),
            cost: parts.get_cost(),
        })
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bcrypt { cost, .. } => write!(f, "Bcrypt(cost {cost})"),
            Self::Plain(_) => f.write_str("Plain(..)"),
        }
    }
}

impl<'de> Deserialize<'de> for Password {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a bcrypt hash or a password", Self::parse)
    }
}

/// `auth.basic`: the seed's one user, with every scope.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    pub username: Username,
    pub password: Password,
}

/// An `auth.users` entry: a basic-auth user limited to scopes and networks.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub username: Username,
    pub password: Password,
    /// Required: a user is given exactly what it may do.
    pub scopes: Scopes,
    #[serde(default)]
    pub networks: Option<Networks>,
}

/// A bearer token: a string (every scope, as before scopes existed) or a
/// mapping with `token`, `scopes` and optionally `networks`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    pub scopes: Scopes,
    pub networks: Option<Networks>,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("scopes", &self.scopes)
            .field("networks", &self.networks)
            .finish_non_exhaustive()
    }
}

/// A token's text: what an `Authorization` header can carry after `Bearer `.
struct TokenText(String);

impl TokenText {
    fn parse(v: &str) -> Result<Self, String> {
        if v.is_empty() {
            Err("the token is empty".into())
        } else if !v.bytes().all(|b| b.is_ascii_graphic()) {
            Err("the token has characters other than printable ASCII without spaces, so no client can send it".into())
        } else {
            Ok(Self(v.to_owned()))
        }
    }
}

impl<'de> Deserialize<'de> for TokenText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked_str(d, "a token", Self::parse)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopedToken {
    token: TokenText,
    scopes: Scopes,
    #[serde(default)]
    networks: Option<Networks>,
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> de::Visitor<'de> for V {
            type Value = Token;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a token, or a mapping with token, scopes and networks")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Token, E> {
                let text = TokenText::deserialize(v.into_deserializer())?;
                Ok(Token {
                    token: text.0,
                    scopes: Scopes::ALL,
                    networks: None,
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Token, A::Error> {
                let t = ScopedToken::deserialize(MapAccessDeserializer::new(map))?;
                Ok(Token {
                    token: t.token.0,
                    scopes: t.scopes,
                    networks: t.networks,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawAuth")]
pub struct Auth {
    pub basic: Option<BasicAuth>,
    /// Basic-auth users with scopes and networks (new key).
    pub users: Vec<User>,
    /// Tokens accepted as `Authorization: Bearer <token>` (new key).
    pub bearer_tokens: Vec<Token>,
    /// Users from `server.web_config_file`'s `basic_auth_users`.
    #[serde(skip)]
    pub web_users: Vec<BasicAuth>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
    #[serde(default)]
    basic: Option<BasicAuth>,
    #[serde(default)]
    users: Vec<User>,
    #[serde(default)]
    bearer_tokens: Vec<Token>,
}

impl TryFrom<RawAuth> for Auth {
    type Error = String;
    fn try_from(raw: RawAuth) -> Result<Self, String> {
        let auth = Self {
            basic: raw.basic,
            users: raw.users,
            bearer_tokens: raw.bearer_tokens,
            web_users: Vec::new(),
        };
        auth.check_duplicates()?;
        Ok(auth)
    }
}

/// One basic-auth user from any of the three places, with what it may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Account<'a> {
    pub username: &'a str,
    pub password: &'a Password,
    pub scopes: Scopes,
    pub networks: Option<&'a Networks>,
}

impl Auth {
    /// Whether any authentication is configured.
    pub fn configured(&self) -> bool {
        self.accounts().next().is_some() || !self.bearer_tokens.is_empty()
    }

    /// Every basic-auth user: `auth.basic`, `auth.users` and the web config's.
    pub fn accounts(&self) -> impl Iterator<Item = Account<'_>> {
        fn everything(b: &BasicAuth) -> Account<'_> {
            Account {
                username: &b.username.0,
                password: &b.password,
                scopes: Scopes::ALL,
                networks: None,
            }
        }
        let basic = self.basic.iter().map(everything);
        let users = self.users.iter().map(|u| Account {
            username: &u.username.0,
            password: &u.password,
            scopes: u.scopes,
            networks: u.networks.as_ref(),
        });
        basic
            .chain(users)
            .chain(self.web_users.iter().map(everything))
    }

    /// Adds the web config's users; a name configured twice is an error.
    pub(super) fn add_web_users(
        &mut self,
        users: Vec<BasicAuth>,
        file: &std::path::Path,
    ) -> Result<(), String> {
        self.web_users = users;
        self.check_duplicates()
            .map_err(|e| format!("{e} (with basic_auth_users of {})", file.display()))
    }

    /// A user name or token given twice would make which entry applies
    /// (and so the scopes) a matter of order: refused.
    fn check_duplicates(&self) -> Result<(), String> {
        let mut names = HashSet::new();
        if let Some(name) = self
            .accounts()
            .map(|a| a.username)
            .find(|n| !names.insert(*n))
        {
            return Err(format!("auth: the username {name:?} is configured twice"));
        }
        let mut tokens = HashSet::new();
        if let Some(i) = self
            .bearer_tokens
            .iter()
            .position(|t| !tokens.insert(&t.token))
        {
            return Err(format!(
                "auth.bearer_tokens[{i}]: the same token is listed twice"
            ));
        }
        Ok(())
    }

    /// Plain-text passwords, for a warning.
    pub(super) fn plain_password_keys(&self) -> Vec<String> {
        let plain = |p: &Password| matches!(p, Password::Plain(_));
        let basic = self
            .basic
            .iter()
            .filter(|b| plain(&b.password))
            .map(|_| "auth.basic.password".to_owned());
        let users = self
            .users
            .iter()
            .enumerate()
            .filter(|(_, u)| plain(&u.password))
            .map(|(i, _)| format!("auth.users[{i}].password"));
        basic.chain(users).collect()
    }
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("basic", &self.basic)
            .field("users", &self.users)
            .field("bearer_tokens", &self.bearer_tokens)
            .field("web_users", &self.web_users)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::config::Config;

    fn auth(yaml: &str) -> Auth {
        Config::parse(yaml)
            .unwrap_or_else(|e| panic!("{yaml}: {e}"))
            .auth
    }

    #[test]
    fn users_and_tokens_with_scopes_and_networks() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let a = auth(&format!(
            "auth:\n  basic: {{username: admin, password: s3cret}}\n  users:\n    \
             - {{username: prometheus, password: \"{hash}\", scopes: [metrics], networks: [\"198.18.0.0/15\", \"2001:db8::1\"]}}\n  \
             bearer_tokens:\n    - plain-token\n    - {{token: query-token, scopes: [query, passthrough]}}\n"
        ));
        let accounts: Vec<_> = a.accounts().collect();
        assert_eq!(accounts.len(), 2);
        assert_eq!(accounts[0].username, "admin");
        assert_eq!(accounts[0].scopes, Scopes::ALL);
        assert_eq!(accounts[0].password, &Password::Plain("s3cret".into()));
        assert_eq!(accounts[1].username, "prometheus");
        assert!(accounts[1].scopes.contains(Scope::Metrics));
        assert!(!accounts[1].scopes.contains(Scope::Query));
        assert_eq!(
            accounts[1].password,
            &Password::Bcrypt {
                hash: hash.clone(),
                cost: 4
            }
        );
        let networks = accounts[1].networks.unwrap();
        assert!(networks.contain(IpAddr::V4(Ipv4Addr::new(198, 19, 255, 1))));
        assert!(networks.contain(Ipv4Addr::new(198, 18, 0, 7).to_ipv6_mapped().into()));
        assert!(!networks.contain(IpAddr::V4(Ipv4Addr::new(198, 20, 0, 1))));
        assert!(networks.contain("2001:db8::1".parse::<Ipv6Addr>().unwrap().into()));
        assert!(!networks.contain("2001:db8::2".parse::<Ipv6Addr>().unwrap().into()));
        assert_eq!(a.bearer_tokens[0].scopes, Scopes::ALL);
        assert!(a.bearer_tokens[0].networks.is_none());
        assert_eq!(a.bearer_tokens[1].token, "query-token");
        assert!(!a.bearer_tokens[1].scopes.contains(Scope::Metrics));
        assert!(a.bearer_tokens[1].scopes.contains(Scope::Passthrough));
        for secret in ["plain-token", "query-token", "s3cret", &hash] {
            assert!(!format!("{a:?}").contains(secret), "{a:?}");
        }
    }

    /// Every rejection names the key and the line.
    #[test]
    fn rejections_name_key_and_line() {
        let hash = bcrypt::hash("pw", 4).unwrap();
        let malformed = &hash[..hash.len() - 5];
        let cases = [
            (
                "auth:\n  basic: {username: \"\", password: \"\"}\n".to_owned(),
                "auth.basic.username: the username is empty at line 2",
            ),
            (
                "auth:\n  basic:\n    username: admin\n    password: \"\"\n".into(),
                "auth.basic.password: the password is empty at line 4",
            ),
            (
                "auth:\n  basic: {username: \"a:b\", password: pw}\n".into(),
                "auth.basic.username: the username \"a:b\" contains ':'",
            ),
            (
                format!("auth:\n  basic:\n    username: admin\n    password: \"{malformed}\"\n"),
                "auth.basic.password: looks like a bcrypt hash but is not a valid one",
            ),
            (
                "auth:\n  basic:\n    username: admin\n    password: \"$2y$10$plain-password-that-looks-hashed\"\n".into(),
                "auth.basic.password: looks like a bcrypt hash but is not a valid one",
            ),
            (
                "auth:\n  basic:\n    username: admin\n    password: \"$6$salt$abcdef\"\n".into(),
                "auth.basic.password: this is a SHA-512-crypt hash",
            ),
            (
                "auth:\n  users:\n    - {username: \"\", password: pw, scopes: [metrics]}\n".into(),
                "auth.users[0].username: the username is empty at line 3",
            ),
            (
                "auth:\n  users:\n    - {username: p, password: \"\", scopes: [metrics]}\n".into(),
                "auth.users[0].password: the password is empty at line 3",
            ),
            (
                "auth:\n  users:\n    - {username: p, password: pw}\n".into(),
                "auth.users[0]: missing field `scopes` at line 3",
            ),
            (
                "auth:\n  users:\n    - {username: p, password: pw, scopes: []}\n".into(),
                "auth.users[0].scopes: no scope",
            ),
            (
                "auth:\n  users:\n    - {username: p, password: pw, scopes: [metrics, admin]}\n".into(),
                "auth.users[0].scopes[1]: unknown scope \"admin\" (expected metrics, query or passthrough) at line 3",
            ),
            (
                "auth:\n  users:\n    - {username: p, password: pw, scopes: [metrics], networks: [\"198.18.0.0/33\"]}\n".into(),
                "auth.users[0].networks[0]: \"198.18.0.0/33\" is not an address or CIDR range at line 3",
            ),
            (
                "auth:\n  users:\n    - {username: p, password: pw, scopes: [metrics], networks: []}\n".into(),
                "auth.users[0].networks: an empty list admits no one",
            ),
            (
                "auth:\n  users:\n    - {username: p, password: pw, scopes: [metrics], role: x}\n".into(),
                "auth.users[0]: unknown field `role`",
            ),
            (
                "auth:\n  basic: {username: p, password: a}\n  users:\n    - {username: p, password: b, scopes: [metrics]}\n".into(),
                "auth: the username \"p\" is configured twice",
            ),
            (
                "auth:\n  bearer_tokens: [\"\"]\n".into(),
                "auth.bearer_tokens[0]: the token is empty at line 2",
            ),
            (
                "auth:\n  bearer_tokens: [\"two words\"]\n".into(),
                "auth.bearer_tokens[0]: the token has characters other than printable ASCII",
            ),
            (
                "auth:\n  bearer_tokens:\n    - {token: \"\", scopes: [query]}\n".into(),
                "auth.bearer_tokens[0].token: the token is empty at line 3",
            ),
            (
                "auth:\n  bearer_tokens:\n    - {token: t}\n".into(),
                "auth.bearer_tokens[0]: missing field `scopes`",
            ),
            (
                "auth:\n  bearer_tokens:\n    - {token: t, scopes: [root]}\n".into(),
                "auth.bearer_tokens[0].scopes[0]: unknown scope \"root\"",
            ),
            (
                "auth:\n  bearer_tokens:\n    - {token: t, scopes: [query], networks: [nowhere]}\n".into(),
                "auth.bearer_tokens[0].networks[0]: \"nowhere\" is not an address or CIDR range",
            ),
            (
                "auth:\n  bearer_tokens:\n    - [t]\n".into(),
                "auth.bearer_tokens[0]: invalid type: sequence, expected a token, or a mapping",
            ),
            (
                "auth:\n  bearer_tokens:\n    - tok\n    - {token: tok, scopes: [metrics]}\n".into(),
                "auth.bearer_tokens[1]: the same token is listed twice",
            ),
        ];
        for (yaml, want) in cases {
            let err = Config::parse(&yaml).unwrap_err();
            assert!(
                err.contains(want),
                "for {yaml:?}\n got: {err}\nwant: {want}"
            );
            assert!(err.contains("line "), "no line in: {err}");
        }
    }
}
