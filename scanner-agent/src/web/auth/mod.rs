//! Authentication and authorisation of every endpoint when credentials are
//! configured (the original implemented basic auth but never enforced it).
//! [`authenticate`] runs for every request: who is calling (401 when no one
//! we know, 503 when the credential cannot be checked now; see [`verify`]).
//! [`authorize`] runs per route: whether that caller may call it from where
//! it is (403 outside its scopes or networks).

mod verify;

use std::{net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use subtle::ConstantTimeEq as _;

use self::verify::Checked;
pub(crate) use self::verify::Verifier;
use crate::config::{Auth, Networks, Scope, Scopes};

/// What [`authenticate`] checks against: the credentials configured now
/// (a reload replaces them) and the verifier that checks passwords.
pub(crate) trait Credentials: Send + Sync + 'static {
    /// Keeps the configuration in force while one request is checked.
    type Current: Send + 'static;
    fn current(&self) -> Self::Current;
    fn auth(current: &Self::Current) -> &Auth;
    fn verifier(&self) -> &Verifier;
}

/// Who a request was authenticated as, with what it may do; a request
/// extension set by [`authenticate`], so a route that is never anonymous
/// (the passthrough) can tell a checked request without checking again.
#[derive(Clone, Debug)]
pub(crate) struct Authenticated {
    /// The user name, or `(bearer token)` (a token is never logged).
    pub name: String,
    pub scopes: Scopes,
    pub networks: Option<Networks>,
}

/// Why a request is not let through.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    /// 401: no credentials, or wrong ones.
    Unknown,
    /// 503: too many credentials are being checked already.
    Busy,
}

/// Who the `Authorization` header says the caller is.
async fn identify(
    verifier: &Verifier,
    auth: &Auth,
    authorization: Option<&HeaderValue>,
) -> Result<Authenticated, Refusal> {
    let value = authorization.and_then(|v| v.to_str().ok());
    if let Some(token) = value.and_then(|v| v.strip_prefix("Bearer ")) {
        let token = token.trim().as_bytes();
        // Every configured token is compared, so timing tells nothing.
        let found = auth.bearer_tokens.iter().fold(None, |found, t| {
            if bool::from(t.token.as_bytes().ct_eq(token)) {
                Some(t)
            } else {
                found
            }
        });
        return found
            .map(|t| Authenticated {
                name: "(bearer token)".into(),
                scopes: t.scopes,
                networks: t.networks.clone(),
            })
            .ok_or(Refusal::Unknown);
    }
    let (user, password) = basic_credentials(authorization).ok_or(Refusal::Unknown)?;
    match verifier.check(auth, &user, &password).await {
        Checked::Valid(account) => Ok(Authenticated {
            name: account.username.to_owned(),
            scopes: account.scopes,
            networks: account.networks.cloned(),
        }),
        Checked::Invalid => Err(Refusal::Unknown),
        Checked::Busy => Err(Refusal::Busy),
    }
}

/// The user and password of a `Basic` authorization header.
fn basic_credentials(authorization: Option<&HeaderValue>) -> Option<(String, String)> {
    let encoded = authorization?.to_str().ok()?.strip_prefix("Basic ")?;
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (user, password) = decoded.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Who a request says it is, for the audit log: the basic-auth user, a
/// bearer token (never printed), or `-`.
pub(crate) fn caller(headers: &HeaderMap) -> String {
    let authorization = headers.get(header::AUTHORIZATION);
    match basic_credentials(authorization) {
        Some((user, _)) => user,
        None if authorization.is_some_and(|v| v.as_bytes().starts_with(b"Bearer ")) => {
            "(bearer token)".into()
        }
        None => "-".into(),
    }
}

/// Lets a request through only with valid credentials, when any are configured.
pub(crate) async fn authenticate<C: Credentials>(
    State(credentials): State<Arc<C>>,
    mut request: Request,
    next: Next,
) -> Response {
    let current = credentials.current();
    let auth = C::auth(&current);
    if !auth.configured() {
        return next.run(request).await;
    }
    let authorization = request.headers().get(header::AUTHORIZATION);
    match identify(credentials.verifier(), auth, authorization).await {
        Ok(who) => {
            request.extensions_mut().insert(who);
            next.run(request).await
        }
        Err(Refusal::Unknown) => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"scanner-agent\"")],
            "authentication required\n",
        )
            .into_response(),
        Err(Refusal::Busy) => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "too many credentials are being checked at once; retry shortly\n",
        )
            .into_response(),
    }
}

/// Lets an authenticated request through only if its credential has
/// `scope` and is used from one of its networks.
pub(crate) async fn authorize(
    State(scope): State<Scope>,
    request: Request,
    next: Next,
) -> Response {
    // Without an identity, authentication is not configured: the handlers
    // that are never anonymous (/query, the passthrough) refuse on their own.
    if let Some(who) = request.extensions().get::<Authenticated>() {
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        if let Err(why) = permits(who, scope, peer) {
            return (StatusCode::FORBIDDEN, format!("{why}\n")).into_response();
        }
    }
    next.run(request).await
}

