//! Who may do what: the roles given to users and service clients and the permission each
//! operation needs.
//!
//! | role | may |
//! |---|---|
//! | `admin` | everything |
//! | `reviewer` | read and write products, the review queue, search |
//! | `service` | predict, classification jobs |
//! | `viewer` | read products, search, similar products |

use serde::{Deserialize, Serialize};

use crate::CatalogueError;

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

    pub fn parse(text: &str) -> Result<Self, CatalogueError> {
        match text.trim() {
            "admin" => Ok(Role::Admin),
            "reviewer" => Ok(Role::Reviewer),
            "service" => Ok(Role::Service),
            "viewer" => Ok(Role::Viewer),
            other => Err(CatalogueError::Invalid(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

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
