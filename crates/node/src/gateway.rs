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
//! Each endpoint calls the same service code the gRPC API runs, so routing to the leader,
//! ReadIndex, validation and headers are identical. Errors come back as grpc-gateway's
//! `{"error": …, "code": <gRPC code>, "message": …}` with its HTTP status mapping; a body that
//! is not valid JSON (or has a field of the wrong type) is a 400 with code 3.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use flotilla_proto::etcdserverpb::cluster_server::Cluster as _;
use flotilla_proto::etcdserverpb::kv_server::Kv as _;
use flotilla_proto::etcdserverpb::lease_server::Lease as _;
use flotilla_proto::etcdserverpb::maintenance_server::Maintenance as _;
use flotilla_proto::etcdserverpb::{
    CompactionRequest, Compare, DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest,
    LeaseRevokeRequest, MemberListRequest, PutRequest, PutResponse, RangeRequest, RangeResponse,
    RequestOp, ResponseHeader, ResponseOp, StatusRequest, TxnRequest, TxnResponse, compare,
    range_request, request_op, response_op,
};
use flotilla_proto::mvccpb::KeyValue;
use serde_json::{Map, Value, json};

use crate::api::maintenance::MaintenanceService;
use crate::api::{cluster::ClusterService, kv::KvService, lease::LeaseService};
use crate::server::handle::NodeHandle;

/// The gateway's routes, ready to be merged with the gRPC services on the client port.
pub fn routes(node: NodeHandle) -> tonic::service::Routes {
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
        .with_state(node)
        .into()
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

fn parse_body(node: &NodeHandle, body: &Bytes) -> Result<Map<String, Value>, GatewayError> {
    if body.len() > node.max_request_bytes {
        return Err(GatewayError::bad("etcdserver: request is too large"));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(GatewayError::bad("request body must be a JSON object")),
        Err(e) => Err(GatewayError::bad(format!("invalid JSON body: {e}"))),
    }
}

/// protobuf's lowerCamelCase JSON name of a snake_case field.
fn camel(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut up = false;
    for c in name.chars() {
        if c == '_' {
            up = true;
        } else if up {
            out.extend(c.to_uppercase());
            up = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// A field by either JSON spelling; `null` counts as absent.
fn field<'a>(m: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    m.get(name)
        .or_else(|| m.get(&camel(name)))
        .filter(|v| !v.is_null())
}

fn get_bytes(m: &Map<String, Value>, name: &str) -> Result<Vec<u8>, GatewayError> {
    match field(m, name) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => decode_b64(s)
            .ok_or_else(|| GatewayError::bad(format!("field {name:?}: invalid base64 {s:?}"))),
        Some(_) => Err(GatewayError::bad(format!(
            "field {name:?}: expected a base64 string"
        ))),
    }
}

fn decode_b64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(s).ok())
}

fn get_i64(m: &Map<String, Value>, name: &str) -> Result<i64, GatewayError> {
    let bad = || GatewayError::bad(format!("field {name:?}: expected a 64-bit integer"));
    match field(m, name) {
        None => Ok(0),
        Some(Value::Number(n)) => n.as_i64().ok_or_else(bad),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| bad()),
        Some(_) => Err(bad()),
    }
}

fn get_bool(m: &Map<String, Value>, name: &str) -> Result<bool, GatewayError> {
    match field(m, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(GatewayError::bad(format!(
            "field {name:?}: expected a boolean"
        ))),
    }
}

fn get_enum(
    m: &Map<String, Value>,
    name: &str,
    by_name: impl Fn(&str) -> Option<i32>,
    valid: impl Fn(i32) -> bool,
) -> Result<i32, GatewayError> {
    let bad = || GatewayError::bad(format!("field {name:?}: unknown enum value"));
    match field(m, name) {
        None => Ok(0),
        Some(Value::String(s)) => by_name(s).ok_or_else(bad),
        Some(Value::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| valid(*n))
            .ok_or_else(bad),
        Some(_) => Err(bad()),
    }
}

