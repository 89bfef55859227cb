//! The UI's pages. Each one calls the API's handler for what it shows or does (so roles,
//! checks and messages are the API's) and renders the answer; the few reads the API has no
//! route for (a product's prediction history, an alias's history, counts by status) go to the
//! same library functions the API uses.

use std::collections::BTreeSet;

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use prodcat_catalogue::prediction_log::product_predictions;
use prodcat_catalogue::Permission;
use prodcat_domain::CategoryCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    cookie, message, render, reports, set_cookie, Answer, Session, SESSION_COOKIE, SIGN_IN_COOKIE,
};
use crate::api::{ReviewRequest, RollbackRequest};
use crate::handlers::{self, JsonBody, ProductPayload};
use crate::middleware::{AuditNote, ClientAddress};
use crate::state::AppState;

/// Percent-encodes a query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// A query for an API handler, from name-value pairs (empty values left out).
fn query_of<T: serde::de::DeserializeOwned>(
    pairs: &[(&str, String)],
) -> Result<Query<T>, axum::extract::rejection::QueryRejection> {
    let query: Vec<String> = pairs
        .iter()
        .filter(|(_, value)| !value.is_empty())
        .map(|(name, value)| format!("{name}={}", encode(value)))
        .collect();
    let uri: Uri = format!("/?{}", query.join("&"))
        .parse()
        .unwrap_or_else(|_| Uri::from_static("/"));
    Query::try_from_uri(&uri)
}

fn see_other(location: &str) -> Response {
    Redirect::to(location).into_response()
}

fn category_name(code: i64) -> String {
    u16::try_from(code)
        .ok()
        .and_then(|code| CategoryCode::from_u16(code).ok())
        .map(|category| category.name().to_string())
        .unwrap_or_else(|| "unknown category".to_string())
}

/// Every category, for pickers.
fn all_categories() -> Vec<Value> {
    CategoryCode::all()
        .map(|category| json!({ "code": category.value(), "name": category.name() }))
        .collect()
}

// ----- sign-in -----

/// `/ui`: the first page the role may use.
pub async fn home(session: Session) -> Response {
    if session.allows(Permission::ProductsWrite) {
        see_other("/ui/classify")
    } else {
        see_other("/ui/catalogue")
    }
}