/// Whether `who` may call a route of `scope` from `peer`, or why not.
fn permits(who: &Authenticated, scope: Scope, peer: Option<SocketAddr>) -> Result<(), String> {
    if !who.scopes.contains(scope) {
        return Err(format!(
            "{} may not call this: it lacks the {scope} scope",
            who.name
        ));
    }
    match (&who.networks, peer) {
        (None, _) => Ok(()),
        (Some(networks), Some(peer)) if networks.contain(peer.ip()) => Ok(()),
        (Some(_), Some(peer)) => Err(format!(
            "{} may not be used from {}",
            who.name,
            peer.ip().to_canonical()
        )),
        (Some(_), None) => Err(format!(
            "{} is limited to networks and the caller's address is unknown",
            who.name
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn header(user: &str, password: &str) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "Basic {}",
            STANDARD.encode(format!("{user}:{password}"))
        ))
        .unwrap()
    }

    fn auth(yaml: &str) -> Auth {
        Config::parse(yaml).unwrap().auth
    }

    async fn who(auth: &Auth, value: Option<HeaderValue>) -> Result<Authenticated, Refusal> {
        identify(&Verifier::with_threads(1), auth, value.as_ref()).await
    }

    #[tokio::test]
    async fn basic_users_of_every_kind() {
        let hash = bcrypt::hash("alice-pw", 4).unwrap();
        let mut a = auth(&format!(
            "auth:\n  basic: {{username: admin, password: s3cret}}\n  users:\n    \
             - {{username: alice, password: \"{hash}\", scopes: [metrics], networks: [198.18.0.0/15]}}\n"
        ));
        a.web_users = vec![crate::config::BasicAuth {
            username: crate::config::Username::parse("bob").unwrap(),
            password: crate::config::Password::parse(&bcrypt::hash("bob-pw", 4).unwrap()).unwrap(),
        }];
        let admin = who(&a, Some(header("admin", "s3cret"))).await.unwrap();
        assert_eq!((admin.name.as_str(), admin.scopes), ("admin", Scopes::ALL));
        let alice = who(&a, Some(header("alice", "alice-pw"))).await.unwrap();
        assert_eq!(alice.name, "alice");
        assert!(alice.scopes.contains(Scope::Metrics) && !alice.scopes.contains(Scope::Query));
        assert!(alice.networks.is_some());
        let bob = who(&a, Some(header("bob", "bob-pw"))).await.unwrap();
        assert_eq!((bob.name.as_str(), bob.scopes), ("bob", Scopes::ALL));
        for wrong in [
            Some(header("alice", "bob-pw")),
            Some(header("root", "s3cret")),
            Some(header("", "")),
            Some(HeaderValue::from_static("Basic Og==")),
            Some(HeaderValue::from_static("Basic !!!")),
            Some(HeaderValue::from_static("Bearer s3cret")),
            None,
        ] {
            assert_eq!(
                who(&a, wrong.clone()).await.unwrap_err(),
                Refusal::Unknown,
                "{wrong:?}"
            );
        }
    }

    #[tokio::test]
    async fn bearer_tokens_with_and_without_scopes() {
        let a = auth(
            "auth:\n  bearer_tokens:\n    - tok-one\n    - {token: tok-two, scopes: [query], networks: [\"::1\"]}\n",
        );
        let one = who(&a, Some(HeaderValue::from_static("Bearer tok-one")))
            .await
            .unwrap();
        assert_eq!(
            (one.name.as_str(), one.scopes),
            ("(bearer token)", Scopes::ALL)
        );
        let two = who(&a, Some(HeaderValue::from_static("Bearer tok-two")))
            .await
            .unwrap();
        assert!(two.scopes.contains(Scope::Query) && !two.scopes.contains(Scope::Metrics));
        for wrong in ["Bearer tok-thre", "Bearer ", "Basic dG9rLW9uZTo="] {
            let value = Some(HeaderValue::from_static(wrong));
            assert_eq!(
                who(&a, value).await.unwrap_err(),
                Refusal::Unknown,
                "{wrong}"
            );
        }
    }

    #[test]
    fn scopes_and_networks_decide_403() {
        let a = auth(
            "auth:\n  bearer_tokens:\n    - {token: t, scopes: [metrics, passthrough], networks: [198.18.0.0/15, \"2001:db8::/32\"]}\n",
        );
        let t = &a.bearer_tokens[0];
        let who = Authenticated {
            name: "(bearer token)".into(),
            scopes: t.scopes,
            networks: t.networks.clone(),
        };
        let inside: SocketAddr = "198.18.0.1:4000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:198.19.0.1]:4000".parse().unwrap();
        let inside6: SocketAddr = "[2001:db8::5]:4000".parse().unwrap();
        let outside: SocketAddr = "[::ffff:127.0.0.1]:4000".parse().unwrap();
        for peer in [inside, mapped, inside6] {
            assert_eq!(permits(&who, Scope::Metrics, Some(peer)), Ok(()), "{peer}");
            assert_eq!(
                permits(&who, Scope::Passthrough, Some(peer)),
                Ok(()),
                "{peer}"
            );
        }
        assert_eq!(
            permits(&who, Scope::Query, Some(inside)).unwrap_err(),
            "(bearer token) may not call this: it lacks the query scope"
        );
        assert_eq!(
            permits(&who, Scope::Metrics, Some(outside)).unwrap_err(),
            "(bearer token) may not be used from 127.0.0.1"
        );
        assert!(permits(&who, Scope::Metrics, None).is_err());
        let anywhere = Authenticated {
            networks: None,
            ..who
        };
        assert_eq!(permits(&anywhere, Scope::Metrics, Some(outside)), Ok(()));
    }
}
