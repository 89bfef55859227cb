//! The admin web UI under `/ui`: server-rendered pages (minijinja templates compiled into the
//! binary, every value escaped), one small script and one style sheet also compiled in (the
//! pages work without the script, only less conveniently), and charts drawn by the server.
//!
//! Sign-in exchanges a name and password for the API's own access token through the token
//! endpoint, and keeps it in a session cookie (HttpOnly, SameSite=Strict, Secure behind TLS).
//! The authentication middleware reads that cookie on `/ui` paths only, so revocation and
//! roles are exactly the API's. Every form carries a CSRF token derived from the session (a
//! hash of the token's signature, which no other site can know); the sign-in form uses a
//! double-submitted random value. Pages call the API's handlers themselves, so what a role may
//! do, what is checked and the error messages are the API's; the UI only renders.

mod charts;
mod pages;
mod reports;

use std::sync::OnceLock;

use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use minijinja::Environment;
use prodcat_catalogue::Permission;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::auth::{Authentication, Caller};
use crate::state::AppState;

/// The cookie holding the session's access token.
pub(crate) const SESSION_COOKIE: &str = "prodcat_session";
/// The cookie of the sign-in form's double-submitted CSRF value.
const SIGN_IN_COOKIE: &str = "prodcat_sign_in";

/// The Content Security Policy of every UI answer: scripts and styles only from this server's
/// files, no inline script, no framing.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' blob: data:; connect-src 'self'; frame-src 'self'; form-action 'self'; \
     base-uri 'none'; frame-ancestors 'none'";

/// The UI's routes.
pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/ui", get(pages::home))
        .route("/ui/", get(pages::home))
        .route("/ui/assets/{file}", get(asset))
        .route("/ui/sign-in", get(pages::sign_in_form).post(pages::sign_in))
        .route("/ui/sign-out", post(pages::sign_out))
        .route(
            "/ui/classify",
            get(pages::classify_form).post(pages::classify),
        )
        .route("/ui/review", get(pages::review_page))
        .route("/ui/review/{id}", post(pages::review_decide))
        .route("/ui/review/{id}/undo", post(pages::review_undo))
        .route("/ui/catalogue", get(pages::catalogue))
        .route("/ui/products/{id}", get(pages::product_page))
        .route("/ui/products/{id}/image", get(pages::product_image))
        .route("/ui/products/{id}/thumbnail", get(pages::product_thumbnail))
        .route("/ui/jobs", get(pages::jobs_page).post(pages::upload_job))
        .route("/ui/jobs/{id}", get(pages::job_page))
        .route("/ui/jobs/{id}/results.csv", get(pages::job_results))
        .route("/ui/models", get(pages::models_page))
        .route("/ui/models/rollback", post(pages::rollback))
        .route("/ui/models/{version}/promote", post(pages::promote))
        .route("/ui/models/{version}/verdict", get(pages::verdict_page))
        .route(
            "/ui/models/{version}/pictures/{name}",
            get(reports::model_picture),
        )
        .route("/ui/monitoring", get(pages::monitoring_page))
        .route("/ui/monitoring/drift/{id}", get(reports::drift_report))
        .route("/ui/data", get(pages::data_page))
        .route("/ui/data/images/{hash}", get(reports::dataset_image))
        .route_layer(axum::middleware::from_fn(ui_headers))
}