pub async fn sign_in_form(headers: HeaderMap) -> Response {
    let value = hex::encode(rand::random::<[u8; 24]>());
    let mut response = render(
        StatusCode::OK,
        "sign_in.html",
        None,
        json!({ "csrf": value, "title": "Sign in" }),
    );
    if let Ok(cookie) = set_cookie(SIGN_IN_COOKIE, &value, 900, &headers).parse() {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    csrf: String,
}

/// Exchanges the name and password for an access token at the API's token endpoint (with its
/// throttling and audit) and keeps the token in the session cookie.
pub async fn sign_in(
    State(state): State<AppState>,
    address: Option<Extension<ClientAddress>>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let expected = cookie(&headers, SIGN_IN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !super::constant_time_equal(expected.as_bytes(), form.csrf.as_bytes())
    {
        return message(
            StatusCode::FORBIDDEN,
            None,
            "Form expired",
            "The sign-in form's security token does not match (cookies may be disabled, or the \
             form is too old). Open the sign-in page again.",
        );
    }
    let body = json!({
        "grant_type": "password",
        "username": form.username,
        "password": form.password,
    });
    let mut token_headers = HeaderMap::new();
    token_headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    let response = handlers::auth::issue_token(
        State(state),
        address,
        token_headers,
        Bytes::from(body.to_string()),
    )
    .await;
    let note = response.extensions().get::<AuditNote>().cloned();
    let answer = Answer::of(response).await;
    let mut page = if answer.ok() {
        let token = answer
            .body
            .get("access_token")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let lifetime = answer
            .body
            .get("expires_in")
            .and_then(Value::as_u64)
            .unwrap_or(3600);
        let mut page = see_other("/ui");
        for value in [
            set_cookie(SESSION_COOKIE, &token, lifetime, &headers),
            set_cookie(SIGN_IN_COOKIE, "", 0, &headers),
        ] {
            if let Ok(value) = value.parse() {
                page.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        page
    } else {
        render(
            answer.status,
            "sign_in.html",
            None,
            json!({
                "csrf": form.csrf,
                "title": "Sign in",
                "error": answer.error(),
                "username": form.username,
            }),
        )
    };
    if let Some(note) = note {
        page.extensions_mut().insert(note);
    }
    page
}

#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub async fn sign_out(
    session: Session,
    headers: HeaderMap,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    let mut page = see_other("/ui/sign-in");
    if let Ok(value) = set_cookie(SESSION_COOKIE, "", 0, &headers).parse() {
        page.headers_mut().append(header::SET_COOKIE, value);
    }
    page
}

// ----- classify -----

pub async fn classify_form(session: Session) -> Response {
    render(
        StatusCode::OK,
        "classify.html",
        Some(&session),
        json!({ "title": "Classify a product", "section": "classify" }),
    )
}

/// A piece of displayed text, marked when it is one of the words that weighed most.
fn highlighted(text: &str, words: &BTreeSet<String>) -> Vec<Value> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let flush = |current: &mut String, in_word: bool, pieces: &mut Vec<Value>| {
        if !current.is_empty() {
            let mark = in_word && words.contains(&current.to_lowercase());
            pieces.push(json!({ "text": current.clone(), "mark": mark }));
            current.clear();
        }
    };
    for character in text.chars() {
        let is_word = character.is_alphanumeric();
        if is_word != in_word {
            flush(&mut current, in_word, &mut pieces);
            in_word = is_word;
        }
        current.push(character);
    }
    flush(&mut current, in_word, &mut pieces);
    pieces
}

/// The words behind the decision: word terms (of one or two words) that pushed towards the
/// predicted class.
fn weighty_words(prediction: &Value) -> (BTreeSet<String>, Vec<Value>) {
    let mut words = BTreeSet::new();
    let mut terms = Vec::new();
    if let Some(explanation) = prediction.get("explanation").and_then(Value::as_array) {
        for term in explanation {
            let contribution = term
                .get("contribution")
                .and_then(Value::as_f64)
                .unwrap_or(0.0);
            let text = term.get("term").and_then(Value::as_str).unwrap_or("");
            let analyzer = term.get("analyzer").and_then(Value::as_str).unwrap_or("");
            if contribution <= 0.0 || text.trim().is_empty() {
                continue;
            }
            if terms.len() < 12 {
                terms.push(
                    json!({ "term": text, "analyzer": analyzer, "contribution": contribution }),
                );
            }
            if analyzer.starts_with("word") && words.len() < 12 {
                for word in text.split_whitespace() {
                    words.insert(word.to_lowercase());
                }
            }
        }
    }
    (words, terms)
}

/// The cells of the photo's occlusion map as rectangles over the photo (in its pixels): the
/// larger the fall of the probability when a cell is hidden, the more opaque its tint. Cells
/// whose hiding made the category likelier stay clear.
fn heat_map(prediction: &Value) -> Value {
    let Some(regions) = prediction.get("photoRegions").filter(|r| r.is_object()) else {
        return Value::Null;
    };
    let number = |name: &str| regions.get(name).and_then(Value::as_f64).unwrap_or(0.0);
    let grid = number("grid").max(1.0) as usize;
    let drops: Vec<f64> = regions
        .get("drops")
        .and_then(Value::as_array)
        .map(|drops| drops.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let largest = drops.iter().copied().fold(0.0_f64, f64::max);
    let cell = number("squareSide") / grid as f64;
    let cells: Vec<Value> = drops
        .iter()
        .enumerate()
        .map(|(index, drop)| {
            let (row, column) = (index / grid, index % grid);
            let strength = if largest > 0.0 {
                (drop / largest).max(0.0)
            } else {
                0.0
            };
            json!({
                "x": number("squareLeft") + column as f64 * cell,
                "y": number("squareTop") + row as f64 * cell,
                "side": cell,
                "opacity": format!("{:.2}", 0.7 * strength),
                "drop": drop,
                "strongest": largest > 0.0 && *drop == largest,
            })
        })
        .collect();
    json!({
        "width": number("imageWidth"),
        "height": number("imageHeight"),
        "probability": number("probability"),
        "largest": largest,
        "cells": cells,
    })
}

pub async fn classify(
    State(state): State<AppState>,
    session: Session,
    mut form: Multipart,
) -> Response {
    let mut csrf = String::new();
    let mut designation = String::new();
    let mut description = String::new();
    let mut image: Option<Bytes> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                return message(
                    error.status(),
                    Some(&session),
                    "Upload failed",
                    &format!("The form could not be read: {}", error.body_text()),
                )
            }
        };
        let name = field.name().unwrap_or("").to_string();
        let bytes = match field.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => {
                return message(
                    error.status(),
                    Some(&session),
                    "Upload failed",
                    &format!("The form could not be read: {}", error.body_text()),
                )
            }
        };
        let text = || String::from_utf8_lossy(&bytes).to_string();
        match name.as_str() {
            "csrf" => csrf = text(),
            "designation" => designation = text(),
            "description" => description = text(),
            "image" if !bytes.is_empty() => image = Some(bytes),
            _ => {}
        }
    }
    if let Some(refused) = session.csrf_refusal(&csrf) {
        return refused;
    }
    let payload = ProductPayload {
        product_id: None,
        designation: Some(designation.clone()),
        description: Some(description.clone()),
        image,
        explain: true,
    };
    let answer = Answer::of(
        handlers::products::create_product(
            State(state),
            session.caller.clone(),
            handlers::NewProductPayload(payload),
        )
        .await,
    )
    .await;
    if !answer.ok() {
        return render(
            answer.status,
            "classify.html",
            Some(&session),
            json!({
                "title": "Classify a product",
                "section": "classify",
                "error": answer.error(),
                "designation": designation,
                "description": description,
            }),
        );
    }
    let product = answer.body.get("product").cloned().unwrap_or(Value::Null);
    let prediction = answer
        .body
        .get("prediction")
        .cloned()
        .unwrap_or(Value::Null);
    let (words, terms) = weighty_words(&prediction);
    let shown_description = prodcat_domain::normalize_text(&description);
    render(
        StatusCode::CREATED,
        "classify.html",
        Some(&session),
        json!({
            "title": "Classify a product",
            "section": "classify",
            "product": product,
            "prediction": prediction,
            "heat_map": heat_map(&prediction),
            "terms": terms,
            "designation_pieces": highlighted(&designation, &words),
            "description_pieces": highlighted(&shown_description, &words),
        }),
    )
}

