//! Revocation of access tokens: a token is accepted only while its user exists, is enabled and
//! is still at the token version the token was issued at (disabling a user, changing their role
//! or password increments it). Every replica reads the users table through a short cache, so a
//! revocation takes effect everywhere within [`RevocationCache::ttl`].
//!
//! With the database unreachable, the last known state of a user is used (or, for a user never
//! seen, the token is trusted): predictions, which need no database, keep answering.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use prodcat_catalogue::users::get_user;
use prodcat_catalogue::Role;
use prodcat_storage::Database;

use crate::auth::TokenProblem;

/// What a token's user looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UserState {
    exists: bool,
    disabled: bool,
    role: Role,
    token_version: i64,
}

/// Users' current states, each read at most once per `ttl`.
pub struct RevocationCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (UserState, Instant)>>,
}

impl RevocationCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long a user's state is trusted before it is read again.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn cached(&self, name: &str) -> Option<(UserState, Instant)> {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(name)
            .copied()
    }

    fn store(&self, name: &str, state: UserState) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() > 100_000 {
            let ttl = self.ttl;
            entries.retain(|_, (_, at)| at.elapsed() < ttl);
        }
        entries.insert(name.to_string(), (state, Instant::now()));
    }

    /// The user's state; a cached state older than the token (`version`) is read again, since
    /// the token proves the user changed since (a fresh sign-in after a revocation).
    async fn state(&self, database: &Database, name: &str, version: i64) -> Option<UserState> {
        let cached = self.cached(name);
        if let Some((state, at)) = cached {
            if at.elapsed() < self.ttl && state.token_version >= version {
                return Some(state);
            }
        }
        match get_user(database, name).await {
            Ok(found) => {
                let state = match found {
                    Some(user) => UserState {
                        exists: true,
                        disabled: user.disabled,
                        role: user.role,
                        token_version: user.token_version,
                    },
                    None => UserState {
                        exists: false,
                        disabled: true,
                        role: Role::Viewer,
                        token_version: i64::MAX,
                    },
                };
                self.store(name, state);
                Some(state)
            }
            Err(error) => {
                tracing::warn!(%error, user = name, "checking the token's user failed; using what is known");
                cached.map(|(state, _)| state)
            }
        }
    }

    /// Whether a verified token of `name` at `version` with `role` still stands.
    pub async fn check(
        &self,
        database: &Database,
        name: &str,
        role: Role,
        version: i64,
    ) -> Result<(), TokenProblem> {
        match self.state(database, name, version).await {
            None => Ok(()),
            Some(state)
                if state.exists
                    && !state.disabled
                    && state.role == role
                    && state.token_version == version =>
            {
                Ok(())
            }
            Some(_) => Err(TokenProblem::Revoked),
        }
    }

    /// Forgets a user's cached state (after this replica changed it).
    pub fn forget(&self, name: &str) {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(name);
    }
}
