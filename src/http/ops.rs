//! Operator endpoints: `/readyz` (may this daemon take mail now?) and `/metrics`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{json, Map, Value};

use crate::readiness::Readiness;
use crate::store::Store;

/// How long `/readyz` waits for the store before calling it unreachable.
const STORE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the operator endpoints look at.
#[derive(Clone)]
pub struct Ops {
    pub store: Arc<dyn Store>,
    /// The intakes and whether each is running.
    pub readiness: Readiness,
    /// The installed Prometheus recorder; `None`: `/metrics` answers 503.
    pub metrics: Option<PrometheusHandle>,
}

/// `/readyz` and `/metrics`, to be merged into the daemon's router.
pub fn ops_router(ops: Ops) -> Router {
    Router::new().route("/readyz", get(readyz)).route("/metrics", get(metrics)).with_state(ops)
}

/// 200 when the store answers and every intake runs; otherwise 503. The body names each part.
async fn readyz(State(ops): State<Ops>) -> (StatusCode, Json<Value>) {
    let started = Instant::now();
    let store = match tokio::time::timeout(STORE_CHECK_TIMEOUT, ops.store.ping()).await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some(format!("no answer within {} s", STORE_CHECK_TIMEOUT.as_secs())),
    };
    crate::metrics::store_latency("ping", started.elapsed());
    let mut ready = store.is_none();
    let part = |problem: Option<String>| match problem {
        None => json!({"ready": true}),
        Some(problem) => json!({"ready": false, "problem": problem}),
    };
    let mut intakes = Map::new();
    for (name, problem) in ops.readiness.intakes() {
        ready &= problem.is_none();
        intakes.insert(name, part(problem));
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "store": part(store),
        "intakes": intakes,
    });
    (status, Json(body))
}

async fn metrics(State(ops): State<Ops>) -> Response {
    match &ops.metrics {
        Some(handle) => {
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render(handle)).into_response()
        }
        None => (StatusCode::SERVICE_UNAVAILABLE, "metrics recorder not installed\n").into_response(),
    }
}
