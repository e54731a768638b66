//! HTTP on `server.http_listen`: `/healthz` (liveness) for load balancers and operators
//! (with `/readyz` and `/metrics` in `ops`), and the
//! recorder API under `/v1/jobs` through which the recorder fleet claims due capture jobs
//! under a lease, keeps the lease alive, and reports how each capture ended.
//!
//! Every recorder request carries `Authorization: Bearer <token>`; the token names the
//! recorder (`recorders.tokens` in the config). Errors are JSON `{"error": code,
//! "message": …}` with the status of [`ApiError::status`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{TimeDelta, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tracing::{debug, error, info, warn};

use crate::config::{RecordersConfig, PROVIDERS};

mod ops;
use crate::store::{
    ClaimFilter, ClaimedJob, CompleteOutcome, DeclineOutcome, FailOutcome, HeartbeatOutcome, Refusal, RetryPolicy,
    Store, StoreError,
};
pub use ops::{ops_router, Ops};

/// Largest request body accepted: a claim filter or an error message, never more.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Plan kinds a recorder may ask for.
const KINDS: [&str; 2] = ["bot_join", "cloud_fetch"];

/// What the handlers share.
#[derive(Clone)]
struct AppState {
    store: Arc<dyn Store>,
    api: Arc<RecorderApi>,
}

/// The recorder API's settings, taken from `[recorders]` once at start-up.
struct RecorderApi {
    /// SHA-256 of each token, so that comparing takes the same time whatever the token's length.
    credentials: Vec<(String, [u8; 32])>,
    lease: TimeDelta,
    retry: RetryPolicy,
    claim_limit: u32,
}

impl RecorderApi {
    fn new(config: &RecordersConfig) -> RecorderApi {
        let seconds = |s: u64| TimeDelta::seconds(i64::try_from(s).unwrap_or(i64::MAX / 1000));
        RecorderApi {
            credentials: config.tokens.iter().filter_map(|t| Some((t.name.clone(), digest(t.secret()?)))).collect(),
            lease: seconds(config.lease_seconds),
            retry: RetryPolicy {
                max_attempts: i64::from(config.max_attempts),
                base: seconds(config.retry_base_seconds),
                max: seconds(config.retry_max_seconds),
            },
            claim_limit: config.claim_limit,
        }
    }