fn get_object<'a>(
    m: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a Map<String, Value>>, GatewayError> {
    match field(m, name) {
        None => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(GatewayError::bad(format!(
            "field {name:?}: expected an object"
        ))),
    }
}

fn get_list<'a>(
    m: &'a Map<String, Value>,
    name: &str,
) -> Result<Vec<&'a Map<String, Value>>, GatewayError> {
    match field(m, name) {
        None => Ok(Vec::new()),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::Object(o) => Ok(o),
                _ => Err(GatewayError::bad(format!(
                    "field {name:?}: expected a list of objects"
                ))),
            })
            .collect(),
        Some(_) => Err(GatewayError::bad(format!(
            "field {name:?}: expected a list"
        ))),
    }
}

fn range_request(m: &Map<String, Value>) -> Result<RangeRequest, GatewayError> {
    Ok(RangeRequest {
        key: get_bytes(m, "key")?,
        range_end: get_bytes(m, "range_end")?,
        limit: get_i64(m, "limit")?,
        revision: get_i64(m, "revision")?,
        sort_order: get_enum(
            m,
            "sort_order",
            |s| range_request::SortOrder::from_str_name(s).map(|e| e as i32),
            |n| range_request::SortOrder::try_from(n).is_ok(),
        )?,
        sort_target: get_enum(
            m,
            "sort_target",
            |s| range_request::SortTarget::from_str_name(s).map(|e| e as i32),
            |n| range_request::SortTarget::try_from(n).is_ok(),
        )?,
        serializable: get_bool(m, "serializable")?,
        keys_only: get_bool(m, "keys_only")?,
        count_only: get_bool(m, "count_only")?,
        min_mod_revision: get_i64(m, "min_mod_revision")?,
        max_mod_revision: get_i64(m, "max_mod_revision")?,
        min_create_revision: get_i64(m, "min_create_revision")?,
        max_create_revision: get_i64(m, "max_create_revision")?,
    })
}

fn put_request(m: &Map<String, Value>) -> Result<PutRequest, GatewayError> {
    Ok(PutRequest {
        key: get_bytes(m, "key")?,
        value: get_bytes(m, "value")?,
        lease: get_i64(m, "lease")?,
        prev_kv: get_bool(m, "prev_kv")?,
        ignore_value: get_bool(m, "ignore_value")?,
        ignore_lease: get_bool(m, "ignore_lease")?,
    })
}

fn delete_request(m: &Map<String, Value>) -> Result<DeleteRangeRequest, GatewayError> {
    Ok(DeleteRangeRequest {
        key: get_bytes(m, "key")?,
        range_end: get_bytes(m, "range_end")?,
        prev_kv: get_bool(m, "prev_kv")?,
    })
}

fn compare_of(m: &Map<String, Value>) -> Result<Compare, GatewayError> {
    use compare::TargetUnion as T;
    let target_union = if field(m, "version").is_some() {
        Some(T::Version(get_i64(m, "version")?))
    } else if field(m, "create_revision").is_some() {
        Some(T::CreateRevision(get_i64(m, "create_revision")?))
    } else if field(m, "mod_revision").is_some() {
        Some(T::ModRevision(get_i64(m, "mod_revision")?))
    } else if field(m, "value").is_some() {
        Some(T::Value(get_bytes(m, "value")?))
    } else if field(m, "lease").is_some() {
        Some(T::Lease(get_i64(m, "lease")?))
    } else {
        None
    };
    Ok(Compare {
        result: get_enum(
            m,
            "result",
            |s| compare::CompareResult::from_str_name(s).map(|e| e as i32),
            |n| compare::CompareResult::try_from(n).is_ok(),
        )?,
        target: get_enum(
            m,
            "target",
            |s| compare::CompareTarget::from_str_name(s).map(|e| e as i32),
            |n| compare::CompareTarget::try_from(n).is_ok(),
        )?,
        key: get_bytes(m, "key")?,
        range_end: get_bytes(m, "range_end")?,
        target_union,
    })
}

