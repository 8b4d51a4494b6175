//! The HTTP/JSON gateway, as etcd 3.4's grpc-gateway: `POST /v3/kv/range` etc. with JSON
//! bodies, served on the client port next to gRPC (tonic accepts HTTP/1.1 there and routes
//! every path that is not a gRPC service to this axum router, as etcd multiplexes one port).
//!
//! The JSON form is protobuf's canonical JSON as the gateway prints it (`OrigName`): field
//! names as written in the `.proto` files (`range_end`, `dbSize`, `ID`), `bytes` as base64,
//! 64-bit integers as strings, enums by name, and fields with default values left out. Input
//! is accepted in the same lenient way jsonpb reads it: either name spelling (`range_end` or
//! `rangeEnd`), integers as strings or numbers, enums by name or number, standard or URL-safe
//! base64, and an empty body as an empty message. Unknown fields are ignored.
//!
//! That mapping is not written here: `flotilla-proto` generates serde impls for the etcd
//! messages with `pbjson-build` from the same descriptors prost compiles, so a field added to
//! the `.proto` files reaches the gateway without touching this module. What this module owns
//! is the HTTP side: the routes, turning a body into a request message and a response message
//! into JSON, and errors. The jsonpb reading rules the generated impls do not follow are
//! applied here before decoding: an empty body is `{}`, a field whose value is `null` is
//! absent, and a field given in both spellings takes the `.proto` one (pbjson refuses the
//! last two).
//!
//! Each endpoint calls the same service code the gRPC API runs, so routing to the leader,
//! ReadIndex, validation, auth and headers are identical. The caller's token comes as
//! grpc-gateway v1 forwards it to etcd: the `Authorization` header (the bare token returned by
//! `/v3/auth/authenticate`) becomes the `authorization` metadata key, `Grpc-Metadata-Token`
//! becomes `token`; with auth enabled a request without one is refused as a gRPC one is. The
//! Auth service itself is served under etcd 3.4's paths (`/v3/auth/enable`,
//! `/v3/auth/authenticate`, `/v3/auth/user/{add,get,list,delete,changepw,grant,revoke}`,
//! `/v3/auth/role/{add,get,list,delete,grant,revoke}`, …). Errors come back as grpc-gateway's
//! `{"error": …, "code": <gRPC code>, "message": …}` with its HTTP status mapping; a body that
//! is not valid JSON (or has a field of the wrong type) is a 400 with code 3, naming the field
//! and what it should hold (read from the descriptors, as the generated impls' own errors say
//! only what went wrong, e.g. "invalid digit found in string").

use std::collections::HashMap;
use std::sync::LazyLock;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use flotilla_proto::etcdserverpb::auth_server::Auth as _;
use flotilla_proto::etcdserverpb::cluster_server::Cluster as _;
use flotilla_proto::etcdserverpb::kv_server::Kv as _;
use flotilla_proto::etcdserverpb::lease_server::Lease as _;
use flotilla_proto::etcdserverpb::maintenance_server::Maintenance as _;
use flotilla_proto::etcdserverpb::{
    AuthDisableRequest, AuthEnableRequest, AuthRoleAddRequest, AuthRoleDeleteRequest,
    AuthRoleGetRequest, AuthRoleGrantPermissionRequest, AuthRoleListRequest,
    AuthRoleRevokePermissionRequest, AuthUserAddRequest, AuthUserChangePasswordRequest,
    AuthUserDeleteRequest, AuthUserGetRequest, AuthUserGrantRoleRequest, AuthUserListRequest,
    AuthUserRevokeRoleRequest, AuthenticateRequest, CompactionRequest, DeleteRangeRequest,
    LeaseGrantRequest, LeaseRevokeRequest, MemberListRequest, PutRequest, RangeRequest,
    StatusRequest, TxnRequest,
};
use flotilla_proto::v3electionpb::election_server::Election as _;
use flotilla_proto::v3electionpb::{
    CampaignRequest, LeaderRequest, ProclaimRequest, ResignRequest,
};
use flotilla_proto::v3lockpb::lock_server::Lock as _;
use flotilla_proto::v3lockpb::{LockRequest, UnlockRequest};
use prost::Message as _;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};
use serde_path_to_error::{Path, Segment};

