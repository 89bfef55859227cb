//! People and service clients that may call the API (`users` table): each has a role, and a
//! password (people) or client secret (services) stored only as an argon2 hash.

use prodcat_storage::{now_ms, Database};
use sqlx::Row;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::access::Role;
use crate::CatalogueError;

/// A person (password grant) or a service client (client credentials grant).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserKind {
    Person,
    Service,
}

impl UserKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UserKind::Person => "person",
            UserKind::Service => "service",
        }
    }

    fn parse(text: &str) -> Result<Self, CatalogueError> {
        match text {
            "person" => Ok(UserKind::Person),
            "service" => Ok(UserKind::Service),
            other => Err(CatalogueError::Corrupt {
                what: "user kind".to_string(),
                reason: format!("unknown kind {other:?}"),
            }),
        }
    }
}

/// A user to create.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub name: String,
    pub role: Role,
    pub kind: UserKind,
    /// The password or client secret in clear (hashed before it is stored).
    pub secret: String,
}

/// A stored user (the hash stays inside this crate's callers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    pub kind: UserKind,
    pub password_hash: String,
    pub created_at_ms: i64,
    pub disabled: bool,
    /// Incremented whenever the user is disabled, changes role or password: tokens carry the
    /// version they were issued at and older ones are refused.
    pub token_version: i64,
}

/// The longest password or client secret accepted (checked before any hashing).
pub const MAX_SECRET_BYTES: usize = 256;
/// The longest user name.
pub const MAX_NAME_BYTES: usize = 64;

fn check_secret(secret: &str) -> Result<(), CatalogueError> {
    if secret.chars().count() < 8 {
        return Err(CatalogueError::Invalid(
            "the password must have at least 8 characters".to_string(),
        ));
    }
    if secret.len() > MAX_SECRET_BYTES {
        return Err(CatalogueError::Invalid(format!(
            "the password must have at most {MAX_SECRET_BYTES} bytes"
        )));
    }
    Ok(())
}

/// Whether `name` has the shape of a user name (1 to 64 letters, digits, `-_.@`).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

fn check_name(name: &str) -> Result<(), CatalogueError> {
    if is_valid_name(name) {
        Ok(())
    } else {
        Err(CatalogueError::Invalid(format!(
            "invalid user name {name:?}: use 1 to 64 letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

/// Creates a user; refuses an existing name and a secret shorter than 8 characters.
pub async fn add_user(database: &Database, user: &NewUser) -> Result<UserRecord, CatalogueError> {
    check_name(&user.name)?;
    check_secret(&user.secret)?;
    if get_user(database, &user.name).await?.is_some() {
        return Err(CatalogueError::UserExists(user.name.clone()));
    }
    let secret = user.secret.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&secret))
        .await
        .map_err(|error| CatalogueError::PasswordHash(error.to_string()))??;
    let now = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO users (name, role, kind, password_hash, created_at_ms, disabled) \
         VALUES ($1, $2, $3, $4, $5, 0)",
    )
    .bind(user.name.clone())
    .bind(user.role.as_str())
    .bind(user.kind.as_str())
    .bind(hash.clone())
    .bind(now)
    .execute(database.pool())
    .await;
    if let Err(error) = inserted {
        if get_user(database, &user.name).await?.is_some() {
            return Err(CatalogueError::UserExists(user.name.clone()));
        }
        return Err(error.into());
    }
    Ok(UserRecord {
        name: user.name.clone(),
        role: user.role,
        kind: user.kind,
        password_hash: hash,
        created_at_ms: now,
        disabled: false,
        token_version: 0,
    })
}

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<UserRecord, CatalogueError> {
    let role: String = row.try_get("role")?;
    let kind: String = row.try_get("kind")?;
    let disabled: i64 = row.try_get("disabled")?;
    Ok(UserRecord {
        name: row.try_get("name")?,
        role: Role::parse(&role).map_err(|_| CatalogueError::Corrupt {
            what: "user role".to_string(),
            reason: format!("unknown role {role:?}"),
        })?,
        kind: UserKind::parse(&kind)?,
        password_hash: row.try_get("password_hash")?,
        created_at_ms: row.try_get("created_at_ms")?,
        disabled: disabled != 0,
        token_version: row.try_get("token_version")?,
    })
}

/// A user by name.
pub async fn get_user(
    database: &Database,
    name: &str,
) -> Result<Option<UserRecord>, CatalogueError> {
    let row = sqlx::query(
        "SELECT name, role, kind, password_hash, created_at_ms, disabled, token_version FROM users \
         WHERE name = $1",
    )
    .bind(name.to_string())
    .fetch_optional(database.pool())
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// Every user, by name.
pub async fn list_users(database: &Database) -> Result<Vec<UserRecord>, CatalogueError> {
    let rows = sqlx::query(
        "SELECT name, role, kind, password_hash, created_at_ms, disabled, token_version FROM users \
         ORDER BY name",
    )
    .fetch_all(database.pool())
    .await?;
    rows.iter().map(user_from_row).collect()
}

/// Disables (or enables again) a user: a disabled user gets no new tokens, and the tokens it
/// holds stop working (their version is outdated).
pub async fn set_disabled(
    database: &Database,
    name: &str,
    disabled: bool,
) -> Result<(), CatalogueError> {
    let result = sqlx::query(
        "UPDATE users SET disabled = $1, token_version = token_version + 1 WHERE name = $2",
    )
    .bind(i64::from(disabled))
    .bind(name.to_string())
    .execute(database.pool())
    .await?;
    if result.rows_affected() == 0 {
        return Err(CatalogueError::UnknownUser(name.to_string()));
    }
    Ok(())
}

/// Gives a user another role; the tokens it holds stop working.
pub async fn set_role(database: &Database, name: &str, role: Role) -> Result<(), CatalogueError> {
    let result = sqlx::query(
        "UPDATE users SET role = $1, token_version = token_version + 1 WHERE name = $2",
    )
    .bind(role.as_str())
    .bind(name.to_string())
    .execute(database.pool())
    .await?;
    if result.rows_affected() == 0 {
        return Err(CatalogueError::UnknownUser(name.to_string()));
    }
    Ok(())
}

/// Sets a user's password (or client secret); the tokens it holds stop working.
pub async fn set_password(
    database: &Database,
    name: &str,
    secret: &str,
) -> Result<(), CatalogueError> {
    check_secret(secret)?;
    let secret = secret.to_string();
    let hash = tokio::task::spawn_blocking(move || hash_password(&secret))
        .await
        .map_err(|error| CatalogueError::PasswordHash(error.to_string()))??;
    let result = sqlx::query(
        "UPDATE users SET password_hash = $1, token_version = token_version + 1 WHERE name = $2",
    )
    .bind(hash)
    .bind(name.to_string())
    .execute(database.pool())
    .await?;
    if result.rows_affected() == 0 {
        return Err(CatalogueError::UnknownUser(name.to_string()));
    }
    Ok(())
}

/// An argon2id hash (PHC string) of a password or client secret.
pub fn hash_password(password: &str) -> Result<String, CatalogueError> {
    let salt_bytes: [u8; 16] = rand::random();
    let salt = SaltString::encode_b64(&salt_bytes)
        .map_err(|error| CatalogueError::PasswordHash(error.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| CatalogueError::PasswordHash(error.to_string()))
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