// ----- review -----

/// The model's suggestions for a product: its predicted class, then each branch's top classes.
async fn suggestions(state: &AppState, product: &Value) -> Vec<Value> {
    let mut codes: Vec<i64> = Vec::new();
    if let Some(code) = product
        .pointer("/predictedCategory/code")
        .and_then(Value::as_i64)
    {
        codes.push(code);
    }
    let product_id = product
        .get("productId")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if let Ok(logged) = product_predictions(&state.platform.database, product_id, 1).await {
        if let Some(outputs) = logged
            .first()
            .and_then(|row| row.branch_outputs.as_deref())
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
        {
            for branch in ["text", "image"] {
                for item in outputs
                    .get(branch)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(code) = item.get("category").and_then(Value::as_i64) {
                        if !codes.contains(&code) {
                            codes.push(code);
                        }
                    }
                }
            }
        }
    }
    codes.truncate(5);
    codes
        .iter()
        .enumerate()
        .map(
            |(index, code)| json!({ "key": index + 1, "code": code, "name": category_name(*code) }),
        )
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct ReviewPageQuery {
    done: Option<i64>,
    undone: Option<i64>,
}

/// The review session's figures, kept in a cookie: when it started and how many decisions.
fn review_session(headers: &HeaderMap) -> (i64, i64) {
    cookie(headers, "prodcat_review")
        .and_then(|text| {
            let (start, count) = text.split_once('.')?;
            Some((start.parse().ok()?, count.parse().ok()?))
        })
        .unwrap_or((0, 0))
}

