//! HTTP on `server.http_listen`: `/healthz` for load balancers and operators.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::store::Store;

pub fn router(store: Arc<dyn Store>) -> Router {
    Router::new().route("/healthz", get(healthz)).with_state(store)
}

/// 200 when the store answers, 503 otherwise: without a store, mail cannot be accepted.
async fn healthz(State(store): State<Arc<dyn Store>>) -> (StatusCode, Json<Value>) {
    match store.ping().await {
        Ok(()) => (StatusCode::OK, Json(json!({"status": "ok"}))),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "error": e.to_string()}))),
    }
}
