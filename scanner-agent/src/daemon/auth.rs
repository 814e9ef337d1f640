//! Authentication for every endpoint when `auth.basic` or
//! `auth.bearer_tokens` is configured (the original implemented basic auth
//! but never enforced it).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
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
    auth.basic
        .as_ref()
        .is_some_and(|basic| allows_basic(basic, authorization))
}

/// Basic-auth check. Passwords may be bcrypt hashes or, as in old configs,
/// plain text (compared in constant time).
fn allows_basic(auth: &BasicAuth, authorization: Option<&HeaderValue>) -> bool {
    let Some(encoded) = authorization
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Ok(decoded) = STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some((user, password)) = std::str::from_utf8(&decoded)
        .ok()
        .and_then(|s| s.split_once(':'))
    else {
        return false;
    };
    let user_ok: bool = user.as_bytes().ct_eq(auth.username.as_bytes()).into();
    let password_ok = if auth.password.starts_with("$2") {
        bcrypt::verify(password, &auth.password).unwrap_or(false)
    } else {
        password.as_bytes().ct_eq(auth.password.as_bytes()).into()
    };
    user_ok & password_ok
}

pub(super) async fn require(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let auth = &shared.config.auth;
    if !auth.configured() || allows(auth, request.headers().get(header::AUTHORIZATION)) {
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
            bearer_tokens: Vec::new(),
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
            basic: None,
            bearer_tokens: vec!["tok-one".into(), "tok-two".into()],
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
}