pub async fn review_page(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Query(query): Query<ReviewPageQuery>,
) -> Response {
    let answer = Answer::of(
        handlers::products::review_queue(
            State(state.clone()),
            session.caller.clone(),
            query_of(&[("page", "1".to_string()), ("pageSize", "1".to_string())]),
        )
        .await,
    )
    .await;
    let body = match answer.into_body(&session) {
        Ok(body) => body,
        Err(page) => return *page,
    };
    let mut product = body
        .get("items")
        .and_then(Value::as_array)
        .and_then(|items| items.first())
        .cloned();
    // After an undo, the product taken back is shown again whatever its rank.
    if let Some(id) = query.undone {
        let again = Answer::of(
            handlers::products::get_product(
                State(state.clone()),
                session.caller.clone(),
                handlers::IdPath(id),
            )
            .await,
        )
        .await;
        if again.ok() && again.body.get("status").and_then(Value::as_str) == Some("review") {
            product = Some(again.body);
        }
    }
    let suggestions = match &product {
        Some(product) => suggestions(&state, product).await,
        None => Vec::new(),
    };
    let done = match query.done {
        Some(id) => prodcat_catalogue::products::get_product(&state.platform.database, id)
            .await
            .ok()
            .map(|product| {
                json!({
                    "id": id,
                    "category": product.category_code.map(|c| format!("{} {}", c.value(), c.name())),
                })
            }),
        None => None,
    };
    let description = product
        .as_ref()
        .and_then(|product| product.get("description"))
        .and_then(Value::as_str)
        .map(prodcat_domain::normalize_text)
        .unwrap_or_default();
    let (started_ms, decisions) = review_session(&headers);
    let hours = (prodcat_storage::now_ms() - started_ms) as f64 / 3_600_000.0;
    let rate = (decisions > 0 && hours > 0.0).then(|| (decisions as f64 / hours).round());
    render(
        StatusCode::OK,
        "review.html",
        Some(&session),
        json!({
            "title": "Review queue",
            "section": "review",
            "product": product,
            "description": description,
            "suggestions": suggestions,
            "remaining": body.get("total"),
            "categories": all_categories(),
            "done": done,
            "undone": query.undone,
            "decisions": decisions,
            "rate": rate,
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct ReviewForm {
    #[serde(default)]
    csrf: String,
    /// `accept`, or a category code (from a suggestion or the picker, `1234 name` accepted).
    #[serde(default)]
    choice: String,
    #[serde(default)]
    other: String,
}

pub async fn review_decide(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<ReviewForm>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    // Text typed in the picker wins (Enter in the box submits the form's first button).
    let chosen = if !form.other.trim().is_empty() {
        form.other.clone()
    } else {
        form.choice.clone()
    };
    let request = if chosen == "accept" {
        ReviewRequest {
            decision: "accept".to_string(),
            category: None,
        }
    } else {
        let digits: String = chosen
            .trim()
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        match digits.parse::<u16>() {
            Ok(code) => ReviewRequest {
                decision: "correct".to_string(),
                category: Some(code),
            },
            Err(_) => {
                return message(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    Some(&session),
                    "No category",
                    "Choose a suggestion or a category from the list (its code comes first).",
                )
            }
        }
    };
    let answer = Answer::of(
        handlers::products::review_decision(
            State(state),
            session.caller.clone(),
            handlers::IdPath(id),
            JsonBody(request),
        )
        .await,
    )
    .await;
    if let Err(page) = answer.into_body(&session) {
        return *page;
    }
    let (mut started_ms, decisions) = review_session(&headers);
    if started_ms == 0 {
        started_ms = prodcat_storage::now_ms();
    }
    let mut page = see_other(&format!("/ui/review?done={id}"));
    let value = format!("{started_ms}.{}", decisions + 1);
    if let Ok(value) = set_cookie("prodcat_review", &value, 12 * 3600, &headers).parse() {
        page.headers_mut().append(header::SET_COOKIE, value);
    }
    page
}

/// `u`: takes back this session's last decision; the product is shown again.
pub async fn review_undo(
    State(state): State<AppState>,
    session: Session,
    headers: HeaderMap,
    Path(id): Path<i64>,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    let answer = Answer::of(
        handlers::products::undo_review_decision(
            State(state),
            session.caller.clone(),
            handlers::IdPath(id),
        )
        .await,
    )
    .await;
    if let Err(page) = answer.into_body(&session) {
        return *page;
    }
    let (started_ms, decisions) = review_session(&headers);
    let mut page = see_other(&format!("/ui/review?undone={id}"));
    let value = format!("{started_ms}.{}", (decisions - 1).max(0));
    if let Ok(value) = set_cookie("prodcat_review", &value, 12 * 3600, &headers).parse() {
        page.headers_mut().append(header::SET_COOKIE, value);
    }
    page
}

// ----- catalogue -----

#[derive(Debug, Default, Deserialize)]
pub struct CatalogueQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    mode: String,
    #[serde(default)]
    category: String,
    #[serde(default)]
    status: String,
    page: Option<i64>,
}

pub async fn catalogue(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<CatalogueQuery>,
) -> Response {
    let page = query.page.unwrap_or(1).max(1);
    let filters = [
        ("category", query.category.clone()),
        ("page", page.to_string()),
    ];
    let mut context = json!({
        "title": "Catalogue",
        "section": "catalogue",
        "q": query.q,
        "mode": query.mode,
        "category": query.category,
        "status": query.status,
        "page": page,
        "categories": all_categories(),
        "statuses": ["pending", "classified", "review", "reviewed"],
    });
    let answer = if query.q.trim().is_empty() {
        let mut pairs = filters.to_vec();
        pairs.push(("status", query.status.clone()));
        pairs.push(("pageSize", "24".to_string()));
        Answer::of(
            handlers::products::list_products(
                State(state),
                session.caller.clone(),
                query_of(&pairs),
            )
            .await,
        )
        .await
    } else {
        let mut pairs = filters.to_vec();
        pairs.push(("q", query.q.clone()));
        pairs.push(("mode", query.mode.clone()));
        pairs.push(("pageSize", "24".to_string()));
        Answer::of(
            handlers::search::search(State(state), session.caller.clone(), query_of(&pairs)).await,
        )
        .await
    };
    if !answer.ok() {
        context["error"] = json!(answer.error());
        return render(answer.status, "catalogue.html", Some(&session), context);
    }
    let total = answer
        .body
        .get("total")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    context["results"] = answer.body;
    context["has_next"] = json!(page * 24 < total);
    let link = |page: i64| {
        let pairs = [
            ("q", query.q.clone()),
            ("mode", query.mode.clone()),
            ("category", query.category.clone()),
            ("status", query.status.clone()),
            ("page", page.to_string()),
        ];
        let parts: Vec<String> = pairs
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| format!("{name}={}", encode(value)))
            .collect();
        format!("/ui/catalogue?{}", parts.join("&"))
    };
    context["next_link"] = json!(link(page + 1));
    context["previous_link"] = json!(link(page - 1));
    render(StatusCode::OK, "catalogue.html", Some(&session), context)
}

pub async fn product_page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    let answer = Answer::of(
        handlers::products::get_product(
            State(state.clone()),
            session.caller.clone(),
            handlers::IdPath(id),
        )
        .await,
    )
    .await;
    let product = match answer.into_body(&session) {
        Ok(product) => product,
        Err(page) => return *page,
    };
    let similar = if session.allows(Permission::Search) {
        let answer = Answer::of(
            handlers::search::similar(
                State(state.clone()),
                session.caller.clone(),
                handlers::IdPath(id),
                query_of(&[("k", "8".to_string())]),
            )
            .await,
        )
        .await;
        answer.body.get("items").cloned().unwrap_or(json!([]))
    } else {
        json!([])
    };
    let history: Vec<Value> = product_predictions(&state.platform.database, id, 20)
        .await
        .unwrap_or_default()
        .iter()
        .map(|row| {
            json!({
                "at": prodcat_domain::format_utc_minutes(row.at_ms),
                "model": row.model_version,
                "category": format!("{} {}", row.predicted_code, category_name(row.predicted_code)),
                "confidence": row.confidence,
                "automatic": row.automatic,
                "branches": row.branches,
                "label": row.label_code.map(|code| format!("{code} {}", category_name(code))),
            })
        })
        .collect();
    let description = prodcat_domain::normalize_text(
        product
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or(""),
    );
    render(
        StatusCode::OK,
        "product.html",
        Some(&session),
        json!({
            "title": format!("Product {id}"),
            "section": "catalogue",
            "product": product,
            "description": description,
            "similar": similar,
            "history": history,
        }),
    )
}

pub async fn product_image(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    let mut response = handlers::products::get_product_image(
        State(state),
        session.caller.clone(),
        handlers::IdPath(id),
    )
    .await
    .into_response();
    if response.status().is_success() {
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("private, max-age=300"),
        );
    }
    response
}