use crate::api::auth::AuthService;
use crate::api::election::ElectionService;
use crate::api::lock::LockService;
use crate::api::maintenance::MaintenanceService;
use crate::api::{cluster::ClusterService, kv::KvService, lease::LeaseService};
use crate::member::handle::NodeHandle;

/// The gateway's routes; [`crate::client_http`] merges them into the client port's router.
/// `bcrypt_cost` is the Auth service's (`--bcrypt-cost`), for the passwords of `/v3/auth/*`.
pub fn router(node: NodeHandle, bcrypt_cost: u32) -> Router {
    let auth = AuthGateway {
        service: AuthService::new(node.clone(), bcrypt_cost),
        node: node.clone(),
    };
    let auth = Router::new()
        .route("/v3/auth/enable", post(auth_enable))
        .route("/v3/auth/disable", post(auth_disable))
        .route("/v3/auth/authenticate", post(auth_authenticate))
        .route("/v3/auth/user/add", post(auth_user_add))
        .route("/v3/auth/user/get", post(auth_user_get))
        .route("/v3/auth/user/list", post(auth_user_list))
        .route("/v3/auth/user/delete", post(auth_user_delete))
        .route("/v3/auth/user/changepw", post(auth_user_changepw))
        .route("/v3/auth/user/grant", post(auth_user_grant))
        .route("/v3/auth/user/revoke", post(auth_user_revoke))
        .route("/v3/auth/role/add", post(auth_role_add))
        .route("/v3/auth/role/get", post(auth_role_get))
        .route("/v3/auth/role/list", post(auth_role_list))
        .route("/v3/auth/role/delete", post(auth_role_delete))
        .route("/v3/auth/role/grant", post(auth_role_grant))
        .route("/v3/auth/role/revoke", post(auth_role_revoke))
        .with_state(auth);
    Router::new()
        .route("/v3/kv/range", post(kv_range))
        .route("/v3/kv/put", post(kv_put))
        .route("/v3/kv/deleterange", post(kv_deleterange))
        .route("/v3/kv/txn", post(kv_txn))
        .route("/v3/kv/compaction", post(kv_compaction))
        .route("/v3/lease/grant", post(lease_grant))
        .route("/v3/lease/revoke", post(lease_revoke))
        .route("/v3/maintenance/status", post(maintenance_status))
        .route("/v3/cluster/member/list", post(member_list))
        .route("/v3/lock/lock", post(lock_lock))
        .route("/v3/lock/unlock", post(lock_unlock))
        .route("/v3/election/campaign", post(election_campaign))
        .route("/v3/election/proclaim", post(election_proclaim))
        .route("/v3/election/leader", post(election_leader))
        .route("/v3/election/resign", post(election_resign))
        .with_state(node)
        .merge(auth)
}

// ---------- errors ----------

/// A request the gateway refuses before or after calling the service.
#[derive(Debug)]
struct GatewayError(tonic::Status);

impl GatewayError {
    fn bad(msg: impl Into<String>) -> Self {
        GatewayError(tonic::Status::invalid_argument(msg.into()))
    }
}

impl From<tonic::Status> for GatewayError {
    fn from(s: tonic::Status) -> Self {
        GatewayError(s)
    }
}

/// grpc-gateway v1's `HTTPStatusFromCode`.
fn http_status(code: tonic::Code) -> StatusCode {
    use tonic::Code::*;
    match code {
        Ok => StatusCode::OK,
        Cancelled => StatusCode::REQUEST_TIMEOUT,
        InvalidArgument | FailedPrecondition | OutOfRange => StatusCode::BAD_REQUEST,
        DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        NotFound => StatusCode::NOT_FOUND,
        AlreadyExists | Aborted => StatusCode::CONFLICT,
        PermissionDenied => StatusCode::FORBIDDEN,
        Unauthenticated => StatusCode::UNAUTHORIZED,
        ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Unknown | Internal | DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let msg = self.0.message().to_string();
        let body = json!({"error": msg, "code": self.0.code() as i32, "message": msg});
        (http_status(self.0.code()), axum::Json(body)).into_response()
    }
}