/// Nested txns are bounded by the JSON parser's own recursion limit (128 levels).
fn request_op(m: &Map<String, Value>) -> Result<RequestOp, GatewayError> {
    use request_op::Request as R;
    let request = if let Some(o) = get_object(m, "request_range")? {
        Some(R::RequestRange(range_request(o)?))
    } else if let Some(o) = get_object(m, "request_put")? {
        Some(R::RequestPut(put_request(o)?))
    } else if let Some(o) = get_object(m, "request_delete_range")? {
        Some(R::RequestDeleteRange(delete_request(o)?))
    } else if let Some(o) = get_object(m, "request_txn")? {
        Some(R::RequestTxn(txn_request(o)?))
    } else {
        None
    };
    Ok(RequestOp { request })
}

fn txn_request(m: &Map<String, Value>) -> Result<TxnRequest, GatewayError> {
    let ops = |name: &str| -> Result<Vec<RequestOp>, GatewayError> {
        get_list(m, name)?.into_iter().map(request_op).collect()
    };
    Ok(TxnRequest {
        compare: get_list(m, "compare")?
            .into_iter()
            .map(compare_of)
            .collect::<Result<_, _>>()?,
        success: ops("success")?,
        failure: ops("failure")?,
    })
}

// ---------- writing JSON ----------

/// Collects the non-default fields of a message.
#[derive(Default)]
struct Out(Map<String, Value>);

impl Out {
    fn int(mut self, name: &str, v: i64) -> Self {
        if v != 0 {
            self.0.insert(name.into(), Value::String(v.to_string()));
        }
        self
    }
    fn uint(mut self, name: &str, v: u64) -> Self {
        if v != 0 {
            self.0.insert(name.into(), Value::String(v.to_string()));
        }
        self
    }
    fn bytes(mut self, name: &str, v: &[u8]) -> Self {
        if !v.is_empty() {
            let s = base64::engine::general_purpose::STANDARD.encode(v);
            self.0.insert(name.into(), Value::String(s));
        }
        self
    }
    fn string(mut self, name: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.0.insert(name.into(), Value::String(v.into()));
        }
        self
    }
    fn boolean(mut self, name: &str, v: bool) -> Self {
        if v {
            self.0.insert(name.into(), Value::Bool(true));
        }
        self
    }
    fn value(mut self, name: &str, v: Option<Value>) -> Self {
        if let Some(v) = v {
            self.0.insert(name.into(), v);
        }
        self
    }
    fn list(mut self, name: &str, v: Vec<Value>) -> Self {
        if !v.is_empty() {
            self.0.insert(name.into(), Value::Array(v));
        }
        self
    }
    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn header_json(h: &Option<ResponseHeader>) -> Option<Value> {
    h.as_ref().map(|h| {
        Out::default()
            .uint("cluster_id", h.cluster_id)
            .uint("member_id", h.member_id)
            .int("revision", h.revision)
            .uint("raft_term", h.raft_term)
            .done()
    })
}

fn kv_json(kv: &KeyValue) -> Value {
    Out::default()
        .bytes("key", &kv.key)
        .int("create_revision", kv.create_revision)
        .int("mod_revision", kv.mod_revision)
        .int("version", kv.version)
        .bytes("value", &kv.value)
        .int("lease", kv.lease)
        .done()
}

fn range_json(r: &RangeResponse) -> Value {
    Out::default()
        .value("header", header_json(&r.header))
        .list("kvs", r.kvs.iter().map(kv_json).collect())
        .boolean("more", r.more)
        .int("count", r.count)
        .done()
}

fn put_json(r: &PutResponse) -> Value {
    Out::default()
        .value("header", header_json(&r.header))
        .value("prev_kv", r.prev_kv.as_ref().map(kv_json))
        .done()
}