/// The side of the thumbnails of product lists, in pixels.
const THUMBNAIL_SIDE: u32 = 192;

/// A small JPEG of a stored photo (the photo was checked when it was stored); `None` when it
/// can not be decoded, and the photo itself is sent instead.
fn thumbnail_jpeg(bytes: &[u8], side: u32) -> Option<Vec<u8>> {
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(512 * 1024 * 1024);
    reader.limits(limits);
    let picture = reader.decode().ok()?;
    let small = picture.thumbnail(side, side).to_rgb8();
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 72)
        .encode_image(&small)
        .ok()?;
    Some(out)
}

/// A product's photo as a thumbnail, for lists (a page of photos stays light).
pub async fn product_thumbnail(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    let response = handlers::products::get_product_image(
        State(state),
        session.caller.clone(),
        handlers::IdPath(id),
    )
    .await
    .into_response();
    if !response.status().is_success() {
        return response;
    }
    let Ok(bytes) = axum::body::to_bytes(response.into_body(), 64 * 1024 * 1024).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    thumbnail_response(bytes).await
}

/// A thumbnail of a stored photo (the photo itself when it can not be shrunk).
pub(super) async fn thumbnail_response(bytes: Bytes) -> Response {
    let original = bytes.clone();
    let small = tokio::task::spawn_blocking(move || thumbnail_jpeg(&bytes, THUMBNAIL_SIDE))
        .await
        .ok()
        .flatten();
    let (body, kind) = match small {
        Some(small) => (Bytes::from(small), "image/jpeg"),
        None if original.starts_with(&[0x89, b'P', b'N', b'G']) => (original, "image/png"),
        None => (original, "image/jpeg"),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "private, max-age=300"),
        ],
        body,
    )
        .into_response()
}

// ----- jobs -----

pub async fn jobs_page(session: Session) -> Response {
    render(
        StatusCode::OK,
        "jobs.html",
        Some(&session),
        json!({ "title": "Jobs", "section": "jobs" }),
    )
}

pub async fn upload_job(
    State(state): State<AppState>,
    session: Session,
    mut form: Multipart,
) -> Response {
    let mut csrf = String::new();
    let mut upload: Option<(Bytes, String)> = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(error) => {
                return message(
                    error.status(),
                    Some(&session),
                    "Upload failed",
                    &error.body_text(),
                )
            }
        };
        let name = field.name().unwrap_or("").to_string();
        let file_name = field.file_name().unwrap_or("").to_ascii_lowercase();
        let bytes = match field.bytes().await {
            Ok(bytes) => bytes,
            Err(error) => {
                return message(
                    error.status(),
                    Some(&session),
                    "Upload failed",
                    &error.body_text(),
                )
            }
        };
        match name.as_str() {
            "csrf" => csrf = String::from_utf8_lossy(&bytes).to_string(),
            "file" => upload = Some((bytes, file_name)),
            _ => {}
        }
    }
    if let Some(refused) = session.csrf_refusal(&csrf) {
        return refused;
    }
    let Some((bytes, file_name)) = upload.filter(|(bytes, _)| !bytes.is_empty()) else {
        return render(
            StatusCode::UNPROCESSABLE_ENTITY,
            "jobs.html",
            Some(&session),
            json!({ "title": "Jobs", "section": "jobs", "error": "Choose a CSV or JSON-lines file." }),
        );
    };
    let content_type = if file_name.ends_with(".csv") {
        "text/csv"
    } else {
        "application/x-ndjson"
    };
    let request = axum::http::Request::builder()
        .method("POST")
        .uri("/v1/jobs/classify")
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(bytes))
        .unwrap_or_default();
    let answer = Answer::of(
        handlers::jobs::create_job(
            State(state),
            session.caller.clone(),
            HeaderMap::new(),
            request,
        )
        .await,
    )
    .await;
    if !answer.ok() {
        return render(
            answer.status,
            "jobs.html",
            Some(&session),
            json!({ "title": "Jobs", "section": "jobs", "error": answer.error() }),
        );
    }
    let id = answer
        .body
        .get("jobId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    see_other(&format!("/ui/jobs/{}", encode(id)))
}