type Answer = Result<axum::Json<Value>, GatewayError>;

// ---------- reading JSON ----------

/// A request message the gateway reads, with its protobuf name so that a refused field can
/// be described from the descriptors.
trait GatewayRequest: DeserializeOwned {
    /// The fully qualified message name, without the leading dot.
    const PROTO_NAME: &'static str;
}

macro_rules! etcd_requests {
    ($($message:ident),* $(,)?) => {$(
        impl GatewayRequest for $message {
            const PROTO_NAME: &'static str = concat!("etcdserverpb.", stringify!($message));
        }
    )*};
}

etcd_requests!(
    AuthEnableRequest,
    AuthDisableRequest,
    AuthenticateRequest,
    AuthUserAddRequest,
    AuthUserGetRequest,
    AuthUserListRequest,
    AuthUserDeleteRequest,
    AuthUserChangePasswordRequest,
    AuthUserGrantRoleRequest,
    AuthUserRevokeRoleRequest,
    AuthRoleAddRequest,
    AuthRoleGetRequest,
    AuthRoleListRequest,
    AuthRoleDeleteRequest,
    AuthRoleGrantPermissionRequest,
    AuthRoleRevokePermissionRequest,
    RangeRequest,
    PutRequest,
    DeleteRangeRequest,
    TxnRequest,
    CompactionRequest,
    LeaseGrantRequest,
    LeaseRevokeRequest,
    StatusRequest,
    MemberListRequest,
);

/// Lock and Election requests (`v3lockpb`, `v3electionpb`), served like the etcd ones.
macro_rules! package_requests {
    ($package:literal: $($message:ident),* $(,)?) => {$(
        impl GatewayRequest for $message {
            const PROTO_NAME: &'static str = concat!($package, ".", stringify!($message));
        }
    )*};
}

package_requests!("v3lockpb": LockRequest, UnlockRequest);
package_requests!("v3electionpb": CampaignRequest, ProclaimRequest, LeaderRequest, ResignRequest);

fn read<T: GatewayRequest>(node: &NodeHandle, body: &[u8]) -> Result<T, GatewayError> {
    if body.len() > node.max_request_bytes {
        return Err(GatewayError::bad("etcdserver: request is too large"));
    }
    decode(body)
}

/// A body as a request message. It goes through a `Value` first so that a syntax error and a
/// field of the wrong type get different messages, and so that [`normalize`] can run.
/// Nested txns are bounded by the JSON parser's own recursion limit (128 levels).
fn decode<T: GatewayRequest>(body: &[u8]) -> Result<T, GatewayError> {
    let mut value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body)
            .map_err(|e| GatewayError::bad(format!("invalid JSON body: {e}")))?
    };
    if !value.is_object() {
        return Err(GatewayError::bad("request body must be a JSON object"));
    }
    normalize(&mut value, MESSAGES.get(T::PROTO_NAME));
    serde_path_to_error::deserialize(&value).map_err(|e| {
        let path = e.path();
        let expected = describe(T::PROTO_NAME, path)
            .map(|what| format!(": expected {what}"))
            .unwrap_or_default();
        if path.iter().next().is_none() {
            GatewayError::bad(format!("{}{expected}", e.inner()))
        } else {
            GatewayError::bad(format!(
                "field {:?}{expected}: {}",
                path.to_string(),
                e.inner()
            ))
        }
    })
}

/// The two jsonpb reading rules the generated impls lack, applied to `value` read as
/// `message`: a field set to `null` has its default (pbjson refuses `null` for a scalar or
/// list), and a field given in both spellings takes the `.proto` one and ignores the other
/// (pbjson refuses the pair as a duplicate).
fn normalize(value: &mut Value, message: Option<&DescriptorProto>) {
    match value {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            for field in message.map(|d| d.field.as_slice()).unwrap_or_default() {
                if field.json_name() != field.name() && m.contains_key(field.name()) {
                    m.remove(field.json_name());
                }
            }
            for (key, v) in m.iter_mut() {
                normalize(v, message.and_then(|d| field_message(d, key)));
            }
        }
        // A repeated message field: each element is one of the field's messages.
        Value::Array(a) => a.iter_mut().for_each(|v| normalize(v, message)),
        _ => {}
    }
}

