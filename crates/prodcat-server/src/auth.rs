//! Who may do what: roles and the permission each route needs, signed expiring access tokens
//! (JWT, HS256), argon2 password hashes, and the [`Caller`] extractor that routes use.
//!
//! | role | may |
//! |---|---|
//! | `admin` | everything |
//! | `reviewer` | read and write products, the review queue, search |
//! | `service` | predict, classification jobs |
//! | `viewer` | read products, search, similar products |

use std::time::Duration;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::ApiError;
use crate::ServerError;

/// A role given to a user or a service client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Reviewer,
    Service,
    Viewer,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Reviewer, Role::Service, Role::Viewer];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Reviewer => "reviewer",
            Role::Service => "service",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Result<Self, ServerError> {
        match text.trim() {
            "admin" => Ok(Role::Admin),
            "reviewer" => Ok(Role::Reviewer),
            "service" => Ok(Role::Service),
            "viewer" => Ok(Role::Viewer),
            other => Err(ServerError::InvalidInput(format!(
                "unknown role {other:?}: expected admin, reviewer, service or viewer"
            ))),
        }
    }

    /// Whether this role has `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        match self {
            Role::Admin => true,
            Role::Reviewer => match permission {
                Permission::ProductsRead
                | Permission::ProductsWrite
                | Permission::Review
                | Permission::Search => true,
                Permission::Predict | Permission::Jobs | Permission::Models | Permission::Audit => {
                    false
                }
            },
            Role::Service => match permission {
                Permission::Predict | Permission::Jobs => true,
                Permission::ProductsRead
                | Permission::ProductsWrite
                | Permission::Review
                | Permission::Search
                | Permission::Models
                | Permission::Audit => false,
            },
            Role::Viewer => match permission {
                Permission::ProductsRead | Permission::Search => true,
                Permission::Predict
                | Permission::Jobs
                | Permission::ProductsWrite
                | Permission::Review
                | Permission::Models
                | Permission::Audit => false,
            },
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// `POST /v1/predict`, `POST /v1/predict/batch`.
    Predict,
    /// `POST /v1/jobs/classify`, `GET /v1/jobs/{id}`.
    Jobs,
    /// `GET /v1/products...`.
    ProductsRead,
    /// `POST`, `PATCH`, `DELETE /v1/products...`.
    ProductsWrite,
    /// The review queue and decisions.
    Review,
    /// Search and similar products.
    Search,
    /// The model registry: list, promote, roll back.
    Models,
    /// The audit log.
    Audit,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Predict => "predict",
            Permission::Jobs => "jobs",
            Permission::ProductsRead => "read products",
            Permission::ProductsWrite => "change products",
            Permission::Review => "review",
            Permission::Search => "search",
            Permission::Models => "manage models",
            Permission::Audit => "read the audit log",
        }
    }
}

/// The claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// The user or client name.
    pub sub: String,
    pub role: Role,
    pub iss: String,
    pub iat: i64,
    pub exp: i64,
}

const ISSUER: &str = "prodcat";

/// Why a token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    Malformed,
    BadSignature,
    Expired,
}

impl TokenProblem {
    pub fn message(self) -> &'static str {
        match self {
            TokenProblem::Malformed => "the access token is malformed",
            TokenProblem::BadSignature => "the access token's signature is not valid",
            TokenProblem::Expired => "the access token has expired; request a new one",
        }
    }
}

/// Signs and verifies access tokens (JWT, HS256).
#[derive(Clone)]
pub struct TokenSigner {
    key: Hmac<Sha256>,
    lifetime: Duration,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSigner")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

fn now_seconds() -> i64 {
    prodcat_storage::now_ms() / 1000
}

impl TokenSigner {
    pub fn new(secret: &[u8], lifetime: Duration) -> Self {
        // HMAC takes keys of any length; the fallback only satisfies the type.
        let key = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| <Hmac<Sha256> as hmac::digest::KeyInit>::new(&Default::default()));
        Self { key, lifetime }
    }

    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// A token for `subject` with `role`, valid from now for the configured lifetime.
    pub fn issue(&self, subject: &str, role: Role) -> String {
        let now = now_seconds();
        self.issue_claims(&TokenClaims {
            sub: subject.to_string(),
            role,
            iss: ISSUER.to_string(),
            iat: now,
            exp: now + self.lifetime.as_secs() as i64,
        })
    }

