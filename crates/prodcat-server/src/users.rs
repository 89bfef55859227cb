//! People and service clients that may call the API (`users` table): each has a role, and a
//! password (people) or client secret (services) stored only as an argon2 hash.

use prodcat_storage::{now_ms, Database};
use sqlx::Row;

use crate::auth::{hash_password, Role};
use crate::ServerError;

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

    fn parse(text: &str) -> Result<Self, ServerError> {
        match text {
            "person" => Ok(UserKind::Person),
            "service" => Ok(UserKind::Service),
            other => Err(ServerError::Corrupt {
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
}

fn check_name(name: &str) -> Result<(), ServerError> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if valid {
        Ok(())
    } else {
        Err(ServerError::InvalidInput(format!(
            "invalid user name {name:?}: use 1 to 64 letters, digits, '-', '_', '.' or '@'"
        )))
    }
}

/// Creates a user; refuses an existing name and a secret shorter than 8 characters.
pub async fn add_user(database: &Database, user: &NewUser) -> Result<UserRecord, ServerError> {
    check_name(&user.name)?;
    if user.secret.chars().count() < 8 {
        return Err(ServerError::InvalidInput(
            "the password must have at least 8 characters".to_string(),
        ));
    }
    if get_user(database, &user.name).await?.is_some() {
        return Err(ServerError::UserExists(user.name.clone()));
    }
    let secret = user.secret.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&secret))
        .await
        .map_err(|error| ServerError::PasswordHash(error.to_string()))??;
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
            return Err(ServerError::UserExists(user.name.clone()));
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
    })
}

fn user_from_row(row: &sqlx::any::AnyRow) -> Result<UserRecord, ServerError> {
    let role: String = row.try_get("role")?;
    let kind: String = row.try_get("kind")?;
    let disabled: i64 = row.try_get("disabled")?;
    Ok(UserRecord {
        name: row.try_get("name")?,
        role: Role::parse(&role).map_err(|_| ServerError::Corrupt {
            what: "user role".to_string(),
            reason: format!("unknown role {role:?}"),
        })?,
        kind: UserKind::parse(&kind)?,
        password_hash: row.try_get("password_hash")?,
        created_at_ms: row.try_get("created_at_ms")?,
        disabled: disabled != 0,
    })
}

/// A user by name.
pub async fn get_user(database: &Database, name: &str) -> Result<Option<UserRecord>, ServerError> {
    let row = sqlx::query(
        "SELECT name, role, kind, password_hash, created_at_ms, disabled FROM users WHERE name = $1",
    )
    .bind(name.to_string())
    .fetch_optional(database.pool())
    .await?;
    row.as_ref().map(user_from_row).transpose()
}

/// Every user, by name.
pub async fn list_users(database: &Database) -> Result<Vec<UserRecord>, ServerError> {
    let rows = sqlx::query(
        "SELECT name, role, kind, password_hash, created_at_ms, disabled FROM users ORDER BY name",
    )
    .fetch_all(database.pool())
    .await?;
    rows.iter().map(user_from_row).collect()
}

/// Disables (or enables again) a user: a disabled user gets no new tokens.
pub async fn set_disabled(
    database: &Database,
    name: &str,
    disabled: bool,
) -> Result<(), ServerError> {
    let result = sqlx::query("UPDATE users SET disabled = $1 WHERE name = $2")
        .bind(i64::from(disabled))
        .bind(name.to_string())
        .execute(database.pool())
        .await?;
    if result.rows_affected() == 0 {
        return Err(ServerError::UnknownUser(name.to_string()));
    }
    Ok(())
}
