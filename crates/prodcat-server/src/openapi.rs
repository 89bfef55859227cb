//! The OpenAPI document, generated from the handlers' annotations and the request and response
//! types (utoipa), served at `/openapi.json` and read by Swagger UI at `/docs`.
//!
//! The document is the contract `scripts/contract-check` holds the live server to, so it is
//! exact: after generation, [`complete`] adds what the annotations cannot say one handler at a
//! time. Every operation lists every status the layers around the handlers can answer (401 and
//! 403 for the protected ones, 400, 413, 415 and 422 where a body or a parameter is read, 429,
//! 500 and 503 everywhere) with the error body, the headers every answer carries, and the limits
//! that come from the server's settings (text sizes, batch size), so a server with other
//! settings serves a document stating its own.

use serde_json::{json, Map, Value};
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
        handlers::products::undo_review_decision,
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

/// What a server's document states that depends on how the server is set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DocumentSettings {
    /// Items of one `POST /v1/predict/batch`.
    pub max_batch_items: usize,
    /// Bytes of a product's designation.
    pub max_designation_bytes: usize,
    /// Bytes of a product's description.
    pub max_description_bytes: usize,
    /// Whether the server can search by meaning (a text embedding model is installed).
    pub search_by_meaning: bool,
}

impl DocumentSettings {
    pub fn of(settings: &prodcat_platform::ServerSettings, search_by_meaning: bool) -> Self {
        Self {
            max_batch_items: settings.max_batch_items,
            max_designation_bytes: settings.input_limits.max_designation_bytes,
            max_description_bytes: settings.input_limits.max_description_bytes,
            search_by_meaning,
        }
    }
}

impl Default for DocumentSettings {
    fn default() -> Self {
        Self::of(&prodcat_platform::ServerSettings::default(), true)
    }
}

/// The document as JSON for a server with these limits.
pub fn openapi_document(settings: &DocumentSettings) -> String {
    let mut document = ApiDoc::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_string();
    let mut value = match serde_json::to_value(&document) {
        Ok(value) => value,
        Err(error) => {
            tracing::error!(%error, "the OpenAPI document could not be serialised");
            return "{}".to_string();
        }
    };
    complete(&mut value, settings);
    value.to_string()
}

/// A text that holds something besides whitespace and control characters (whitespace as
/// Rust's `char::is_whitespace` sees it: the server trims with it; control characters are
/// removed with HTML tags before a text is read, so a text of markup alone is nothing either).
const NOT_BLANK: &str =
    "[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";

/// Adds to the generated document what the annotations cannot say (see the module comment).
fn complete(document: &mut Value, settings: &DocumentSettings) {
    add_error_responses(document);
    add_common_headers(document);
    add_batch_item(document, settings);
    add_text_limits(document, settings);
    add_request_rules(document);
    add_parameter_rules(document, settings);
    add_success_details(document);
}

/// The response at `path`, `method`, `status`, when the document has it.
fn response_at<'a>(
    document: &'a mut Value,
    path: &str,
    method: &str,
    status: &str,
) -> Option<&'a mut Map<String, Value>> {
    document
        .get_mut("paths")?
        .get_mut(path)?
        .get_mut(method)?
        .get_mut("responses")?
        .get_mut(status)?
        .as_object_mut()
}

fn add_header(response: Option<&mut Map<String, Value>>, name: &str, value: Value) {
    if let Some(headers) = response
        .and_then(|response| response.get_mut("headers"))
        .and_then(Value::as_object_mut)
    {
        headers.insert(name.to_string(), value);
    }
}