    /// Signs arbitrary claims (tests use it for expired tokens).
    pub fn issue_claims(&self, claims: &TokenClaims) -> String {
        let header = URL_SAFE_NO_PAD.encode(HEADER);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signing_input = format!("{header}.{payload}");
        let mut mac = self.key.clone();
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }

    /// Checks the signature (constant time), the algorithm, the issuer and the expiry.
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
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenProblem::Malformed)?;
        let mut mac = self.key.clone();
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

/// An argon2id hash (PHC string) of a password or client secret.
pub fn hash_password(password: &str) -> Result<String, ServerError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|error| ServerError::PasswordHash(error.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| ServerError::PasswordHash(error.to_string()))
}

/// Whether `password` matches the stored hash (false for an unreadable hash).
pub fn verify_password(password: &str, stored_hash: &str) -> bool {
    match PasswordHash::new(stored_hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash that matches nothing, verified for unknown users so that a wrong name takes as long
/// as a wrong password.
pub fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password("decoy password that matches no user").unwrap_or_default())
}

/// A random secret for generated passwords and client secrets (URL-safe, 32 characters).
pub fn generate_secret() -> String {
    let bytes: [u8; 24] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
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
            Ok(claims) => Authentication::Valid(Caller {
                name: claims.sub,
                role: claims.role,
            }),
            Err(problem) => Authentication::Invalid(problem),
        }
    }

    pub fn caller(&self) -> Option<&Caller> {
        match self {
            Authentication::Valid(caller) => Some(caller),
            Authentication::Missing | Authentication::Invalid(_) => None,
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
            Some(Authentication::Missing) | None => Err(ApiError::unauthorized(
                "this route needs an access token: send Authorization: Bearer <token> \
                 (get one from POST /v1/auth/token)",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let signer = TokenSigner::new(&[1; 32], Duration::from_secs(60));
        let token = signer.issue("alice", Role::Reviewer);
        let claims = signer.verify(&token).unwrap();
        assert_eq!(claims.sub, "alice");
        assert_eq!(claims.role, Role::Reviewer);

        // Another key, a changed payload, the "none" algorithm, garbage: all refused.
        let other = TokenSigner::new(&[2; 32], Duration::from_secs(60));
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
        });
        assert_eq!(signer.verify(&expired), Err(TokenProblem::Expired));
    }

    #[test]
    fn passwords_hash_with_a_salt_and_verify() {
        let first = hash_password("correct horse").unwrap();
        let second = hash_password("correct horse").unwrap();
        assert_ne!(first, second, "salted");
        assert!(first.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &first));
        assert!(!verify_password("wrong", &first));
        assert!(!verify_password("correct horse", "not a hash"));
        assert!(!verify_password("anything", decoy_hash()));
        assert_eq!(generate_secret().len(), 32);
    }

    #[test]
    fn role_matrix() {
        use Permission::*;
        let table = [
            (
                Role::Admin,
                vec![
                    Predict,
                    Jobs,
                    ProductsRead,
                    ProductsWrite,
                    Review,
                    Search,
                    Models,
                    Audit,
                ],
            ),
            (
                Role::Reviewer,
                vec![ProductsRead, ProductsWrite, Review, Search],
            ),
            (Role::Service, vec![Predict, Jobs]),
            (Role::Viewer, vec![ProductsRead, Search]),
        ];
        let all = [
            Predict,
            Jobs,
            ProductsRead,
            ProductsWrite,
            Review,
            Search,
            Models,
            Audit,
        ];
        for (role, allowed) in table {
            for permission in all {
                assert_eq!(
                    role.allows(permission),
                    allowed.contains(&permission),
                    "{role:?} {permission:?}"
                );
            }
        }
    }
}