/// The field of `message` spelt `key`, by either spelling.
fn field_named<'a>(message: &'a DescriptorProto, key: &str) -> Option<&'a FieldDescriptorProto> {
    message
        .field
        .iter()
        .find(|f| f.name() == key || f.json_name() == key)
}

/// The message type of the field of `message` spelt `key`, if it is a message field.
fn field_message(message: &DescriptorProto, key: &str) -> Option<&'static DescriptorProto> {
    field_named(message, key)
        .filter(|f| f.r#type() == Type::Message)
        .and_then(|f| MESSAGES.get(f.type_name().trim_start_matches('.')))
}

/// Every message in the descriptor set, by fully qualified name without the leading dot.
static MESSAGES: LazyLock<HashMap<String, DescriptorProto>> = LazyLock::new(|| {
    let mut out = HashMap::new();
    // The set is written by the same build that generated the impls, so it decodes (a unit
    // test checks every request message is found); a network path must not panic on it anyway.
    if let Ok(set) = FileDescriptorSet::decode(flotilla_proto::FILE_DESCRIPTOR_SET) {
        for file in set.file {
            let package = file.package().to_string();
            for message in file.message_type {
                index_message(&package, message, &mut out);
            }
        }
    }
    out
});

fn index_message(
    scope: &str,
    mut message: DescriptorProto,
    out: &mut HashMap<String, DescriptorProto>,
) {
    let name = format!("{scope}.{}", message.name());
    for nested in std::mem::take(&mut message.nested_type) {
        index_message(&name, nested, out);
    }
    out.insert(name, message);
}

/// What the field at `path` (as serde reports it) of message `root` holds, in words.
fn describe(root: &str, path: &Path) -> Option<String> {
    let mut message = MESSAGES.get(root)?;
    // The field the path has reached, and whether it went on into one of its list elements.
    let mut at: Option<(&FieldDescriptorProto, bool)> = None;
    for segment in path.iter() {
        match segment {
            Segment::Map { key } => {
                if let Some((field, _)) = at {
                    message = MESSAGES.get(field.type_name().trim_start_matches('.'))?;
                }
                at = Some((field_named(message, key)?, false));
            }
            Segment::Seq { .. } => at = at.map(|(field, _)| (field, true)),
            _ => return None,
        }
    }
    let (field, in_element) = at?;
    let one = match field.r#type() {
        Type::Bytes => "bytes in base64".to_string(),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
            "a 64-bit integer (a number or a string)".to_string()
        }
        Type::Uint64 | Type::Fixed64 => {
            "an unsigned 64-bit integer (a number or a string)".to_string()
        }
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => {
            "a 32-bit integer (a number or a string)".to_string()
        }
        Type::Uint32 | Type::Fixed32 => {
            "an unsigned 32-bit integer (a number or a string)".to_string()
        }
        Type::Bool => "true or false".to_string(),
        Type::String => "a string".to_string(),
        Type::Double | Type::Float => "a number".to_string(),
        Type::Enum => format!(
            "enum {} (a value's name or number)",
            field.type_name().trim_start_matches('.')
        ),
        Type::Message | Type::Group => {
            format!("an object ({})", field.type_name().trim_start_matches('.'))
        }
    };
    Some(if field.label() == Label::Repeated && !in_element {
        format!("a list, each {one}")
    } else {
        one
    })
}

// ---------- the caller's token ----------

/// The HTTP headers that carry the caller's token, as grpc-gateway v1 forwards them to etcd:
/// `Authorization` as the `authorization` metadata key (etcd reads it when `token` is absent),
/// and `Grpc-Metadata-Token` as `token`. The token is the bare string `/v3/auth/authenticate`
/// returned (`Authorization: <token>`, no scheme), as etcd's gateway expects.
const TOKEN_HEADERS: [(&str, &str); 2] = [
    ("authorization", "authorization"),
    ("grpc-metadata-token", "token"),
];

