//! Signed expiring access tokens (JWT, HS256, keys named by id so they can be rotated), and the
//! [`Caller`] extractor through which routes check the caller's role (roles and permissions
//! are the catalogue's: [`prodcat_catalogue::access`]).

use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use prodcat_catalogue::{Permission, Role};

use crate::error::ApiError;
use crate::keys::SigningKeys;

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The user or client name.
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
    /// The user's token version when the token was issued: disabling the user or changing
    /// their role or password increments it, and older tokens are refused.
    #[serde(default)]
    pub ver: i64,
}

const ISSUER: &str = "prodcat";

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Malformed,
    BadSignature,
    Expired,
    /// The user was disabled, or changed role or password, after the token was issued.
    Revoked,
}

impl TokenProblem {
    pub fn message(self) -> &'static str {
        match self {
            TokenProblem::Malformed => "the access token is malformed",
            TokenProblem::BadSignature => "the access token's signature is not valid",
            TokenProblem::Expired => "the access token has expired; request a new one",
            TokenProblem::Revoked => {
                "the access token was revoked (the account was disabled or changed); request a \
                 new one"
            }
        }
    }
}

/// Signs and verifies access tokens (JWT, HS256, with the signing key's id in the `kid`
/// header so keys can be rotated).
#[derive(Clone)]
pub struct TokenSigner {
    keys: SigningKeys,
    lifetime: Duration,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("lifetime", &self.lifetime)
            .field("signing_key", &self.keys.signing().id)
            .finish_non_exhaustive()
    }
}

fn now_seconds() -> i64 {
    prodcat_storage::now_ms() / 1000
}

fn mac_of(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length; the fallback only satisfies the type.
    <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()))
}

impl TokenSigner {
    pub fn new(keys: SigningKeys, lifetime: Duration) -> Self {
        Self { keys, lifetime }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A token for `subject` with `role` at token version 0, valid from now for the
    /// configured lifetime.
    pub fn issue(&self, subject: &str, role: Role) -> String {
        self.issue_versioned(subject, role, 0)
    }

    /// A token for `subject` with `role` at the user's current token `version`.
    pub fn issue_versioned(&self, subject: &str, role: Role, version: i64) -> String {
        let now = now_seconds();
        self.issue_claims(&TokenClaims {
            sub: subject.to_string(),
            role,
            iss: ISSUER.to_string(),
            iat: now,
            exp: now + self.lifetime.as_secs() as i64,
            ver: version,
        })
    }

    /// Signs arbitrary claims with the signing key (tests use it for expired tokens).
    pub fn issue_claims(&self, claims: &TokenClaims) -> String {
        let key = self.keys.signing();
        let header = serde_json::json!({ "alg": "HS256", "typ": "JWT", "kid": key.id });
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = mac_of(&key.secret);
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Checks the key id, the signature (constant time), the algorithm, the issuer and the
    /// expiry. A token without a key id is checked with the signing key.
    pub fn verify(&self, token: &str) -> Result<TokenClaims, TokenProblem> {
        let mut parts = token.trim().split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenProblem::Malformed);
        };
        let header_bytes = URL_SAFE_NO_PAD
            .decode(header)
            .map_err(|_| TokenProblem::Malformed)?;
        let header_json: serde_json::Value =
            serde_json::from_slice(&header_bytes).map_err(|_| TokenProblem::Malformed)?;
        if header_json.get("alg").and_then(|v| v.as_str()) != Some("HS256") {
            return Err(TokenProblem::BadSignature);
        }
        let key = match header_json.get("kid") {
            None => self.keys.signing(),
            Some(kid) => kid
                .as_str()
                .and_then(|kid| self.keys.by_id(kid))
                .ok_or(TokenProblem::BadSignature)?,
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenProblem::Malformed)?;
        let mut mac = mac_of(&key.secret);
        mac.update(header.as_bytes());
        mac.update(b".");
        mac.update(payload.as_bytes());
        mac.verify_slice(&signature)
            .map_err(|_| TokenProblem::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenProblem::Malformed)?;
        let claims: TokenClaims =
            serde_json::from_slice(&payload).map_err(|_| TokenProblem::Malformed)?;
        if claims.iss != ISSUER {
            return Err(TokenProblem::BadSignature);
        }
        if claims.exp <= now_seconds() {
            return Err(TokenProblem::Expired);
        }
        Ok(claims)
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// `Ok` when the caller's role has `permission`, else a 403.
    pub fn require(&self, permission: Permission) -> Result<(), ApiError> {
        if self.role.allows(permission) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "the {} role may not {}",
                self.role.as_str(),
                permission.as_str()
            )))
        }
    }
}

