//! `/healthz`, `/readyz` and the unauthenticated `/api/ping/`.

use axum::{extract::State, Json};
use serde_json::{json, Value};

use crate::{app::AppState, error::ApiResult};

/// Process up.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Stores reachable, else 503. Redis (when configured) counts only when throttles fail
/// closed; with fail-open an unreachable Redis shows as `"redis": "unavailable"`.
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state.stores.health.ping().await?;
    match crate::scaleout::redis_readiness().await? {
        Some(redis) => Ok(Json(json!({"status": "ready", "redis": redis}))),
        None => Ok(Json(json!({"status": "ready"}))),
    }
}

/// An `AllowAny` route behind the default authenticators (the benchmark's baseline).
pub(crate) async fn ping() -> Json<Value> {
    Json(json!({"ok": true}))
}
