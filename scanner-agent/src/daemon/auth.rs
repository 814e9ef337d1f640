//! Authentication for every endpoint when `auth.basic` or
//! `auth.bearer_tokens` is configured (the original implemented basic auth
//! but never enforced it).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use subtle::ConstantTimeEq as _;

use super::Shared;
use crate::config::{Auth, BasicAuth};

/// Whether `authorization` (an `Authorization` header value) carries one of
/// the configured bearer tokens or the basic-auth credentials.
pub(crate) fn allows(auth: &Auth, authorization: Option<&HeaderValue>) -> bool {
    let value = authorization.and_then(|v| v.to_str().ok());
    if let Some(token) = value.and_then(|v| v.strip_prefix("Bearer ")) {
        let token = token.trim().as_bytes();
        // Every configured token is compared, so timing tells nothing.
        return auth
            .bearer_tokens
            .iter()
            .fold(false, |ok, t| ok | bool::from(t.as_bytes().ct_eq(token)));
    }
    basic_credentials(authorization).is_some_and(|(user, password)| {
        auth.users()
            .fold(false, |ok, u| ok | allows_basic(u, &user, &password))
    })
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
pub(super) fn caller(headers: &HeaderMap) -> String {
    let authorization = headers.get(header::AUTHORIZATION);
    match basic_credentials(authorization) {
        Some((user, _)) => user,
        None if authorization.is_some_and(|v| v.as_bytes().starts_with(b"Bearer ")) => {
            "(bearer token)".into()
        }
        None => "-".into(),
    }
}

/// Basic-auth check of one user. Passwords may be bcrypt hashes or, as in
/// old configs, plain text (compared in constant time).
fn allows_basic(auth: &BasicAuth, user: &str, password: &str) -> bool {
    let user_ok: bool = user.as_bytes().ct_eq(auth.username.as_bytes()).into();
    let password_ok = if auth.password.starts_with("$2") {
        // Hashing is slow on purpose: only for the user it can match.
        user_ok && bcrypt::verify(password, &auth.password).unwrap_or(false)
    } else {
        password.as_bytes().ct_eq(auth.password.as_bytes()).into()
    };
    user_ok & password_ok
}

/// Marks a request whose credentials [`require`] checked, so a route that
/// is never anonymous (the passthrough) need not check them again (bcrypt
/// is slow on purpose).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Authenticated;

pub(super) async fn require(
    State(shared): State<Arc<Shared>>,
    mut request: Request,
    next: Next,
) -> Response {
    let live = shared.live();
    let auth = &live.config.auth;
    if !auth.configured() {
        return next.run(request).await;
    }
    if allows(auth, request.headers().get(header::AUTHORIZATION)) {
        request.extensions_mut().insert(Authenticated);
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"scanner-agent\"")],
        "authentication required\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "Basic {}",
            STANDARD.encode(format!("{user}:{password}"))
        ))
        .unwrap()
    }

    fn basic(password: String) -> Auth {
        Auth {
            basic: Some(BasicAuth {
                username: "admin".into(),
                password,
            }),
            ..Auth::default()
        }
    }

    #[test]
    fn bcrypt_and_plain_passwords() {
        let hashed = basic(bcrypt::hash("s3cret", 4).unwrap());
        let plain = basic("s3cret".into());
        for auth in [&hashed, &plain] {
            assert!(allows(auth, Some(&header("admin", "s3cret"))));
            assert!(!allows(auth, Some(&header("admin", "s3cre"))));
            assert!(!allows(auth, Some(&header("root", "s3cret"))));
            assert!(!allows(auth, None));
            assert!(!allows(
                auth,
                Some(&HeaderValue::from_static("Bearer s3cret"))
            ));
            assert!(!allows(auth, Some(&HeaderValue::from_static("Basic !!!"))));
        }
    }

    #[test]
    fn bearer_tokens() {
        let auth = Auth {
            bearer_tokens: vec!["tok-one".into(), "tok-two".into()],
            ..Auth::default()
        };
        assert!(allows(
            &auth,
            Some(&HeaderValue::from_static("Bearer tok-two"))
        ));
        assert!(!allows(
            &auth,
            Some(&HeaderValue::from_static("Bearer tok-thre"))
        ));
        assert!(!allows(&auth, Some(&header("admin", "tok-one"))));
        assert!(!allows(&auth, None));
    }

    #[test]
    fn every_web_config_user_is_accepted() {
        let auth = Auth {
            web_users: ["alice", "bob"]
                .map(|u| BasicAuth {
                    username: u.into(),
                    password: bcrypt::hash(format!("{u}-pw"), 4).unwrap(),
                })
                .into(),
            ..basic("s3cret".into())
        };
        assert!(allows(&auth, Some(&header("alice", "alice-pw"))));
        assert!(allows(&auth, Some(&header("bob", "bob-pw"))));
        assert!(allows(&auth, Some(&header("admin", "s3cret"))));
        assert!(!allows(&auth, Some(&header("alice", "bob-pw"))));
    }
}