/// The headers of every UI answer, with the time the server spent on it (`Server-Timing`).
async fn ui_headers(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let milliseconds = started.elapsed().as_secs_f64() * 1000.0;
    if let Ok(value) = HeaderValue::from_str(&format!("app;dur={milliseconds:.1}")) {
        headers.insert("server-timing", value);
    }
    // A handler serving a stored document (a drift report, an SVG) sets its own policy.
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// The embedded static files.
const ASSETS: [(&str, &str, &str); 2] = [
    (
        "app.js",
        "application/javascript; charset=utf-8",
        include_str!("assets/app.js"),
    ),
    (
        "app.css",
        "text/css; charset=utf-8",
        include_str!("assets/app.css"),
    ),
];

async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match ASSETS.iter().find(|(file, _, _)| *file == name) {
        Some((_, content_type, text)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            *text,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

/// The templates, parsed once.
fn templates() -> &'static Environment<'static> {
    static ENVIRONMENT: OnceLock<Environment<'static>> = OnceLock::new();
    ENVIRONMENT.get_or_init(|| {
        let mut environment = Environment::new();
        let sources = [
            ("base.html", include_str!("templates/base.html")),
            ("sign_in.html", include_str!("templates/sign_in.html")),
            ("message.html", include_str!("templates/message.html")),
            ("classify.html", include_str!("templates/classify.html")),
            ("review.html", include_str!("templates/review.html")),
            ("catalogue.html", include_str!("templates/catalogue.html")),
            ("product.html", include_str!("templates/product.html")),
            ("jobs.html", include_str!("templates/jobs.html")),
            ("job.html", include_str!("templates/job.html")),
            ("models.html", include_str!("templates/models.html")),
            ("verdict.html", include_str!("templates/verdict.html")),
            ("monitoring.html", include_str!("templates/monitoring.html")),
            ("data.html", include_str!("templates/data.html")),
        ];
        for (name, source) in sources {
            if let Err(error) = environment.add_template(name, source) {
                tracing::error!(%error, template = name, "a UI template does not parse");
            }
        }
        // Number filters show nothing for a missing value rather than failing the page.
        let number = |value: &minijinja::Value| f64::try_from(value.clone()).ok();
        environment.add_filter("percent", move |value: minijinja::Value| {
            number(&value)
                .map(|value| format!("{:.1} %", value * 100.0))
                .unwrap_or_default()
        });
        environment.add_filter(
            "fixed",
            move |value: minijinja::Value, digits: Option<usize>| {
                number(&value)
                    .map(|value| format!("{:.*}", digits.unwrap_or(3), value))
                    .unwrap_or_default()
            },
        );
        environment.add_filter("truncate", |text: String, length: Option<usize>| {
            let length = length.unwrap_or(200);
            if text.chars().count() <= length {
                text
            } else {
                let mut cut: String = text.chars().take(length).collect();
                cut.push('…');
                cut
            }
        });
        environment.add_filter("when", move |ms: minijinja::Value| {
            number(&ms)
                .map(|ms| prodcat_domain::format_utc_minutes(ms as i64))
                .unwrap_or_default()
        });
        environment
    })
}

/// The signed-in user of a page.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub caller: Caller,
    /// The CSRF token every form of this session carries.
    pub csrf: String,
}

impl Session {
    pub fn allows(&self, permission: Permission) -> bool {
        self.caller.role.allows(permission)
    }

    /// The API's refusal, as a page, when this session's role lacks `permission`.
    pub async fn refusal(&self, permission: Permission) -> Option<Response> {
        let refused = self.caller.require(permission).err()?;
        let answer = Answer::of(refused).await;
        Some(message(
            answer.status,
            Some(self),
            "Not allowed",
            &answer.error(),
        ))
    }

    /// The refusal page when a form's CSRF token is not this session's.
    pub fn csrf_refusal(&self, sent: &str) -> Option<Response> {
        if constant_time_equal(sent.as_bytes(), self.csrf.as_bytes()) {
            None
        } else {
            Some(message(
                StatusCode::FORBIDDEN,
                Some(self),
                "Form expired",
                "This form's security token is not valid for your session (it may come from \
                 another site, or you signed in again since). Reload the page and try again.",
            ))
        }
    }

    /// What every page's layout needs.
    fn layout(&self) -> Value {
        let role = self.caller.role;
        json!({
            "name": self.caller.name,
            "role": role.as_str(),
            "csrf": self.csrf,
            "can": {
                "classify": role.allows(Permission::ProductsWrite),
                "review": role.allows(Permission::Review),
                "catalogue": role.allows(Permission::ProductsRead),
                "search": role.allows(Permission::Search),
                "jobs": role.allows(Permission::Jobs),
                "models": role.allows(Permission::Models),
                "monitoring": role.allows(Permission::Models),
                "data": role.allows(Permission::Models),
            },
        })
    }
}

fn constant_time_equal(left: &[u8], right: &[u8]) -> bool {
    left.len() == right.len()
        && left
            .iter()
            .zip(right)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// The CSRF token of a session: a hash of its access token's signature (secret to other
/// sites, which can neither read the cookie nor compute the signature).
fn csrf_of(session_token: &str) -> String {
    let signature = session_token.rsplit('.').next().unwrap_or(session_token);
    hex::encode(Sha256::digest(format!("prodcat-ui-csrf.{signature}")))
}

/// A cookie's value from the request headers.
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_string())
        .filter(|value| !value.is_empty())
}

/// Whether the client reached this server over TLS (a TLS-terminating proxy says so).
fn over_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.trim().eq_ignore_ascii_case("https"))
}