fn delete_json(r: &DeleteRangeResponse) -> Value {
    Out::default()
        .value("header", header_json(&r.header))
        .int("deleted", r.deleted)
        .list("prev_kvs", r.prev_kvs.iter().map(kv_json).collect())
        .done()
}

fn txn_json(r: &TxnResponse) -> Value {
    Out::default()
        .value("header", header_json(&r.header))
        .boolean("succeeded", r.succeeded)
        .list(
            "responses",
            r.responses.iter().map(response_op_json).collect(),
        )
        .done()
}

fn response_op_json(op: &ResponseOp) -> Value {
    use response_op::Response as R;
    let out = Out::default();
    match &op.response {
        Some(R::ResponseRange(r)) => out.value("response_range", Some(range_json(r))),
        Some(R::ResponsePut(r)) => out.value("response_put", Some(put_json(r))),
        Some(R::ResponseDeleteRange(r)) => out.value("response_delete_range", Some(delete_json(r))),
        Some(R::ResponseTxn(r)) => out.value("response_txn", Some(txn_json(r))),
        None => out,
    }
    .done()
}

// ---------- handlers ----------

async fn kv_range(State(node): State<NodeHandle>, body: Bytes) -> Answer {
    let req = range_request(&parse_body(&node, &body)?)?;
    let r = KvService::new(node).range(tonic::Request::new(req)).await?;
    Ok(axum::Json(range_json(r.get_ref())))
}

async fn kv_put(State(node): State<NodeHandle>, body: Bytes) -> Answer {
    let req = put_request(&parse_body(&node, &body)?)?;
    let r = KvService::new(node).put(tonic::Request::new(req)).await?;
    Ok(axum::Json(put_json(r.get_ref())))
}

async fn kv_deleterange(State(node): State<NodeHandle>, body: Bytes) -> Answer {
    let req = delete_request(&parse_body(&node, &body)?)?;
    let r = KvService::new(node)
        .delete_range(tonic::Request::new(req))
        .await?;
    Ok(axum::Json(delete_json(r.get_ref())))
}

async fn kv_txn(State(node): State<NodeHandle>, body: Bytes) -> Answer {
    let req = txn_request(&parse_body(&node, &body)?)?;
    let r = KvService::new(node).txn(tonic::Request::new(req)).await?;
    Ok(axum::Json(txn_json(r.get_ref())))
}

async fn kv_compaction(State(node): State<NodeHandle>, body: Bytes) -> Answer {
    let m = parse_body(&node, &body)?;
    let req = CompactionRequest {
        revision: get_i64(&m, "revision")?,
        physical: get_bool(&m, "physical")?,
    };
    let r = KvService::new(node)
        .compact(tonic::Request::new(req))
        .await?;
    Ok(axum::Json(
        Out::default()
            .value("header", header_json(&r.get_ref().header))
            .done(),
    ))
}

/// etcd's lease messages spell their fields `ID` and `TTL`.
fn get_upper_i64(m: &Map<String, Value>, upper: &str) -> Result<i64, GatewayError> {
    match m.get(upper) {
        Some(_) => get_i64(m, upper),
        None => get_i64(m, &upper.to_ascii_lowercase()),
    }
}

async fn lease_grant(State(node): State<NodeHandle>, body: Bytes) -> Answer {
    let m = parse_body(&node, &body)?;
    let req = LeaseGrantRequest {
        ttl: get_upper_i64(&m, "TTL")?,
        id: get_upper_i64(&m, "ID")?,
    };
    let r = LeaseService::new(node)
        .lease_grant(tonic::Request::new(req))
        .await?;
    let r = r.get_ref();
    Ok(axum::Json(
        Out::default()
            .value("header", header_json(&r.header))
            .int("ID", r.id)
            .int("TTL", r.ttl)
            .string("error", &r.error)
            .done(),
    ))
}