pub async fn job_page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let answer = Answer::of(
        handlers::jobs::get_job(
            State(state),
            session.caller.clone(),
            Path(id.clone()),
            query_of(&[("limit", "20".to_string())]),
        )
        .await,
    )
    .await;
    let job = match answer.into_body(&session) {
        Ok(job) => job,
        Err(page) => return *page,
    };
    let finished = job
        .get("finishedAtMs")
        .is_some_and(|value| !value.is_null());
    render(
        StatusCode::OK,
        "job.html",
        Some(&session),
        json!({
            "title": "Job",
            "section": "jobs",
            "job": job,
            "finished": finished,
            "id": id,
        }),
    )
}

/// The job's results as CSV, read page by page from the API's job route.
pub async fn job_results(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<String>,
) -> Response {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record([
        "position",
        "status",
        "product_id",
        "category_code",
        "category_name",
        "confidence",
        "decision",
        "model_version",
        "error",
    ]);
    let mut offset = 0i64;
    loop {
        let answer = Answer::of(
            handlers::jobs::get_job(
                State(state.clone()),
                session.caller.clone(),
                Path(id.clone()),
                query_of(&[
                    ("offset", offset.to_string()),
                    ("limit", "1000".to_string()),
                ]),
            )
            .await,
        )
        .await;
        let job = match answer.into_body(&session) {
            Ok(job) => job,
            Err(page) => return *page,
        };
        for item in job
            .get("items")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let text = |pointer: &str| match item.pointer(pointer) {
                Some(Value::String(text)) => text.clone(),
                Some(Value::Null) | None => String::new(),
                Some(other) => other.to_string(),
            };
            let _ = writer.write_record([
                text("/position"),
                text("/status"),
                text("/productId"),
                text("/result/categoryCode"),
                text("/result/categoryName"),
                text("/result/confidence"),
                text("/result/decision"),
                text("/result/modelVersion"),
                text("/error"),
            ]);
        }
        match job.get("nextOffset").and_then(Value::as_i64) {
            Some(next) if next > offset => offset = next,
            _ => break,
        }
    }
    let bytes = writer.into_inner().unwrap_or_default();
    let file_name: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    (
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"job-{file_name}.csv\""),
            ),
        ],
        bytes,
    )
        .into_response()
}

// ----- models -----

pub async fn models_page(State(state): State<AppState>, session: Session) -> Response {
    models_with(&state, &session, StatusCode::OK, None).await
}

async fn models_with(
    state: &AppState,
    session: &Session,
    status: StatusCode,
    outcome: Option<Value>,
) -> Response {
    let answer = Answer::of(
        handlers::models::list_models(State(state.clone()), session.caller.clone()).await,
    )
    .await;
    let mut list = match answer.into_body(session) {
        Ok(list) => list,
        Err(page) => return *page,
    };
    // Per-class F1 of each version, from the metrics of the run that trained it.
    let runs: std::collections::BTreeMap<String, String> =
        prodcat_registry::list_versions(&state.platform.database)
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|version| {
                Some((version.id.to_string(), version.run_id.as_ref()?.to_string()))
            })
            .collect();
    if let Some(versions) = list.get_mut("versions").and_then(Value::as_array_mut) {
        for version in versions.iter_mut().take(10) {
            let id = version
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let Some(run) = runs.get(&id) else { continue };
            let Ok(details) = prodcat_registry::get_run(&state.platform.database, run).await else {
                continue;
            };
            let classes: Vec<Value> = prodcat_registry::compare::class_f1_values(&details.metrics)
                .iter()
                .map(|(code, f1)| {
                    json!({ "code": code, "name": category_name(i64::from(*code)), "f1": f1 })
                })
                .collect();
            version["classes"] = json!(classes);
            version["pictures"] = json!(reports::model_pictures(&id, &details.artifacts));
        }
    }
    let live = Answer::of(
        handlers::rollouts::live(
            State(state.clone()),
            session.caller.clone(),
            query_of(&[("window", "1h".to_string())]),
        )
        .await,
    )
    .await;
    let history: Vec<Value> =
        prodcat_registry::alias_history(&state.platform.database, Some(prodcat_registry::CHAMPION))
            .await
            .unwrap_or_default()
            .iter()
            .take(20)
            .map(|event| {
                json!({
                    "at": prodcat_domain::format_utc_minutes(event.at_ms),
                    "action": format!("{:?}", event.action).to_lowercase(),
                    "from": event.from_version.as_ref().map(|v| v.to_string()),
                    "to": event.to_version.as_ref().map(|v| v.to_string()),
                    "actor": event.actor,
                    "reason": event.reason,
                    "forced": event.forced,
                })
            })
            .collect();
    render(
        status,
        "models.html",
        Some(session),
        json!({
            "title": "Models",
            "section": "models",
            "list": list,
            "live": if live.ok() { live.body } else { Value::Null },
            "history": history,
            "outcome": outcome,
        }),
    )
}

