//! `/healthz`, `/readyz` and the unauthenticated `/api/ping/`.

use axum::{extract::State, Json};
use serde_json::{json, Value};

use crate::{app::AppState, error::ApiResult};

/// Process up.
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Stores reachable, else 503.
pub(crate) async fn readyz(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    state.stores.health.ping().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// An `AllowAny` route behind the default authenticators (the benchmark's baseline).
pub(crate) async fn ping() -> Json<Value> {
    Json(json!({"ok": true}))
}