/// The headers of successful answers (where a new thing is, a product's revision, no caching
/// of tokens), and the two image types a product photo is served as.
fn add_success_details(document: &mut Value) {
    let location = |pattern: &str| {
        header(
            "Where the new resource is",
            json!({"type": "string", "pattern": pattern}),
            true,
        )
    };
    let etag = header(
        "The product's revision, to send back in If-Match",
        json!({"type": "string", "pattern": "^\"-?[0-9]+\"$"}),
        true,
    );
    add_header(
        response_at(document, "/v1/products", "post", "201"),
        "Location",
        location("^/v1/products/-?[0-9]+$"),
    );
    for status in ["200", "202"] {
        add_header(
            response_at(document, "/v1/jobs/classify", "post", status),
            "Location",
            location("^/v1/jobs/job-[0-9a-f]{16}$"),
        );
    }
    for method in ["get", "patch"] {
        add_header(
            response_at(document, "/v1/products/{id}", method, "200"),
            "ETag",
            etag.clone(),
        );
    }
    add_header(
        response_at(document, "/v1/auth/token", "post", "200"),
        "Cache-Control",
        header(
            "Tokens are never cached",
            json!({"type": "string", "enum": ["no-store"]}),
            true,
        ),
    );
    // Not ready says so in its own body; a timeout of the probe itself in the error body.
    if let Some(not_ready) = response_at(document, "/readyz", "get", "503") {
        not_ready.insert(
            "content".to_string(),
            json!({"application/json": {"schema": {"oneOf": [
                {"$ref": "#/components/schemas/ReadyBody"},
                {"$ref": "#/components/schemas/ErrorBody"},
            ]}}}),
        );
    }
    if let Some(photo) = response_at(document, "/v1/products/{id}/image", "get", "200") {
        let binary = json!({"schema": {"type": "string", "format": "binary"}});
        photo.insert(
            "content".to_string(),
            json!({"image/jpeg": binary.clone(), "image/png": binary}),
        );
    }
}

/// A duration back from now: a whole number and a unit (seconds, minutes, hours, days, weeks).
const DURATION: &str = "^[1-9][0-9]{0,5}[smhdw]$";

fn category_codes() -> Vec<Value> {
    prodcat_domain::CategoryCode::all()
        .map(|code| json!(code.value()))
        .collect()
}

/// The values and forms of query and path parameters that their Rust types do not carry.
fn add_parameter_rules(document: &mut Value, settings: &DocumentSettings) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for item in paths.values_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(parameters) = operation
                .get_mut("parameters")
                .and_then(Value::as_array_mut)
            else {
                continue;
            };
            for parameter in parameters {
                let name = parameter["name"].as_str().unwrap_or_default().to_string();
                let place = parameter["in"].as_str().unwrap_or_default().to_string();
                if (place.as_str(), name.as_str()) == ("query", "q") {
                    parameter["required"] = json!(true);
                }
                let Some(schema) = parameter.get_mut("schema").and_then(Value::as_object_mut)
                else {
                    continue;
                };
                // A query parameter or a header is present or absent: it has no null.
                if let Some(types) = schema.get("type").and_then(Value::as_array) {
                    let kinds: Vec<Value> = types
                        .iter()
                        .filter(|kind| kind.as_str() != Some("null"))
                        .cloned()
                        .collect();
                    if kinds.len() == 1 {
                        schema.insert("type".to_string(), kinds[0].clone());
                    }
                }
                match (place.as_str(), name.as_str()) {
                    ("query", "category") => {
                        schema.insert("type".to_string(), json!("integer"));
                        schema.insert("enum".to_string(), Value::Array(category_codes()));
                    }
                    ("query", "status") => {
                        schema.insert(
                            "enum".to_string(),
                            json!(["pending", "classified", "review", "reviewed"]),
                        );
                    }
                    ("query", "mode") => {
                        let modes = if settings.search_by_meaning {
                            json!(["hybrid", "keyword", "meaning"])
                        } else {
                            json!(["hybrid", "keyword"])
                        };
                        schema.insert("enum".to_string(), modes);
                    }
                    ("query", "q") => {
                        schema.insert("pattern".to_string(), json!(NOT_BLANK));
                    }
                    ("header", "Idempotency-Key") => {
                        // Visible ASCII (what a header carries as text), not only spaces.
                        schema.insert("minLength".to_string(), json!(1));
                        schema.insert("maxLength".to_string(), json!(200));
                        schema.insert("pattern".to_string(), json!("^[ -~]*[!-~][ -~]*$"));
                    }
                    ("query", "window") => {
                        schema.insert("pattern".to_string(), json!(DURATION));
                    }
                    ("query", "at") => {
                        schema.remove("type");
                        schema.insert(
                            "anyOf".to_string(),
                            json!([
                                {"type": "string", "enum": ["now"]},
                                {"type": "string", "pattern": DURATION},
                                {"type": "string", "pattern": "^[1-9][0-9]{0,17}$"},
                                {"type": "string", "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])$"},
                                {"type": "string", "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]Z$"},
                            ]),
                        );
                    }
                    _ => {}
                }
            }
        }
    }
}