/// The promotion policy's verdict on a version against the champion, scored now on the
/// version's own test split, shown before the promotion is confirmed.
pub async fn verdict_page(
    State(state): State<AppState>,
    session: Session,
    Path(version): Path<String>,
) -> Response {
    use prodcat_registry::Rescorer;
    if let Some(refused) = session.refusal(Permission::Models).await {
        return refused;
    }
    let database = &state.platform.database;
    let verdict = async {
        let challenger = prodcat_registry::resolve(database, &version).await?;
        let champion =
            match prodcat_registry::alias_target(database, prodcat_registry::CHAMPION).await? {
                Some(id) => Some(prodcat_registry::get_version(database, &id).await?),
                None => None,
            };
        Ok::<_, prodcat_registry::RegistryError>((challenger, champion))
    }
    .await;
    let (challenger, champion) = match verdict {
        Ok(found) => found,
        Err(error) => {
            let answer = Answer::of(crate::error::ApiError::from(error)).await;
            return message(answer.status, Some(&session), "Not found", &answer.error());
        }
    };
    let mut decision = Value::Null;
    let mut problem = None;
    match (&champion, &challenger.dataset_version) {
        (Some(champion), Some(dataset)) if champion.id != challenger.id => {
            let evaluation_set = format!("{dataset}:test");
            let rescorer = prodcat_pipelines::PlatformRescorer {
                platform: &state.platform,
            };
            let scored = async {
                let champion_summary = rescorer.score(champion, &evaluation_set).await?;
                let challenger_summary = rescorer.score(&challenger, &evaluation_set).await?;
                Ok::<_, prodcat_registry::RescoreError>((champion_summary, challenger_summary))
            }
            .await;
            match scored
                .map_err(|error| error.to_string())
                .and_then(|(a, b)| {
                    prodcat_registry::PromotionPolicy::default()
                        .decide(&a, &b)
                        .map_err(|error| error.to_string())
                }) {
                Ok(verdict) => decision = serde_json::to_value(verdict).unwrap_or_default(),
                Err(error) => problem = Some(error),
            }
        }
        (Some(champion), _) if champion.id == challenger.id => {
            problem = Some("this version is the champion already".to_string())
        }
        (None, _) => problem = Some("there is no champion: this version takes the alias".into()),
        _ => problem = Some("the version names no dataset version to compare on".into()),
    }
    render(
        StatusCode::OK,
        "verdict.html",
        Some(&session),
        json!({
            "title": "Promote",
            "section": "models",
            "version": challenger.id.to_string(),
            "champion": champion.map(|c| c.id.to_string()),
            "decision": decision,
            "problem": problem,
        }),
    )
}

#[derive(Debug, Deserialize)]
pub struct AliasForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    confirm: String,
    /// Promote even when the policy refuses (the reason is recorded as the override's).
    #[serde(default)]
    force: String,
}

fn needs_confirmation(session: &Session, form: &AliasForm) -> Option<Response> {
    if form.confirm != "yes" || form.reason.trim().is_empty() {
        return Some(message(
            StatusCode::UNPROCESSABLE_ENTITY,
            Some(session),
            "Not confirmed",
            "Moving the champion needs a reason and the confirmation box ticked.",
        ));
    }
    None
}

pub async fn promote(
    State(state): State<AppState>,
    session: Session,
    Path(version): Path<String>,
    Form(form): Form<AliasForm>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    if let Some(refused) = session.refusal(Permission::Models).await {
        return refused;
    }
    if let Some(refused) = needs_confirmation(&session, &form) {
        return refused;
    }
    let body = json!({ "reason": form.reason.trim(), "force": form.force == "yes" }).to_string();
    let answer = Answer::of(
        handlers::models::promote(
            State(state.clone()),
            session.caller.clone(),
            Path(version),
            Bytes::from(body),
        )
        .await,
    )
    .await;
    let outcome = if answer.ok() {
        json!({ "ok": true, "body": answer.body })
    } else {
        json!({ "ok": false, "error": answer.error() })
    };
    models_with(&state, &session, answer.status, Some(outcome)).await
}

pub async fn rollback(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<AliasForm>,
) -> Response {
    if let Some(refused) = session.csrf_refusal(&form.csrf) {
        return refused;
    }
    if let Some(refused) = session.refusal(Permission::Models).await {
        return refused;
    }
    if let Some(refused) = needs_confirmation(&session, &form) {
        return refused;
    }
    let answer = Answer::of(
        handlers::models::rollback(
            State(state.clone()),
            session.caller.clone(),
            JsonBody(RollbackRequest {
                reason: Some(form.reason.trim().to_string()),
            }),
        )
        .await,
    )
    .await;
    let outcome = if answer.ok() {
        json!({ "ok": true, "body": answer.body })
    } else {
        json!({ "ok": false, "error": answer.error() })
    };
    models_with(&state, &session, answer.status, Some(outcome)).await
}

