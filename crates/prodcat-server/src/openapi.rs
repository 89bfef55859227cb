//! The OpenAPI document, generated from the handlers' annotations and the request and response
//! types (utoipa), served at `/openapi.json` and read by Swagger UI at `/docs`.

use std::sync::OnceLock;

use utoipa::openapi::security::{
    ClientCredentials, Flow, OAuth2, Password, Scopes, SecurityScheme,
};
use utoipa::{Modify, OpenApi};

use crate::handlers;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::OAuth2(OAuth2::with_description(
                [
                    Flow::Password(Password::new("/v1/auth/token", Scopes::new())),
                    Flow::ClientCredentials(ClientCredentials::new(
                        "/v1/auth/token",
                        Scopes::new(),
                    )),
                ],
                "Signed, expiring JWTs from POST /v1/auth/token; send them as \
                 `Authorization: Bearer <token>`. Roles: admin (everything), reviewer (products, \
                 review queue, search), service (predict, jobs), viewer (read products, search).",
            )),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "prodcat",
        description = "Classify marketplace products from their text and photo, manage the \
            catalogue and its review queue, run durable classification jobs, and operate the \
            model in service. Every error answers `{\"error\": \"...\", \"errorType\": \"...\"}`.",
    ),
    paths(
        handlers::predict::predict,
        handlers::predict::predict_batch,
        handlers::jobs::create_job,
        handlers::jobs::get_job,
        handlers::products::create_product,
        handlers::products::list_products,
        handlers::products::get_product,
        handlers::products::get_product_image,
        handlers::products::update_product,
        handlers::products::delete_product,
        handlers::products::review_queue,
        handlers::search::search,
        handlers::search::similar,
        handlers::products::review_decision,
        handlers::models::list_models,
        handlers::models::promote,
        handlers::models::rollback,
        handlers::rollouts::start_shadow,
        handlers::rollouts::stop_shadow,
        handlers::rollouts::start_canary,
        handlers::rollouts::stop_canary,
        handlers::rollouts::rollouts,
        handlers::rollouts::live,
        handlers::rollouts::aliases_at,
        handlers::rollouts::prediction,
        handlers::auth::issue_token,
        handlers::operations::audit_log,
        handlers::operations::healthz,
        handlers::operations::readyz,
        handlers::operations::metrics,
    ),
    modifiers(&SecuritySchemes),
    tags(
        (name = "prediction", description = "Classify products now (service, admin)"),
        (name = "jobs", description = "Durable classification jobs of any size (service, admin)"),
        (name = "catalogue", description = "Products: add, read, change, delete (reviewer, admin; viewers read)"),
        (name = "review", description = "The manual review queue (reviewer, admin)"),
        (name = "models", description = "The model registry and the model in service (admin)"),
        (name = "rollouts", description = "Shadows, canaries and their live comparison (admin)"),
        (name = "security", description = "Tokens and the audit log"),
        (name = "operations", description = "Health, readiness, metrics"),
    ),
)]
struct ApiDoc;

/// The document as JSON (built once).
pub fn openapi_document() -> String {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT
        .get_or_init(|| {
            let mut document = ApiDoc::openapi();
            document.info.version = env!("CARGO_PKG_VERSION").to_string();
            document.to_json().unwrap_or_else(|error| {
                tracing::error!(%error, "the OpenAPI document could not be serialised");
                "{}".to_string()
            })
        })
        .clone()
}