fn error_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}},
    })
}

fn header(description: &str, schema: Value, required: bool) -> Value {
    json!({"description": description, "required": required, "schema": schema})
}

fn retry_after(required: bool) -> Value {
    header(
        "Seconds to wait before trying again",
        json!({"type": "string", "pattern": "^[0-9]+$"}),
        required,
    )
}

/// Every status an operation can answer through the layers around its handler, each with the
/// error body (a handler's own description of a status is kept).
fn add_error_responses(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(operation) = operation.as_object_mut() else {
                continue;
            };
            let secured = operation
                .get("security")
                .and_then(Value::as_array)
                .is_some_and(|list| !list.is_empty());
            let has_body = operation.contains_key("requestBody");
            let parameters: Vec<(String, String)> = operation
                .get("parameters")
                .and_then(Value::as_array)
                .map(|list| {
                    list.iter()
                        .map(|parameter| {
                            (
                                parameter["in"].as_str().unwrap_or_default().to_string(),
                                parameter["schema"]["type"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .to_string(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let integer_in_path = parameters
                .iter()
                .any(|(place, kind)| place == "path" && kind == "integer");
            let has_query = parameters.iter().any(|(place, _)| place == "query");
            let responses = operation
                .entry("responses")
                .or_insert_with(|| json!({}))
                .as_object_mut();
            let Some(responses) = responses else { continue };
            let mut ensure = |status: &str, description: &str| {
                responses
                    .entry(status.to_string())
                    .or_insert_with(|| error_response(description));
            };
            if has_body || integer_in_path {
                ensure(
                    "400",
                    "The body is not valid JSON, or a path parameter is not of its type",
                );
            }
            if secured {
                ensure(
                    "401",
                    "No access token, or one that is malformed, expired or revoked",
                );
                // Any role may read its own predictions: the others' are not found.
                if path != "/v1/predictions/{id}" {
                    ensure("403", "The caller's role may not do this");
                }
            }
            if has_body {
                ensure("413", "The body is larger than the limit");
                ensure(
                    "415",
                    "The body's Content-Type is not one this operation reads",
                );
            }
            if has_body || has_query {
                ensure(
                    "422",
                    "The request does not satisfy the schema or the rules described here",
                );
            }
            ensure("429", "Too many requests from this client; see Retry-After");
            ensure(
                "500",
                "An internal error; the body names an incident whose details are in the server \
                 log",
            );
            ensure(
                "503",
                "A dependency (database, model) is unavailable, or the request took longer than \
                 the server's limit; see Retry-After",
            );
        }
    }
}

/// The headers answers carry: the security headers on every answer, `WWW-Authenticate` on
/// 401, `Retry-After` on 429 and 503 (except `/readyz`'s own "not ready").
fn add_common_headers(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for operation in item.values_mut() {
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            else {
                continue;
            };
            for (status, response) in responses.iter_mut() {
                let Some(response) = response.as_object_mut() else {
                    continue;
                };
                let headers = response
                    .entry("headers")
                    .or_insert_with(|| json!({}))
                    .as_object_mut();
                let Some(headers) = headers else { continue };
                headers.insert(
                    "X-Content-Type-Options".to_string(),
                    header(
                        "Browsers must not guess content types",
                        json!({"type": "string", "enum": ["nosniff"]}),
                        true,
                    ),
                );
                headers.insert(
                    "X-Frame-Options".to_string(),
                    header(
                        "No framing by other sites",
                        json!({"type": "string", "enum": ["DENY"]}),
                        true,
                    ),
                );
                match status.as_str() {
                    "401" => {
                        headers.insert(
                            "WWW-Authenticate".to_string(),
                            header(
                                "The scheme to authenticate with",
                                json!({"type": "string", "enum": ["Bearer realm=\"prodcat\""]}),
                                true,
                            ),
                        );
                    }
                    "429" => {
                        headers.insert("Retry-After".to_string(), retry_after(true));
                    }
                    "503" => {
                        headers.insert("Retry-After".to_string(), retry_after(path != "/readyz"));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// The schema of `name` in the components, when there is one.
fn component<'a>(document: &'a mut Value, name: &str) -> Option<&'a mut Map<String, Value>> {
    document
        .get_mut("components")?
        .get_mut("schemas")?
        .get_mut(name)?
        .as_object_mut()
}

fn property<'a>(
    schema: &'a mut Map<String, Value>,
    name: &str,
) -> Option<&'a mut Map<String, Value>> {
    schema.get_mut("properties")?.get_mut(name)?.as_object_mut()
}

fn set(schema: Option<&mut Map<String, Value>>, key: &str, value: Value) {
    if let Some(schema) = schema {
        schema.insert(key.to_string(), value);
    }
}

/// Text sizes: the server counts bytes of UTF-8, a JSON Schema counts characters, so the
/// schema bounds the characters by the byte limit and the description says bytes.
fn add_text_limits(document: &mut Value, limits: &DocumentSettings) {
    for name in [
        "PredictRequest",
        "CreateProductRequest",
        "UpdateProductRequest",
        "JobItemRequest",
    ] {
        let Some(schema) = component(document, name) else {
            continue;
        };
        for (field, limit) in [
            ("designation", limits.max_designation_bytes),
            ("description", limits.max_description_bytes),
        ] {
            if let Some(field_schema) = property(schema, field) {
                field_schema.insert("maxLength".to_string(), json!(limit));
                let said = field_schema
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                let limit_text = format!("At most {limit} bytes of UTF-8.");
                field_schema.insert(
                    "description".to_string(),
                    json!(if said.is_empty() {
                        limit_text
                    } else {
                        format!("{said} {limit_text}")
                    }),
                );
            }
        }
    }
}

/// A batch item's problems are answered in its result, not by refusing the batch: its schema
/// is the plain shape of a prediction request, without the per-product rules and limits.
fn add_batch_item(document: &mut Value, limits: &DocumentSettings) {
    let plain_item = component(document, "PredictRequest").cloned();
    if let Some(mut item) = plain_item {
        item.insert(
            "description".to_string(),
            json!(
                "One product of a batch. An item with nothing to classify, a text over its \
                 limit or an unreadable photo gets an error in its result; the other items \
                 are classified."
            ),
        );
        if let Some(schemas) = document
            .get_mut("components")
            .and_then(|components| components.get_mut("schemas"))
            .and_then(Value::as_object_mut)
        {
            schemas.insert("BatchItemRequest".to_string(), Value::Object(item));
        }
    }
    if let Some(batch) = component(document, "BatchPredictRequest") {
        if let Some(items) = property(batch, "items") {
            items.insert("minItems".to_string(), json!(1));
            items.insert("maxItems".to_string(), json!(limits.max_batch_items));
            items.insert(
                "items".to_string(),
                json!({"$ref": "#/components/schemas/BatchItemRequest"}),
            );
        }
    }
}

/// The rules between fields that the types alone do not carry.
fn add_request_rules(document: &mut Value) {
    // One product to classify (now, or as a line of a job): something besides whitespace in
    // the designation or the description, or a photo.
    for name in ["PredictRequest", "JobItemRequest"] {
        if let Some(product) = component(document, name) {
            product.insert(
                "anyOf".to_string(),
                json!([
                    {"required": ["designation"], "properties": {"designation": {"type": "string", "pattern": NOT_BLANK}}},
                    {"required": ["description"], "properties": {"description": {"type": "string", "pattern": NOT_BLANK}}},
                    {"required": ["image"], "properties": {"image": {"type": "string"}}},
                ]),
            );
        }
    }
    if let Some(create) = component(document, "CreateProductRequest") {
        create.insert("required".to_string(), json!(["designation", "image"]));
        set(property(create, "designation"), "type", json!("string"));
        set(property(create, "designation"), "pattern", json!(NOT_BLANK));
        set(property(create, "image"), "type", json!("string"));
    }
    if let Some(update) = component(document, "UpdateProductRequest") {
        set(property(update, "designation"), "pattern", json!(NOT_BLANK));
        update.insert(
            "anyOf".to_string(),
            json!([
                {"required": ["designation"], "properties": {"designation": {"type": "string"}}},
                {"required": ["description"], "properties": {"description": {"type": "string"}}},
                {"required": ["image"], "properties": {"image": {"type": "string"}}},
            ]),
        );
    }
    if let Some(review) = component(document, "ReviewRequest") {
        let mut codes: Vec<Value> = prodcat_domain::CategoryCode::all()
            .map(|code| json!(code.value()))
            .collect();
        codes.push(Value::Null);
        set(property(review, "category"), "enum", Value::Array(codes));
        set(
            property(review, "decision"),
            "enum",
            json!(["accept", "correct"]),
        );
        review.insert(
            "oneOf".to_string(),
            json!([
                {"properties": {"decision": {"const": "accept"}, "category": {"type": "null"}}},
                {"properties": {"decision": {"const": "correct"}, "category": {"type": "integer"}}, "required": ["category"]},
            ]),
        );
    }
    if let Some(rollback) = component(document, "RollbackRequest") {
        rollback.insert("required".to_string(), json!(["reason"]));
        set(property(rollback, "reason"), "type", json!("string"));
        set(property(rollback, "reason"), "pattern", json!(NOT_BLANK));
    }
    if let Some(promote) = component(document, "PromoteRequest") {
        // Forcing needs a reason.
        promote.insert(
            "if".to_string(),
            json!({"properties": {"force": {"const": true}}, "required": ["force"]}),
        );
        promote.insert(
            "then".to_string(),
            json!({"required": ["reason"], "properties": {"reason": {"type": "string", "pattern": NOT_BLANK}}}),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_of_a_path_is_a_declared_parameter() {
        let document: Value =
            serde_json::from_str(&openapi_document(&DocumentSettings::default())).unwrap();
        for (path, item) in document["paths"].as_object().unwrap() {
            let placeholders: Vec<&str> = path
                .split('/')
                .filter_map(|part| part.strip_prefix('{')?.strip_suffix('}'))
                .collect();
            for (method, operation) in item.as_object().unwrap() {
                let declared: Vec<&str> = operation["parameters"]
                    .as_array()
                    .map(|parameters| {
                        parameters
                            .iter()
                            .filter(|p| p["in"] == "path")
                            .filter_map(|p| p["name"].as_str())
                            .collect()
                    })
                    .unwrap_or_default();
                for name in &placeholders {
                    assert!(
                        declared.contains(name),
                        "{method} {path}: {{{name}}} undeclared"
                    );
                }
            }
        }
    }

    #[test]
    fn every_operation_lists_the_statuses_of_the_layers_around_it() {
        let document: Value =
            serde_json::from_str(&openapi_document(&DocumentSettings::default())).unwrap();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                let responses = operation["responses"].as_object().unwrap();
                for status in ["429", "500", "503"] {
                    assert!(responses.contains_key(status), "{method} {path} {status}");
                }
                if operation.get("security").is_some() {
                    assert!(responses.contains_key("401"), "{method} {path}");
                    let header = &responses["401"]["headers"]["WWW-Authenticate"];
                    assert_eq!(header["required"], true, "{method} {path}");
                }
                if operation.get("requestBody").is_some() {
                    for status in ["400", "413", "415", "422"] {
                        assert!(responses.contains_key(status), "{method} {path} {status}");
                    }
                }
            }
        }
        let limits = DocumentSettings {
            max_batch_items: 7,
            max_designation_bytes: 11,
            max_description_bytes: 13,
            search_by_meaning: false,
        };
        let document: Value = serde_json::from_str(&openapi_document(&limits)).unwrap();
        let schemas = &document["components"]["schemas"];
        assert_eq!(
            schemas["BatchPredictRequest"]["properties"]["items"]["maxItems"],
            7
        );
        assert_eq!(
            schemas["PredictRequest"]["properties"]["designation"]["maxLength"],
            11
        );
        assert_eq!(
            schemas["CreateProductRequest"]["properties"]["description"]["maxLength"],
            13
        );
    }
}