// ----- monitoring -----

pub async fn monitoring_page(State(state): State<AppState>, session: Session) -> Response {
    if let Some(refused) = session.refusal(Permission::Models).await {
        return refused;
    }
    let counts: Vec<Value> = prodcat_catalogue::products::count_by_status(&state.platform.database)
        .await
        .unwrap_or_default()
        .iter()
        .map(|(status, count)| json!({ "status": status.as_str(), "count": count }))
        .collect();
    let live = Answer::of(
        handlers::rollouts::live(
            State(state.clone()),
            session.caller.clone(),
            query_of(&[("window", "1h".to_string())]),
        )
        .await,
    )
    .await;
    let serving = state
        .model_service()
        .current()
        .map(|model| model.version.to_string());
    render(
        StatusCode::OK,
        "monitoring.html",
        Some(&session),
        json!({
            "title": "Monitoring",
            "section": "monitoring",
            "counts": counts,
            "live": if live.ok() { live.body } else { Value::Null },
            "serving": serving,
            "uptime_s": state.started.elapsed().as_secs(),
            "drift": reports::drift_overview(&state).await,
            "runs": reports::pipeline_runs(&state).await,
        }),
    )
}

// ----- data -----

#[derive(Debug, Default, Deserialize)]
pub struct DataQuery {
    #[serde(default)]
    version: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    /// A category code whose sample products are shown.
    #[serde(default)]
    class: String,
}

/// Dataset versions, the class distribution of one, and the difference between two.
pub async fn data_page(
    State(state): State<AppState>,
    session: Session,
    Query(query): Query<DataQuery>,
) -> Response {
    if let Some(refused) = session.refusal(Permission::Models).await {
        return refused;
    }
    let database = &state.platform.database;
    let versions = match prodcat_dataset::list_versions(database).await {
        Ok(versions) => versions,
        Err(error) => {
            tracing::error!(%error, "listing dataset versions failed");
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                Some(&session),
                "Unavailable",
                "The dataset versions could not be read; try again.",
            );
        }
    };
    let listed: Vec<Value> = versions
        .iter()
        .map(|version| {
            json!({
                "id": version.id.to_string(),
                "created": prodcat_domain::format_utc_minutes(version.created_at_ms),
                "source": version.source,
                "rows": version.row_count,
                "labelled": version.labelled_count,
                "images": version.image_count,
                "note": version.note,
            })
        })
        .collect();
    let chosen = if query.version.is_empty() {
        versions.first().map(|version| version.id.to_string())
    } else {
        Some(query.version.clone())
    };
    let mut error = None;
    let mut details = Value::Null;
    if let Some(reference) = &chosen {
        match prodcat_dataset::show_version(database, reference).await {
            Ok(shown) => {
                let largest = shown
                    .class_distribution
                    .iter()
                    .map(|(_, train, validation, test)| train + validation + test)
                    .max()
                    .unwrap_or(1)
                    .max(1);
                let classes: Vec<Value> = shown
                    .class_distribution
                    .iter()
                    .map(|(code, train, validation, test)| {
                        let total = train + validation + test;
                        json!({
                            "code": code.map(|c| c.value()),
                            "name": code.map(|c| c.name()).unwrap_or("unlabelled"),
                            "train": train, "validation": validation, "test": test,
                            "total": total,
                            "share": total as f64 / largest as f64,
                        })
                    })
                    .collect();
                let samples = match query.class.trim().parse::<u16>() {
                    Ok(code) => {
                        reports::class_samples(&state, shown.version.id.as_str(), code).await
                    }
                    Err(_) => Value::Null,
                };
                details = json!({
                    "id": shown.version.id.to_string(),
                    "classes": classes,
                    "splits": [shown.split_sizes.0, shown.split_sizes.1, shown.split_sizes.2],
                    "samples": samples,
                });
            }
            Err(problem) => error = Some(problem.to_string()),
        }
    }
    let mut diff = Value::Null;
    if !query.from.is_empty() && !query.to.is_empty() {
        match prodcat_dataset::diff_versions(database, &query.from, &query.to).await {
            Ok(found) => {
                diff = json!({
                    "from": found.from.to_string(), "to": found.to.to_string(),
                    "added": found.added, "removed": found.removed,
                    "relabelled": found.relabelled, "contentChanged": found.content_changed,
                    "unchanged": found.unchanged,
                    "relabelledExamples": found.relabelled_examples.iter().take(20)
                        .map(|(id, before, after)| json!({ "id": id, "before": before, "after": after }))
                        .collect::<Vec<_>>(),
                })
            }
            Err(problem) => error = Some(problem.to_string()),
        }
    }
    render(
        if error.is_some() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::OK
        },
        "data.html",
        Some(&session),
        json!({
            "title": "Data",
            "section": "data",
            "versions": listed,
            "details": details,
            "diff": diff,
            "error": error,
            "from": query.from,
            "to": query.to,
        }),
    )
}
