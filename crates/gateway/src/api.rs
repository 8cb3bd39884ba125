//! The transcript API: `GET /v1/sessions?limit=&before=` and `GET /v1/sessions/{id}`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use earshot_store::StoreError;

use crate::GatewayState;

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 500;

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<usize>,
    /// Only sessions that started before this time (Unix epoch milliseconds): pass the last
    /// session's `started_at_ms` to get the next page.
    before: Option<i64>,
}

/// The JSON error body every HTTP route answers with: `{"error":{"code","message"}}`.
pub(crate) fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        Json(serde_json::json!({"error": {"code": code, "message": message}})),
    )
        .into_response()
}

fn no_store() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no_store",
        "transcripts are not stored".into(),
    )
}

fn store_failure(state: &GatewayState, err: &StoreError) -> Response {
    state.metrics.error("store");
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        "store_unavailable",
        err.to_string(),
    )
}

pub async fn list_sessions(
    State(state): State<Arc<GatewayState>>,
    Query(query): Query<ListQuery>,
) -> Response {
    let Some(store) = &state.store else {
        return no_store();
    };
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    match store.list_sessions(limit, query.before).await {
        Ok(sessions) => Json(serde_json::json!({ "sessions": sessions })).into_response(),
        Err(err) => store_failure(&state, &err),
    }
}

pub async fn get_session(
    State(state): State<Arc<GatewayState>>,
    Path(id): Path<String>,
) -> Response {
    let Some(store) = &state.store else {
        return no_store();
    };
    match store.get_session(&id).await {
        Ok(Some(found)) => Json(found).into_response(),
        Ok(None) => error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no session {id:?}"),
        ),
        Err(err) => store_failure(&state, &err),
    }
}