/// A `Set-Cookie` value with the UI's attributes; `max_age` 0 deletes the cookie.
fn set_cookie(name: &str, value: &str, max_age: u64, headers: &HeaderMap) -> String {
    let secure = if over_tls(headers) { "; Secure" } else { "" };
    format!("{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}")
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = cookie(&parts.headers, SESSION_COOKIE);
        match (parts.extensions.get::<Authentication>(), token) {
            (Some(Authentication::Valid(caller)), Some(token)) => Ok(Session {
                caller: caller.clone(),
                csrf: csrf_of(&token),
            }),
            _ => Err(Redirect::to("/ui/sign-in").into_response()),
        }
    }
}

/// Renders a template with the layout's values; a template error is logged and answered 500.
pub(crate) fn render(
    status: StatusCode,
    template: &str,
    session: Option<&Session>,
    mut context: Value,
) -> Response {
    if let (Some(session), Some(map)) = (session, context.as_object_mut()) {
        map.insert("session".to_string(), session.layout());
    }
    let rendered = templates()
        .get_template(template)
        .and_then(|template| template.render(&context));
    match rendered {
        Ok(html) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
        Err(error) => {
            tracing::error!(%error, template, "rendering a UI page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
                "<!doctype html><title>Error</title><p>The page could not be shown.</p>",
            )
                .into_response()
        }
    }
}

/// A page with a title and one message (errors, refusals).
pub(crate) fn message(
    status: StatusCode,
    session: Option<&Session>,
    title: &str,
    text: &str,
) -> Response {
    render(
        status,
        "message.html",
        session,
        json!({ "title": title, "text": text }),
    )
}

/// What an API handler answered: its JSON body, or its status and error message.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub body: Value,
}

impl Answer {
    /// Reads what an API handler answered.
    pub async fn of(response: impl IntoResponse) -> Answer {
        let response = response.into_response();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024)
            .await
            .unwrap_or_default();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer { status, body }
    }

    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's error message.
    pub fn error(&self) -> String {
        self.body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("the request failed")
            .to_string()
    }

    /// The body, or the API's refusal as a page.
    pub fn into_body(self, session: &Session) -> Result<Value, Box<Response>> {
        if self.ok() {
            Ok(self.body)
        } else {
            let title = match self.status {
                StatusCode::FORBIDDEN => "Not allowed",
                StatusCode::NOT_FOUND => "Not found",
                _ => "Request refused",
            };
            Err(Box::new(message(
                self.status,
                Some(session),
                title,
                &self.error(),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_read_by_exact_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; prodcat_session_x=2; prodcat_session=abc"),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }

    #[test]
    fn csrf_tokens_differ_per_session_and_compare_exactly() {
        let first = csrf_of("h.p.signature-one");
        let second = csrf_of("h.p.signature-two");
        assert_ne!(first, second);
        assert!(constant_time_equal(first.as_bytes(), first.as_bytes()));
        assert!(!constant_time_equal(first.as_bytes(), second.as_bytes()));
        assert!(!constant_time_equal(b"", first.as_bytes()));
    }

    #[test]
    fn every_template_parses_and_escapes_user_text() {
        let environment = templates();
        for name in ["base.html", "sign_in.html", "message.html", "classify.html"] {
            assert!(environment.get_template(name).is_ok(), "{name}");
        }
        let response = message(StatusCode::OK, None, "<script>", "<b>x</b>");
        assert_eq!(response.status(), StatusCode::OK);
    }
}
