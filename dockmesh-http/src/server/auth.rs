//! API tokens: how they are made and stored (only the SHA-256 of the secret), and the
//! middleware that requires `Authorization: Bearer <token>` on the API.

use crate::server::error::ApiError;
use crate::server::state::ServerState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dockmesh_core::records::{Scope, TokenKind, TokenRecord, TokenUse};
use jiff::Timestamp;
use sha2::{Digest, Sha256};

/// The prefix of every API token's secret, so a leaked one is recognisable.
pub const API_TOKEN_PREFIX: &str = "dmt_";

/// Who made a request: the name of the API token it carried (`token:<name>`), and what that
/// token may do (see [`crate::server::scope`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor(pub String, pub Scope);

/// The hex SHA-256 of a token's secret: what the store keeps.
pub fn hash_token(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new API token of scope `admin`: its secret (shown once) and the record to store.
pub fn new_api_token(
    name: &str,
    now: Timestamp,
) -> Result<(String, TokenRecord), getrandom::Error> {
    new_scoped_api_token(name, Scope::Admin, now)
}

/// A new API token of the given scope: its secret (shown once) and the record to store.
pub fn new_scoped_api_token(
    name: &str,
    scope: Scope,
    now: Timestamp,
) -> Result<(String, TokenRecord), getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let secret = format!("{API_TOKEN_PREFIX}{}", hex::encode(bytes));
    let record = TokenRecord {
        hash: hash_token(&secret),
        kind: TokenKind::Api,
        name: name.to_owned(),
        created_at: now,
        expires_at: None,
        one_time: false,
        used_at: None,
        scope,
    };
    Ok((secret, record))
}

fn unauthorized(why: &str) -> Response {
    let mut r = ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", why)
        .with_hint("pass `Authorization: Bearer <token>`; `dockmesh token create` makes one")
        .into_response();
    r.headers_mut()
        .insert(WWW_AUTHENTICATE, "Bearer".parse().expect("static header"));
    r
}

/// Require a valid API token; the request carries an [`Actor`] from then on.
pub async fn require_token(
    State(state): State<ServerState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(value) = req.headers().get(AUTHORIZATION) else {
        return unauthorized("this request needs an API token and carries none");
    };
    let Some(secret) = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|s| !s.is_empty())
    else {
        return unauthorized("the Authorization header is not `Bearer <token>`");
    };
    let client = crate::server::limit::client_key(req.extensions());
    let limit = &state.auth_limits().bearer;
    if let Some(wait) = limit.blocked(client) {
        return crate::server::limit::too_many("failed API tokens", wait);
    }
    match authenticate(&state, secret).await {
        Ok(actor) => {
            if let Err(refused) = crate::server::scope::authorize_api(&req, &actor) {
                return refused;
            }
            req.extensions_mut().insert(actor);
            next.run(req).await
        }
        Err(TokenRefusal::Store(e)) => e.into_response(),
        Err(refusal) => match limit.failed(client) {
            Some(wait) => crate::server::limit::too_many("failed API tokens", wait),
            None => unauthorized(&refusal.to_string()),
        },
    }
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenRefusal {
    /// The token is an enrollment token.
    #[error("this token is an enrollment token, not an API token")]
    NotApi,
    /// The token has expired.
    #[error("this API token has expired")]
    Expired,
    /// A one-time token was used already.
    #[error("this one-time token was already used")]
    AlreadyUsed,
    /// No such token (or it was revoked).
    #[error("this API token is not known (or was revoked)")]
    Unknown,
    /// The store did not answer.
    #[error("the token could not be checked")]
    Store(ApiError),
}

/// Check an API token's secret against the store: the [`Actor`] it names, or why it is refused.
/// The API's bearer middleware and the dashboard's login both use it. An enrollment token
/// (`dme_…`) is refused before the store is asked, so it is not spent.
pub async fn authenticate(state: &ServerState, secret: &str) -> Result<Actor, TokenRefusal> {
    if secret.starts_with(crate::channel::enroll::ENROLL_TOKEN_PREFIX) {
        return Err(TokenRefusal::NotApi);
    }
    authenticate_hash(state, &hash_token(secret)).await
}

/// [`authenticate`] for a token known by its hash (a dashboard session keeps only the hash).
/// A token of another kind is refused without being presented to the store's `use_token`,
/// so a one-time token of another kind is never spent here.
pub async fn authenticate_hash(state: &ServerState, hash: &str) -> Result<Actor, TokenRefusal> {
    let now = state.clock().now();
    match state.store().list_tokens().await {
        Ok(tokens) => match tokens.iter().find(|t| t.hash == hash) {
            None => return Err(TokenRefusal::Unknown),
            Some(t) if t.kind != TokenKind::Api => return Err(TokenRefusal::NotApi),
            Some(_) => {}
        },
        Err(e) => return Err(TokenRefusal::Store(ApiError::from(e))),
    }
    match state.store().use_token(hash, now).await {
        Ok(TokenUse::Accepted { token }) if token.kind == TokenKind::Api => {
            Ok(Actor(format!("token:{}", token.name), token.scope))
        }
        Ok(TokenUse::Accepted { .. }) => Err(TokenRefusal::NotApi),
        Ok(TokenUse::Expired) => Err(TokenRefusal::Expired),
        Ok(TokenUse::AlreadyUsed) => Err(TokenRefusal::AlreadyUsed),
        Ok(TokenUse::Unknown) => Err(TokenRefusal::Unknown),
        Err(e) => Err(TokenRefusal::Store(ApiError::from(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_stored_hashed() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let (a, ra) = new_api_token("ci", now).unwrap();
        let (b, _) = new_api_token("ci", now).unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(API_TOKEN_PREFIX));
        assert_eq!(a.len(), API_TOKEN_PREFIX.len() + 64);
        assert_eq!(ra.hash, hash_token(&a));
        assert!(!ra.hash.contains(&a[API_TOKEN_PREFIX.len()..]));
        assert_eq!(ra.kind, TokenKind::Api);
        // A known vector: the SHA-256 of "abc".
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