    /// The recorder whose token this is. Every credential is compared, in constant time.
    fn recorder_for(&self, token: &str) -> Option<String> {
        let presented = digest(token);
        let mut found = None;
        for (name, expected) in &self.credentials {
            let same = expected.iter().zip(presented.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            if same && found.is_none() {
                found = Some(name.clone());
            }
        }
        found
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn router(store: Arc<dyn Store>, recorders: &RecordersConfig) -> Router {
    let state = AppState { store, api: Arc::new(RecorderApi::new(recorders)) };
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/jobs/claim", post(claim))
        .route("/v1/jobs/{id}/heartbeat", post(heartbeat))
        .route("/v1/jobs/{id}/complete", post(complete))
        .route("/v1/jobs/{id}/fail", post(fail))
        .route("/v1/jobs/{id}/consent-declined", post(consent_declined))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// Liveness: 200 whenever the process answers HTTP. Whether it may take mail now (the store
/// answers, every intake runs) is `/readyz`'s question, so a load balancer can keep both apart.
async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Why a recorder request failed: one status and one stable code each.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("a valid `Authorization: Bearer <token>` header is required")]
    Unauthorized,
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    BodyTooLarge,
    #[error("there is no job {0}")]
    UnknownJob(i64),
    /// The job is held by another recorder, not claimed, or already finished.
    #[error("job {id} {message}")]
    Refused { id: i64, code: &'static str, message: String },
    #[error("the store is unavailable, try again later")]
    StoreUnavailable(#[source] StoreError),
    #[error("internal error")]
    Unexpected(#[source] StoreError),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::BodyTooLarge => "body_too_large",
            ApiError::UnknownJob(_) => "unknown_job",
            ApiError::Refused { code, .. } => code,
            ApiError::StoreUnavailable(_) => "store_unavailable",
            ApiError::Unexpected(_) => "internal_error",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnknownJob(_) => StatusCode::NOT_FOUND,
            ApiError::Refused { .. } => StatusCode::CONFLICT,
            ApiError::StoreUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unexpected(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error for a report the store refused.
    fn refused(id: i64, refusal: Refusal) -> ApiError {
        let message = match &refusal {
            Refusal::UnknownJob => return ApiError::UnknownJob(id),
            Refusal::NotYours => "is held by another recorder".to_string(),
            Refusal::NotClaimed { state } => format!("is {state}, not claimed by you"),
        };
        ApiError::Refused { id, code: refusal.code(), message }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            ApiError::StoreUnavailable(e)
        } else {
            ApiError::Unexpected(e)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::StoreUnavailable(e) => warn!(error_code = e.code(), error = %e, "recorder_request_deferred"),
            ApiError::Unexpected(e) => error!(error_code = e.code(), error = %e, "recorder_request_failed"),
            ApiError::Refused { id, code, .. } => info!(job_id = id, reason = code, "recorder_report_refused"),
            _ => {}
        }
        let body = Json(json!({"error": self.code(), "message": self.to_string()}));
        if matches!(self, ApiError::Unauthorized) {
            return (self.status(), [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        (self.status(), body).into_response()
    }
}

/// The recorder making a request, known by its token: a recorder cannot choose its name.
struct Recorder {
    name: String,
}

impl FromRequestParts<AppState> for Recorder {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers).ok_or(ApiError::Unauthorized)?;
        let name = app.api.recorder_for(token).ok_or(ApiError::Unauthorized)?;
        Ok(Recorder { name })
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The job id of the path.
fn job_id(path: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    path.map(|Path(id)| id).map_err(|_| ApiError::BadRequest("the job id must be an integer".into()))
}

/// A JSON body; an empty one is the request's default.
fn read_json<T: DeserializeOwned + Default>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::BodyTooLarge,
        _ => ApiError::BadRequest(format!("unreadable body: {e}")),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))
}

/// `POST /v1/jobs/claim`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimRequest {
    /// Most jobs wanted; capped at `recorders.claim_limit`.
    limit: Option<u32>,
    /// Plan kinds this recorder runs; all when absent.
    kinds: Option<Vec<String>>,
    /// Providers this recorder joins; all when absent.
    providers: Option<Vec<String>>,
}

impl ClaimRequest {
    /// The store's filter and limit, or why the request makes no sense.
    fn terms(self, claim_limit: u32) -> Result<(ClaimFilter, u32), ApiError> {
        let limit = match self.limit {
            Some(0) => return Err(ApiError::BadRequest("`limit` must be at least 1".into())),
            Some(n) => n.min(claim_limit),
            None => claim_limit,
        };
        check_names("kinds", self.kinds.as_deref(), &KINDS)?;
        check_names("providers", self.providers.as_deref(), &PROVIDERS)?;
        Ok((ClaimFilter { kinds: self.kinds, providers: self.providers }, limit))
    }
}

fn check_names(field: &str, given: Option<&[String]>, known: &[&str]) -> Result<(), ApiError> {
    match given.unwrap_or_default().iter().find(|g| !known.contains(&g.as_str())) {
        Some(g) => Err(ApiError::BadRequest(format!("`{field}`: unknown {g:?} (known: {})", known.join(", ")))),
        None => Ok(()),
    }
}

/// `POST /v1/jobs/{id}/fail`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FailRequest {
    /// What went wrong, kept as the job's `last_error`.
    error: Option<String>,
}

impl FailRequest {
    fn error(self) -> Result<String, ApiError> {
        match self.error.map(|e| e.trim().to_string()) {
            Some(e) if !e.is_empty() => Ok(e),
            _ => Err(ApiError::BadRequest("`error` is required: say what went wrong".into())),
        }
    }
}

#[tracing::instrument(name = "claim", skip_all, fields(recorder = %recorder.name))]
async fn claim(
    State(app): State<AppState>,
    recorder: Recorder,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let request: ClaimRequest = read_json(body)?;
    let (filter, limit) = request.terms(app.api.claim_limit)?;
    let started = std::time::Instant::now();
    let jobs = app.store.claim_due_jobs(&recorder.name, &filter, limit, app.api.lease, Utc::now()).await;
    crate::metrics::store_latency("claim", started.elapsed());
    let jobs = jobs?;
    log_claimed(&recorder, &jobs);
    Ok(Json(json!({ "jobs": jobs })))
}

fn log_claimed(recorder: &Recorder, jobs: &[ClaimedJob]) {
    for job in jobs {
        crate::metrics::job_changed(KINDS.iter().find(|k| **k == job.kind).copied().unwrap_or("other"), "claimed");
        info!(job_id = job.id, recorder = %recorder.name, kind = %job.kind, attempts = job.attempts,
              lease_until = %job.lease_until.to_rfc3339(), "job_claimed");
    }
}

#[tracing::instrument(name = "heartbeat", skip_all, fields(recorder = %recorder.name))]
async fn heartbeat(
    State(app): State<AppState>,
    recorder: Recorder,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(path)?;
    match app.store.heartbeat(id, &recorder.name, app.api.lease, Utc::now()).await? {
        HeartbeatOutcome::Extended { lease_until } => {
            debug!(job_id = id, recorder = %recorder.name, lease_until = %lease_until.to_rfc3339(), "job_heartbeat");
            Ok(Json(json!({"id": id, "state": "claimed", "lease_until": lease_until})))
        }
        HeartbeatOutcome::Refused(refusal) => Err(ApiError::refused(id, refusal)),
    }
}

#[tracing::instrument(name = "complete", skip_all, fields(recorder = %recorder.name))]
async fn complete(
    State(app): State<AppState>,
    recorder: Recorder,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(path)?;
    match app.store.complete(id, &recorder.name, Utc::now()).await? {
        CompleteOutcome::Completed => {
            info!(job_id = id, recorder = %recorder.name, "job_completed");
            crate::metrics::recorder_report("completed");
            Ok(Json(json!({"id": id, "state": "done"})))
        }
        CompleteOutcome::AlreadyCompleted => Ok(Json(json!({"id": id, "state": "done"}))),
        CompleteOutcome::Refused(refusal) => Err(ApiError::refused(id, refusal)),
    }
}

#[tracing::instrument(name = "fail", skip_all, fields(recorder = %recorder.name))]
async fn fail(
    State(app): State<AppState>,
    recorder: Recorder,
    path: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(path)?;
    let error = read_json::<FailRequest>(body)?.error()?;
    match app.store.fail(id, &recorder.name, &error, Utc::now(), &app.api.retry).await? {
        FailOutcome::Retrying { attempts, retry_at } => {
            info!(job_id = id, recorder = %recorder.name, attempts, retry_at = %retry_at.to_rfc3339(), error = %error,
                  "job_failed");
            crate::metrics::recorder_report("retrying");
            Ok(Json(json!({"id": id, "state": "scheduled", "attempts": attempts, "retry_at": retry_at})))
        }
        FailOutcome::Failed { attempts, reason } => {
            warn!(job_id = id, recorder = %recorder.name, attempts, r#final = true, reason = reason.code(),
                  error = %error, "job_failed");
            crate::metrics::recorder_report("failed");
            Ok(Json(json!({"id": id, "state": "failed", "attempts": attempts, "reason": reason.code()})))
        }
        FailOutcome::Refused(refusal) => Err(ApiError::refused(id, refusal)),
    }
}

#[tracing::instrument(name = "consent_declined", skip_all, fields(recorder = %recorder.name))]
async fn consent_declined(
    State(app): State<AppState>,
    recorder: Recorder,
    path: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = job_id(path)?;
    match app.store.decline_consent(id, &recorder.name, Utc::now()).await? {
        DeclineOutcome::Cancelled => {
            info!(job_id = id, recorder = %recorder.name, "job_consent_declined");
            crate::metrics::recorder_report("consent_declined");
            Ok(Json(json!({"id": id, "state": "cancelled"})))
        }
        DeclineOutcome::AlreadyDeclined => Ok(Json(json!({"id": id, "state": "cancelled"}))),
        DeclineOutcome::Refused(refusal) => Err(ApiError::refused(id, refusal)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecorderToken;

    #[test]
    fn tokens_name_their_recorder() {
        let config = RecordersConfig {
            tokens: vec![
                RecorderToken::new("bot-a", "token-a-0123456789"),
                RecorderToken::new("bot-b", "token-b-0123"),
            ],
            ..RecordersConfig::default()
        };
        let api = RecorderApi::new(&config);
        assert_eq!(api.recorder_for("token-b-0123").as_deref(), Some("bot-b"));
        assert_eq!(api.recorder_for("token-a-0123456789").as_deref(), Some("bot-a"));
        assert_eq!(api.recorder_for("token-a"), None);
        assert_eq!(api.recorder_for(""), None);
    }

    #[test]
    fn bearer_scheme_is_required() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(bearer_token(&h), None);
        h.insert(header::AUTHORIZATION, "bearer  abc ".parse().expect("header"));
        assert_eq!(bearer_token(&h), Some("abc"));
    }
}
