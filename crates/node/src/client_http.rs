//! The client port's surface that is not a gRPC service: the JSON gateway, etcd's health
//! endpoints, and the answer for a path nothing claims.
//!
//! Health is served here as etcd serves it, because tools probe the client URL they were given
//! (`kubectl get componentstatuses` asks the API server, which GETs `<etcd>/health`): `/health`
//! is etcd's JSON, healthy when a leader is known and a linearizable read (etcd's QGET)
//! completes and no alarm is active; `/livez` and `/readyz` are etcd 3.5's, `/readyz` with the readiness the metrics
//! port's probe uses ([`crate::http::readiness`]).
//!
//! tonic hands every request whose path names no registered service to this axum router, so
//! its fallback is what a gRPC client calling a service Flotilla does not serve (one added by
//! a newer etcd, say) receives. etcd (grpc-go) answers such a call with the gRPC status
//! UNIMPLEMENTED, and clients rely on that to tell "not supported" from "server broken": a bare
//! HTTP 404 surfaces as an opaque transport error. So a gRPC request gets grpc-go's status and
//! words, and anything else keeps the plain 404 an HTTP client expects.

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::member::handle::NodeHandle;

/// Every non-gRPC route of the client port, ready to be merged with the gRPC services.
/// `bcrypt_cost` hashes the passwords the gateway's `/v3/auth/*` routes receive.
pub fn routes(node: NodeHandle, bcrypt_cost: u32) -> tonic::service::Routes {
    let health = axum::Router::new()
        .route("/health", get(health))
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/version", get(version))
        .with_state(node.clone());
    crate::gateway::router(node, bcrypt_cost)
        .merge(health)
        .fallback(unknown_path)
        .into()
}

async fn health(State(node): State<NodeHandle>) -> Response {
    // An active alarm makes the member unhealthy first, as etcd's `checkHealth` does.
    let alarm = node.sm.read().ok().and_then(|sm| {
        sm.store()
            .alarms()
            .list()
            .first()
            .map(|a| format!("ALARM {}", crate::mvcc::alarm::alarm_name(a.alarm)))
    });
    let reason = if alarm.is_some() {
        alarm
    } else if node.status().leader == 0 {
        Some("RAFT NO LEADER".to_string())
    } else {
        node.linearizable_barrier()
            .await
            .err()
            .map(|e| format!("QGET ERROR: {e}"))
    };
    let (code, body) = match reason {
        None => (StatusCode::OK, json!({"health": "true", "reason": ""})),
        Some(reason) => {
            tracing::debug!(%reason, "/health: unhealthy");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"health": "false", "reason": reason}),
            )
        }
    };
    (code, axum::Json(body)).into_response()
}

/// etcd's `/version`: the server's and the cluster's API level, plus Flotilla's own release.
async fn version() -> Response {
    axum::Json(json!({
        "etcdserver": crate::api::maintenance::ETCD_API_VERSION,
        "etcdcluster": crate::api::maintenance::ETCD_API_VERSION,
        "flotilla": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn readyz(State(node): State<NodeHandle>) -> Response {
    match crate::http::readiness(&node.status()) {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

/// Whether the request is a gRPC call (`application/grpc`, `application/grpc+proto`, …).
fn is_grpc(req: &Request<Body>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/grpc"))
}

/// grpc-go's message for a call it has no handler for: `/svc/method` with an unknown service
/// is "unknown service svc"; anything that is not of that shape is a malformed method name.
fn unimplemented_message(path: &str) -> String {
    match path.strip_prefix('/').and_then(|p| p.split_once('/')) {
        Some((service, method)) if !service.is_empty() && !method.is_empty() => {
            format!("unknown service {service}")
        }
        _ => format!("malformed method name: {path:?}"),
    }
}

async fn unknown_path(req: Request<Body>) -> Response {
    if !is_grpc(&req) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let status = tonic::Status::unimplemented(unimplemented_message(req.uri().path()));
    let (parts, ()) = status.into_http::<()>().into_parts();
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_service_is_named_as_grpc_go_names_it() {
        assert_eq!(
            unimplemented_message("/v3lockpb.Lock/Lock"),
            "unknown service v3lockpb.Lock"
        );
        assert_eq!(
            unimplemented_message("/nope"),
            "malformed method name: \"/nope\""
        );
    }
}