async fn lease_revoke(State(node): State<NodeHandle>, body: Bytes) -> Answer {
    let m = parse_body(&node, &body)?;
    let req = LeaseRevokeRequest {
        id: get_upper_i64(&m, "ID")?,
    };
    let r = LeaseService::new(node)
        .lease_revoke(tonic::Request::new(req))
        .await?;
    Ok(axum::Json(
        Out::default()
            .value("header", header_json(&r.get_ref().header))
            .done(),
    ))
}

async fn maintenance_status(State(node): State<NodeHandle>, body: Bytes) -> Answer {
    parse_body(&node, &body)?;
    let r = MaintenanceService::new(node)
        .status(tonic::Request::new(StatusRequest {}))
        .await?;
    let r = r.get_ref();
    Ok(axum::Json(
        Out::default()
            .value("header", header_json(&r.header))
            .string("version", &r.version)
            .int("dbSize", r.db_size)
            .uint("leader", r.leader)
            .uint("raftIndex", r.raft_index)
            .uint("raftTerm", r.raft_term)
            .uint("raftAppliedIndex", r.raft_applied_index)
            .list(
                "errors",
                r.errors.iter().map(|e| Value::String(e.clone())).collect(),
            )
            .int("dbSizeInUse", r.db_size_in_use)
            .boolean("isLearner", r.is_learner)
            .done(),
    ))
}

async fn member_list(State(node): State<NodeHandle>, body: Bytes) -> Answer {
    parse_body(&node, &body)?;
    let r = ClusterService::new(node)
        .member_list(tonic::Request::new(MemberListRequest {}))
        .await?;
    let r = r.get_ref();
    let strings = |v: &[String]| v.iter().map(|s| Value::String(s.clone())).collect();
    let members = r
        .members
        .iter()
        .map(|m| {
            Out::default()
                .uint("ID", m.id)
                .string("name", &m.name)
                .list("peerURLs", strings(&m.peer_ur_ls))
                .list("clientURLs", strings(&m.client_ur_ls))
                .boolean("isLearner", m.is_learner)
                .done()
        })
        .collect();
    Ok(axum::Json(
        Out::default()
            .value("header", header_json(&r.header))
            .list("members", members)
            .done(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    #[test]
    fn requests_read_both_spellings_strings_and_enums() {
        let m = obj(
            json!({"key": "Zm9v", "rangeEnd": "Zm9w", "limit": "5", "revision": 3,
            "sort_order": "DESCEND", "sort_target": 3, "keys_only": true}),
        );
        let r = range_request(&m).expect("valid");
        assert_eq!(r.key, b"foo");
        assert_eq!(r.range_end, b"fop");
        assert_eq!((r.limit, r.revision), (5, 3));
        assert_eq!(r.sort_order, range_request::SortOrder::Descend as i32);
        assert_eq!(r.sort_target, range_request::SortTarget::Mod as i32);
        assert!(r.keys_only && !r.count_only);
    }

    #[test]
    fn bad_fields_are_refused_with_invalid_argument() {
        for bad in [
            json!({"key": 5}),
            json!({"key": "!!!"}),
            json!({"limit": "ten"}),
            json!({"keys_only": "yes"}),
            json!({"sort_order": "SIDEWAYS"}),
            json!({"sort_order": 9}),
        ] {
            let e = range_request(&obj(bad.clone())).expect_err("refused");
            assert_eq!(e.0.code(), tonic::Code::InvalidArgument, "{bad}");
        }
        let e = txn_request(&obj(json!({"compare": [1]}))).expect_err("refused");
        assert_eq!(e.0.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn txn_requests_nest() {
        let m = obj(json!({
            "compare": [{"result": "EQUAL", "target": "VALUE", "key": "Zm9v", "value": "YmFy"}],
            "success": [{"request_put": {"key": "Zm9v", "value": "YmF6"}}],
            "failure": [{"requestRange": {"key": "Zm9v"}}]
        }));
        let t = txn_request(&m).expect("valid");
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
            range_json(&r),
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
