//! HTTP basic authentication for every endpoint when `auth.basic` is
//! configured (the original implemented it but never enforced it).

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
use crate::config::BasicAuth;

/// Whether `authorization` (an `Authorization` header value) carries the
/// configured credentials. Passwords may be bcrypt hashes or, as in old
/// configs, plain text (compared in constant time).
pub(crate) fn allows(auth: &BasicAuth, authorization: Option<&HeaderValue>) -> bool {
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
    let Some(auth) = &shared.config.auth.basic else {
        return next.run(request).await;
    };
    if allows(auth, request.headers().get(header::AUTHORIZATION)) {
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

    #[test]
    fn bcrypt_and_plain_passwords() {
        let hashed = BasicAuth {
            username: "admin".into(),
            password: bcrypt::hash("s3cret", 4).unwrap(),
        };
        let plain = BasicAuth {
            username: "admin".into(),
            password: "s3cret".into(),
        };
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
}
