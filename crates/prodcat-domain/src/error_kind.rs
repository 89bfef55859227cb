//! Whose fault an error is, in one vocabulary that every library error maps onto with its
//! `kind()` method. The HTTP service turns a kind into a status code and the job worker into
//! "retry later" or "fail the item now", so the two can never disagree about an error.

/// The class of an error, as seen by whoever must react to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input is the problem (malformed, out of range, an unreadable image): trying again
    /// with the same input gives the same error.
    Input,
    /// The thing asked for does not exist.
    NotFound,
    /// The request clashes with the current state (already exists, changed meanwhile).
    Conflict,
    /// A dependency is unavailable for now (database, object store, a model not loaded):
    /// trying again later may succeed.
    Unavailable,
    /// A fault of the system itself (corrupt data, a bug): the details belong in the log.
    Internal,
}

impl ErrorKind {
    /// Whether trying the same operation again later may succeed.
    pub fn is_transient(self) -> bool {
        match self {
            ErrorKind::Unavailable => true,
            ErrorKind::Input | ErrorKind::NotFound | ErrorKind::Conflict | ErrorKind::Internal => {
                false
            }
        }
    }

    /// Whether the caller's input is to blame (as opposed to the system).
    pub fn concerns_the_input(self) -> bool {
        match self {
            ErrorKind::Input | ErrorKind::NotFound | ErrorKind::Conflict => true,
            ErrorKind::Unavailable | ErrorKind::Internal => false,
        }
    }

    /// A stable lower-case name (`input`, `not_found`, `conflict`, `unavailable`, `internal`).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Input => "input",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