/// `message` as a gRPC request carrying the caller's token from `headers`, so every service
/// judges a gateway request exactly as the gRPC one: with auth enabled, no token is refused
/// and a token acts as its user; one that is not text is refused as an invalid token (by
/// `crate::auth::identity`, as for gRPC).
fn grpc_request<T>(headers: &HeaderMap, message: T) -> Result<tonic::Request<T>, GatewayError> {
    let mut req = tonic::Request::new(message);
    for (header, key) in TOKEN_HEADERS {
        if let Some(v) = headers.get(header) {
            let v = tonic::metadata::MetadataValue::try_from(v.as_bytes())
                .map_err(|_| GatewayError(crate::auth::AuthError::InvalidAuthToken.into()))?;
            req.metadata_mut().insert(key, v);
        }
    }
    Ok(req)
}

// ---------- writing JSON ----------

/// A response message as the gateway prints it (the generated impls, `OrigName`).
fn answer<T: Serialize>(message: &T) -> Answer {
    serde_json::to_value(message).map(axum::Json).map_err(|e| {
        GatewayError(tonic::Status::internal(format!(
            "encoding the response: {e}"
        )))
    })
}

// ---------- handlers ----------

async fn kv_range(State(node): State<NodeHandle>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: RangeRequest = read(&node, &body)?;
    let r = KvService::new(node)
        .range(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn kv_put(State(node): State<NodeHandle>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: PutRequest = read(&node, &body)?;
    let r = KvService::new(node)
        .put(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn kv_deleterange(State(node): State<NodeHandle>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: DeleteRangeRequest = read(&node, &body)?;
    let r = KvService::new(node)
        .delete_range(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn kv_txn(State(node): State<NodeHandle>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: TxnRequest = read(&node, &body)?;
    let r = KvService::new(node)
        .txn(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn kv_compaction(State(node): State<NodeHandle>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: CompactionRequest = read(&node, &body)?;
    let r = KvService::new(node)
        .compact(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn lease_grant(State(node): State<NodeHandle>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: LeaseGrantRequest = read(&node, &body)?;
    let r = LeaseService::new(node)
        .lease_grant(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn lease_revoke(State(node): State<NodeHandle>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: LeaseRevokeRequest = read(&node, &body)?;
    let r = LeaseService::new(node)
        .lease_revoke(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn maintenance_status(
    State(node): State<NodeHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let req: StatusRequest = read(&node, &body)?;
    let r = MaintenanceService::new(node)
        .status(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn member_list(State(node): State<NodeHandle>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: MemberListRequest = read(&node, &body)?;
    let r = ClusterService::new(node)
        .member_list(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

// Lock and Election: etcd's gateway serves these too (Observe, a server stream, is not
// served here).

async fn lock_lock(State(node): State<NodeHandle>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: LockRequest = read(&node, &body)?;
    let r = LockService::new(node)
        .lock(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn lock_unlock(State(node): State<NodeHandle>, headers: HeaderMap, body: Bytes) -> Answer {
    let req: UnlockRequest = read(&node, &body)?;
    let r = LockService::new(node)
        .unlock(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn election_campaign(
    State(node): State<NodeHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let req: CampaignRequest = read(&node, &body)?;
    let r = ElectionService::new(node)
        .campaign(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn election_proclaim(
    State(node): State<NodeHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let req: ProclaimRequest = read(&node, &body)?;
    let r = ElectionService::new(node)
        .proclaim(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn election_leader(
    State(node): State<NodeHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let req: LeaderRequest = read(&node, &body)?;
    let r = ElectionService::new(node)
        .leader(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

async fn election_resign(
    State(node): State<NodeHandle>,
    headers: HeaderMap,
    body: Bytes,
) -> Answer {
    let req: ResignRequest = read(&node, &body)?;
    let r = ElectionService::new(node)
        .resign(grpc_request(&headers, req)?)
        .await?;
    answer(r.get_ref())
}

// etcd's Auth service (`/v3/auth/*`, the paths of etcd 3.4's rpc.proto). The token of the
// caller (Authorization header) is needed for everything but Authenticate once auth is on.

/// The Auth service and the member it serves for (the size limit of request bodies).
#[derive(Clone)]
struct AuthGateway {
    node: NodeHandle,
    service: AuthService,
}

/// One `/v3/auth/*` handler: read the JSON body, call the Auth service with the caller's token.
macro_rules! auth_handlers {
    ($($name:ident: $request:ty => $method:ident;)*) => {$(
        async fn $name(State(g): State<AuthGateway>, headers: HeaderMap, body: Bytes) -> Answer {
            let req: $request = read(&g.node, &body)?;
            let r = g.service.$method(grpc_request(&headers, req)?).await?;
            answer(r.get_ref())
        }
    )*};
}

auth_handlers! {
    auth_enable: AuthEnableRequest => auth_enable;
    auth_disable: AuthDisableRequest => auth_disable;
    auth_authenticate: AuthenticateRequest => authenticate;
    auth_user_add: AuthUserAddRequest => user_add;
    auth_user_get: AuthUserGetRequest => user_get;
    auth_user_list: AuthUserListRequest => user_list;
    auth_user_delete: AuthUserDeleteRequest => user_delete;
    auth_user_changepw: AuthUserChangePasswordRequest => user_change_password;
    auth_user_grant: AuthUserGrantRoleRequest => user_grant_role;
    auth_user_revoke: AuthUserRevokeRoleRequest => user_revoke_role;
    auth_role_add: AuthRoleAddRequest => role_add;
    auth_role_get: AuthRoleGetRequest => role_get;
    auth_role_list: AuthRoleListRequest => role_list;
    auth_role_delete: AuthRoleDeleteRequest => role_delete;
    auth_role_grant: AuthRoleGrantPermissionRequest => role_grant_permission;
    auth_role_revoke: AuthRoleRevokePermissionRequest => role_revoke_permission;
}

#[cfg(test)]
mod tests {
    use super::*;
    use flotilla_proto::etcdserverpb::{
        LeaseGrantResponse, Member, MemberListResponse, RangeResponse, ResponseHeader,
        StatusResponse, compare, range_request, request_op,
    };
    use flotilla_proto::mvccpb::KeyValue;

    fn decode_json<T: GatewayRequest>(v: &Value) -> Result<T, GatewayError> {
        decode(v.to_string().as_bytes())
    }

    #[test]
    fn requests_read_both_spellings_strings_and_enums() {
        let r: RangeRequest = decode_json(&json!({"key": "Zm9v", "rangeEnd": "Zm9w",
            "limit": "5", "revision": 3, "sort_order": "DESCEND", "sort_target": 3,
            "keys_only": true}))
        .expect("valid");
        assert_eq!(r.key, b"foo");
        assert_eq!(r.range_end, b"fop");
        assert_eq!((r.limit, r.revision), (5, 3));
        assert_eq!(r.sort_order, range_request::SortOrder::Descend as i32);
        assert_eq!(r.sort_target, range_request::SortTarget::Mod as i32);
        assert!(r.keys_only && !r.count_only);
    }

    #[test]
    fn requests_read_url_safe_base64_nulls_unknown_fields_and_empty_bodies() {
        // "+/8=" in standard base64 is "-_8" in URL-safe base64 without padding.
        let r: RangeRequest = decode_json(&json!({"key": "-_8", "range_end": null,
            "limit": null, "sort_order": null, "future_field": {"x": [1]}}))
        .expect("valid");
        assert_eq!(r.key, [0xfb, 0xff]);
        assert!(r.range_end.is_empty() && r.limit == 0 && r.sort_order == 0);
        let p: PutRequest = decode_json(&json!({"key": "+/8=", "value": "YmFy"})).expect("valid");
        assert_eq!(p.key, [0xfb, 0xff]);
        for empty in ["", "  \n", "{}"] {
            let s: StatusRequest = decode(empty.as_bytes()).expect("empty request");
            assert_eq!(s, StatusRequest {});
        }
        // Both spellings at once: the .proto one wins, as in jsonpb, at any depth.
        let r: RangeRequest = decode_json(&json!({"key": "Zm9v", "rangeEnd": "eA==",
            "range_end": "Zm9w"}))
        .expect("valid");
        assert_eq!(r.range_end, b"fop");
        let t: TxnRequest = decode_json(&json!({"compare": null, "success": [{
            "requestPut": {"key": "eA=="},
            "request_put": {"key": "Zm9v", "prevKv": false, "prev_kv": true, "lease": null}}]}))
        .expect("valid");
        assert!(matches!(
            &t.success[0].request,
            Some(request_op::Request::RequestPut(p)) if p.prev_kv && p.key == b"foo"
        ));
        let g: LeaseGrantRequest = decode_json(&json!({"TTL": "30", "ID": 7})).expect("valid");
        assert_eq!((g.ttl, g.id), (30, 7));
    }

    #[test]
    fn bad_fields_are_refused_with_invalid_argument() {
        for (bad, want) in [
            (json!({"key": 5}), "base64"),
            (json!({"key": "!!!"}), "base64"),
            (json!({"limit": "ten"}), "integer"),
            (json!({"keys_only": "yes"}), "true or false"),
            (json!({"sort_order": "SIDEWAYS"}), "enum"),
            (json!({"sort_order": 9}), "enum"),
        ] {
            let e = decode_json::<RangeRequest>(&bad).expect_err("refused");
            assert_eq!(e.0.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(e.0.message().contains(want), "{bad}: {}", e.0.message());
        }
        let e = decode_json::<TxnRequest>(&json!({"compare": [1]})).expect_err("refused");
        assert_eq!(e.0.code(), tonic::Code::InvalidArgument);
        assert!(
            e.0.message().contains("compare[0]")
                && e.0.message().contains("an object (etcdserverpb.Compare)"),
            "{}",
            e.0.message()
        );
        let nested = json!({"success": [{"request_put": {"lease": true}}]});
        let e = decode_json::<TxnRequest>(&nested).expect_err("refused");
        assert!(
            e.0.message().contains("success[0].request_put.lease")
                && e.0.message().contains("integer"),
            "{}",
            e.0.message()
        );
        for body in ["{\"key\": ", "[1, 2]", "\"key\""] {
            let e = decode::<PutRequest>(body.as_bytes()).expect_err("refused");
            assert_eq!(e.0.code(), tonic::Code::InvalidArgument, "{body}");
        }
    }

    #[test]
    fn txn_requests_nest() {
        let t: TxnRequest = decode_json(&json!({
            "compare": [{"result": "EQUAL", "target": "VALUE", "key": "Zm9v", "value": "YmFy"}],
            "success": [{"request_put": {"key": "Zm9v", "value": "YmF6"}}],
            "failure": [{"requestRange": {"key": "Zm9v"}}]
        }))
        .expect("valid");
        assert_eq!(t.compare[0].target, compare::CompareTarget::Value as i32);
        assert_eq!(
            t.compare[0].target_union,
            Some(compare::TargetUnion::Value(b"bar".to_vec()))
        );
        assert!(matches!(
            t.success[0].request,
            Some(request_op::Request::RequestPut(_))
        ));
        assert!(matches!(
            t.failure[0].request,
            Some(request_op::Request::RequestRange(_))
        ));
    }

    #[test]
    fn deeply_nested_txns_are_decoded_or_refused_without_overflowing() {
        let nest = |depth: usize| {
            let mut body = String::from("{}");
            for _ in 0..depth {
                body = format!("{{\"success\": [{{\"request_txn\": {body}}}]}}");
            }
            body
        };
        // 3 JSON levels a txn: 42 fit under serde_json's limit of 128, 50 do not.
        assert!(decode::<TxnRequest>(nest(42).as_bytes()).is_ok());
        let e = decode::<TxnRequest>(nest(50).as_bytes()).expect_err("too deep");
        assert_eq!(e.0.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn every_request_is_described_by_the_descriptors() {
        fn known<T: GatewayRequest>() {
            assert!(MESSAGES.contains_key(T::PROTO_NAME), "{}", T::PROTO_NAME);
        }
        known::<RangeRequest>();
        known::<PutRequest>();
        known::<DeleteRangeRequest>();
        known::<TxnRequest>();
        known::<CompactionRequest>();
        known::<LeaseGrantRequest>();
        known::<LeaseRevokeRequest>();
        known::<StatusRequest>();
        known::<MemberListRequest>();
        known::<LockRequest>();
        known::<UnlockRequest>();
        known::<CampaignRequest>();
        known::<ProclaimRequest>();
        known::<LeaderRequest>();
        known::<ResignRequest>();
        known::<AuthenticateRequest>();
        known::<AuthUserAddRequest>();
        known::<AuthRoleGrantPermissionRequest>();
        known::<AuthRoleRevokePermissionRequest>();
    }

    #[test]
    fn tokens_travel_as_grpc_gateway_forwards_them() {
        let mut h = HeaderMap::new();
        h.insert(
            "authorization",
            "abcdefghijklmnop.12".parse().expect("header"),
        );
        let r = grpc_request(&h, StatusRequest {}).expect("request");
        assert_eq!(
            r.metadata().get("authorization").map(|v| v.to_str().ok()),
            Some(Some("abcdefghijklmnop.12"))
        );
        let mut h = HeaderMap::new();
        h.insert("grpc-metadata-token", "tok.3".parse().expect("header"));
        let r = grpc_request(&h, StatusRequest {}).expect("request");
        assert_eq!(
            r.metadata().get("token").map(|v| v.to_str().ok()),
            Some(Some("tok.3"))
        );
        let r = grpc_request(&HeaderMap::new(), StatusRequest {}).expect("request");
        assert!(r.metadata().is_empty());
    }

    #[test]
    fn responses_use_strings_for_int64_and_omit_defaults() {
        let r = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: u64::MAX,
                member_id: 2,
                revision: 7,
                raft_term: 0,
            }),
            kvs: vec![KeyValue {
                key: b"foo".to_vec(),
                value: b"bar".to_vec(),
                create_revision: 7,
                mod_revision: 7,
                version: 1,
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            serde_json::to_value(&r).expect("encodes"),
            json!({
                "header": {"cluster_id": u64::MAX.to_string(), "member_id": "2",
                           "revision": "7"},
                "kvs": [{"key": "Zm9v", "create_revision": "7", "mod_revision": "7",
                         "version": "1", "value": "YmFy"}],
                "count": "1"
            })
        );
    }

    #[test]
    fn responses_use_the_names_written_in_the_proto_files() {
        let grant = LeaseGrantResponse {
            header: None,
            id: 5,
            ttl: 30,
            error: String::new(),
        };
        assert_eq!(
            serde_json::to_value(&grant).expect("encodes"),
            json!({"ID": "5", "TTL": "30"})
        );
        let members = MemberListResponse {
            header: None,
            members: vec![Member {
                id: 1,
                name: "a".into(),
                peer_ur_ls: vec!["http://a:2380".into()],
                client_ur_ls: vec![],
                is_learner: true,
            }],
        };
        assert_eq!(
            serde_json::to_value(&members).expect("encodes"),
            json!({"members": [{"ID": "1", "name": "a", "peerURLs": ["http://a:2380"],
                                "isLearner": true}]})
        );
        let status = StatusResponse {
            db_size: 4096,
            raft_index: 9,
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&status).expect("encodes"),
            json!({"dbSize": "4096", "raftIndex": "9"})
        );
    }

    #[test]
    fn grpc_codes_map_to_gateway_http_statuses() {
        assert_eq!(
            http_status(tonic::Code::InvalidArgument),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(http_status(tonic::Code::NotFound), StatusCode::NOT_FOUND);
        assert_eq!(
            http_status(tonic::Code::Unavailable),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
}