/// What the authentication middleware found, stored in the request's extensions.
#[derive(Debug, Clone)]
pub enum Authentication {
    Missing,
    Invalid(TokenProblem),
    /// The signature and expiry are fine; whether it was revoked is checked next.
    Verified(TokenClaims),
    Valid(Caller),
}

impl Authentication {
    /// Reads the `Authorization: Bearer` header.
    pub fn of_headers(headers: &axum::http::HeaderMap, signer: &TokenSigner) -> Self {
        let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
            return Authentication::Missing;
        };
        let Ok(text) = value.to_str() else {
            return Authentication::Invalid(TokenProblem::Malformed);
        };
        let token = match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token,
            _ => return Authentication::Invalid(TokenProblem::Malformed),
        };
        match signer.verify(token) {
            Ok(claims) => Authentication::Verified(claims),
            Err(problem) => Authentication::Invalid(problem),
        }
    }

    pub fn caller(&self) -> Option<&Caller> {
        match self {
            Authentication::Valid(caller) => Some(caller),
            Authentication::Missing | Authentication::Invalid(_) | Authentication::Verified(_) => {
                None
            }
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Authentication>() {
            Some(Authentication::Valid(caller)) => Ok(caller.clone()),
            Some(Authentication::Invalid(problem)) => {
                Err(ApiError::unauthorized(problem.message()))
            }
            Some(Authentication::Missing) | Some(Authentication::Verified(_)) | None => {
                Err(ApiError::unauthorized(
                    "this route needs an access token: send Authorization: Bearer <token> \
                     (get one from POST /v1/auth/token)",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let signer = TokenSigner::new(
            SigningKeys::single(&[1; 32]).unwrap(),
            Duration::from_secs(60),
        );
        let token = signer.issue("alice", Role::Reviewer);
        let claims = signer.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.role, Role::Reviewer);

        // Another key, a changed payload, the "none" algorithm, garbage: all refused.
        let other = TokenSigner::new(
            SigningKeys::single(&[2; 32]).unwrap(),
            Duration::from_secs(60),
        );
        assert_eq!(other.verify(&token), Err(TokenProblem::BadSignature));
        let parts: Vec<&str> = token.split('.').collect();
        let forged_claims = URL_SAFE_NO_PAD
            .encode(br#"{"sub":"alice","role":"admin","iss":"prodcat","iat":0,"exp":99999999999}"#);
        let forged = format!("{}.{}.{}", parts[0], forged_claims, parts[2]);
        assert_eq!(signer.verify(&forged), Err(TokenProblem::BadSignature));
        let none_header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let unsigned = format!("{none_header}.{forged_claims}.");
        assert!(signer.verify(&unsigned).is_err());
        for garbage in ["", "a.b", "a.b.c.d", "!!!.???.***"] {
            assert!(signer.verify(garbage).is_err(), "{garbage}");
        }
        let expired = signer.issue_claims(&TokenClaims {
            sub: "alice".to_string(),
            role: Role::Admin,
            iss: ISSUER.to_string(),
            iat: 0,
            exp: 1,
            ver: 0,
        });
        assert_eq!(signer.verify(&expired), Err(TokenProblem::Expired));
    }

    #[test]
    fn rotated_keys_keep_old_tokens_valid_until_removed() {
        let old = crate::keys::SigningKey {
            id: "k1".to_string(),
            secret: vec![1; 32],
        };
        let new = crate::keys::SigningKey {
            id: "k2".to_string(),
            secret: vec![2; 32],
        };
        let lifetime = Duration::from_secs(60);
        let before = TokenSigner::new(SigningKeys::new(vec![old.clone()]).unwrap(), lifetime);
        let during = TokenSigner::new(
            SigningKeys::new(vec![new.clone(), old.clone()]).unwrap(),
            lifetime,
        );
        let after = TokenSigner::new(SigningKeys::new(vec![new]).unwrap(), lifetime);
        let old_token = before.issue("alice", Role::Viewer);
        let new_token = during.issue("alice", Role::Viewer);
        assert!(during.verify(&old_token).is_ok());
        assert!(after.verify(&new_token).is_ok());
        assert_eq!(after.verify(&old_token), Err(TokenProblem::BadSignature));
        assert_eq!(before.verify(&new_token), Err(TokenProblem::BadSignature));
    }
}
