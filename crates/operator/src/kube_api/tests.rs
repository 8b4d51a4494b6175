//! Scenario tests of [`KubeApi`]: every request it makes is checked (method, path and query,
//! field manager, body) against a `tower-test` mock API server, as kube-rs/controller-rs's
//! `fixtures.rs` does.

use super::*;
use crate::resources::{self, tests::cluster};
use http::{Method, Request, Response};
use kube::client::Body;
use serde_json::Value;
use tower_test::mock::{self, Handle};

type Server = Handle<Request<Body>, Response<Body>>;

fn api() -> (KubeApi, Server) {
    let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
    (
        KubeApi::new(Client::new(svc, "default"), Some("op-0".into())),
        handle,
    )
}

/// Takes the next request, checks method and URI, answers `reply` with `code`, returns the body.
async fn expect(server: &mut Server, method: Method, uri: &str, code: u16, reply: Value) -> Value {
    let (req, send) =
        tokio::time::timeout(std::time::Duration::from_secs(5), server.next_request())
            .await
            .expect("request within 5 s")
            .expect("service called");
    assert_eq!(req.method(), method);
    assert_eq!(req.uri().to_string(), uri);
    let bytes = req.into_body().collect_bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("json body")
    };
    let resp = Response::builder()
        .status(code)
        .body(Body::from(serde_json::to_vec(&reply).expect("json")))
        .expect("response");
    send.send_response(resp);
    body
}

fn not_found() -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})
}

#[tokio::test]
async fn apply_statefulset_is_server_side_apply_with_our_field_manager() {
    let (api, mut server) = api();
    let rc = cluster(3);
    let sts = resources::stateful_set(&rc, None).expect("sts");
    let reply = serde_json::to_value(&sts).expect("json");
    let call =
        tokio::spawn(async move { api.apply("ns", &Owned::StatefulSet(Box::new(sts))).await });
    let body = expect(
        &mut server,
        Method::PATCH,
        "/apis/apps/v1/namespaces/ns/statefulsets/demo?&force=true&fieldManager=flotilla-operator",
        200,
        reply,
    )
    .await;
    assert_eq!(body["kind"], "StatefulSet");
    assert_eq!(
        body["metadata"]["ownerReferences"][0]["kind"],
        "RaftCluster"
    );
    assert!(
        body["spec"].get("replicas").is_none(),
        "apply must not own replicas"
    );
    call.await.expect("join").expect("apply");
}

#[tokio::test]
async fn apply_pdb_service_and_config_map_hit_their_paths() {
    let (api, mut server) = api();
    let rc = cluster(3);
    let objs = vec![
        (
            Owned::PodDisruptionBudget(resources::pod_disruption_budget(&rc, 3).expect("pdb")),
            "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/demo",
        ),
        (
            Owned::Service(resources::peer_service(&rc).expect("svc")),
            "/api/v1/namespaces/ns/services/demo-peer",
        ),
        (
            Owned::ConfigMap(resources::config_map(&rc, true).expect("cm")),
            "/api/v1/namespaces/ns/configmaps/demo-config",
        ),
        (
            Owned::NetworkPolicy(resources::network_policy(&rc, None).expect("np")),
            "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies/demo",
        ),
        (
            Owned::Secret(
                serde_json::from_value(json!({"metadata": {"name": "demo-tls"}, "data": {}}))
                    .expect("secret"),
            ),
            "/api/v1/namespaces/ns/secrets/demo-tls",
        ),
        (
            Owned::Certificate(Box::new(
                serde_json::from_value(json!({"apiVersion": "cert-manager.io/v1",
                    "kind": "Certificate", "metadata": {"name": "demo-0"}, "spec": {}}))
                .expect("certificate"),
            )),
            "/apis/cert-manager.io/v1/namespaces/ns/certificates/demo-0",
        ),
    ];
    for (obj, path) in objs {
        let api = api.clone();
        let reply = match &obj {
            Owned::PodDisruptionBudget(o) => serde_json::to_value(o),
            Owned::Service(o) => serde_json::to_value(o),
            Owned::ConfigMap(o) => serde_json::to_value(o),
            Owned::StatefulSet(o) => serde_json::to_value(o),
            Owned::NetworkPolicy(o) => serde_json::to_value(o),
            Owned::Secret(o) => serde_json::to_value(o),
            Owned::Certificate(o) => serde_json::to_value(o),
            Owned::Job(o) => serde_json::to_value(o),
            Owned::Pvc(o) => serde_json::to_value(o),
        }
        .expect("json");
        let sent = obj.clone();
        let is_pdb = matches!(obj, Owned::PodDisruptionBudget(_));
        let call = tokio::spawn(async move { api.apply("ns", &sent).await });
        if is_pdb {
            // The first PDB apply asks the server which policy version it serves.
            expect(
                &mut server,
                Method::GET,
                "/apis/policy/v1",
                200,
                json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "policy/v1",
                    "resources": [{"name": "poddisruptionbudgets", "singularName": "", "namespaced": true,
                        "kind": "PodDisruptionBudget", "verbs": ["get", "patch"]}]}),
            )
            .await;
        }
        let uri = format!("{path}?&force=true&fieldManager=flotilla-operator");
        let body = expect(&mut server, Method::PATCH, &uri, 200, reply).await;
        assert_eq!(body["metadata"]["name"], obj.key().1);
        call.await.expect("join").expect("apply");
    }
}

#[tokio::test]
async fn pdb_goes_to_policy_v1beta1_where_policy_v1_is_not_served() {
    let (api, mut server) = api();
    let rc = cluster(3);
    let pdb = Owned::PodDisruptionBudget(resources::pod_disruption_budget(&rc, 3).expect("pdb"));
    for round in 0..2 {
        let (a, sent) = (api.clone(), pdb.clone());
        let call = tokio::spawn(async move { a.apply("ns", &sent).await });
        if round == 0 {
            // Kubernetes 1.20: no policy/v1 group version. Asked once, remembered.
            expect(
                &mut server,
                Method::GET,
                "/apis/policy/v1",
                404,
                not_found(),
            )
            .await;
        }
        let body = expect(
            &mut server,
            Method::PATCH,
            "/apis/policy/v1beta1/namespaces/ns/poddisruptionbudgets/demo?&force=true&fieldManager=flotilla-operator",
            200,
            json!({"apiVersion": "policy/v1beta1", "kind": "PodDisruptionBudget", "metadata": {"name": "demo"}}),
        )
        .await;
        assert_eq!(body["apiVersion"], "policy/v1beta1");
        assert_eq!(body["spec"]["maxUnavailable"], 1);
        call.await.expect("join").expect("apply");
    }
}

#[tokio::test]
async fn scale_patches_the_scale_subresource() {
    let (api, mut server) = api();
    let call = tokio::spawn(async move { api.scale_statefulset("ns", "demo", 4).await });
    let body = expect(
        &mut server,
        Method::PATCH,
        "/apis/apps/v1/namespaces/ns/statefulsets/demo/scale?&fieldManager=flotilla-operator",
        200,
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "demo"}, "spec": {"replicas": 4}}),
    )
    .await;
    assert_eq!(body, json!({"spec": {"replicas": 4}}));
    call.await.expect("join").expect("scale");
}

#[tokio::test]
async fn delete_pvc_tolerates_not_found() {
    let (api, mut server) = api();
    let call = tokio::spawn(async move { api.delete_pvc("ns", "data-demo-4").await });
    expect(
        &mut server,
        Method::DELETE,
        "/api/v1/namespaces/ns/persistentvolumeclaims/data-demo-4?",
        404,
        not_found(),
    )
    .await;
    call.await
        .expect("join")
        .expect("404 is success for a delete");
}

#[tokio::test]
async fn delete_pod_surfaces_other_errors() {
    let (api, mut server) = api();
    let call = tokio::spawn(async move { api.delete_pod("ns", "demo-1").await });
    let forbidden = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403, "message": "no"});
    expect(
        &mut server,
        Method::DELETE,
        "/api/v1/namespaces/ns/pods/demo-1?",
        403,
        forbidden,
    )
    .await;
    let err = call.await.expect("join").expect_err("403 is an error");
    assert_eq!(err.metric_label(), "kube");
}

#[tokio::test]
async fn status_is_applied_to_the_status_subresource() {
    let (api, mut server) = api();
    let rc = cluster(3);
    let status = RaftClusterStatus {
        replicas: 3,
        leader: Some("demo-0".into()),
        ..Default::default()
    };
    let mut reply = serde_json::to_value(&rc).expect("json");
    reply["status"] = serde_json::to_value(&status).expect("json");
    let call = tokio::spawn(async move { api.patch_status(&rc, &status).await });
    let body = expect(
        &mut server,
        Method::PATCH,
        "/apis/flotilla.dev/v1alpha1/namespaces/ns/raftclusters/demo/status?&force=true&fieldManager=flotilla-operator",
        200,
        reply,
    )
    .await;
    assert_eq!(body["apiVersion"], "flotilla.dev/v1alpha1");
    assert_eq!(body["kind"], "RaftCluster");
    assert_eq!(body["status"]["leader"], "demo-0");
    assert_eq!(body["status"]["replicas"], 3);
    call.await.expect("join").expect("status");
}

#[tokio::test]
async fn events_go_to_events_k8s_io_with_reason_and_note() {
    let (api, mut server) = api();
    let rc = cluster(3);
    let n = Note {
        subject: Some("demo-2".into()),
        severity: Severity::Warning,
        reason: "MemberUnhealthy",
        message: "demo-2 is down".into(),
    };
    let call = tokio::spawn(async move { api.publish(&rc, &n).await });
    let (req, send) = server.next_request().await.expect("request");
    assert_eq!(req.method(), Method::POST);
    assert_eq!(
        req.uri().to_string(),
        "/apis/events.k8s.io/v1/namespaces/ns/events?"
    );
    let bytes = req.into_body().collect_bytes().await.expect("body");
    let body: Value = serde_json::from_slice(&bytes).expect("json");
    assert_eq!(body["type"], "Warning");
    assert_eq!(body["reason"], "MemberUnhealthy");
    assert_eq!(body["note"], "demo-2 is down");
    assert_eq!(body["regarding"]["kind"], "RaftCluster");
    assert_eq!(body["related"]["kind"], "Pod");
    assert_eq!(body["related"]["name"], "demo-2");
    assert_eq!(body["reportingController"], "flotilla-operator");
    send.send_response(
        Response::builder()
            .body(Body::from(bytes.to_vec()))
            .expect("response"),
    );
    call.await.expect("join").expect("publish");
}

#[tokio::test]
async fn reads_list_by_selector_and_treat_missing_as_none() {
    let (api, mut server) = api();
    let a = api.clone();
    let call = tokio::spawn(async move { a.statefulset("ns", "demo").await });
    expect(
        &mut server,
        Method::GET,
        "/apis/apps/v1/namespaces/ns/statefulsets/demo",
        404,
        not_found(),
    )
    .await;
    assert_eq!(call.await.expect("join").expect("get"), None);

    let a = api.clone();
    let call = tokio::spawn(async move { a.pods("ns", "app.kubernetes.io/instance=demo").await });
    expect(
        &mut server,
        Method::GET,
        "/api/v1/namespaces/ns/pods?&labelSelector=app.kubernetes.io%2Finstance%3Ddemo",
        200,
        json!({"apiVersion": "v1", "kind": "PodList", "metadata": {}, "items": [{"metadata": {"name": "demo-0"}}]}),
    )
    .await;
    assert_eq!(call.await.expect("join").expect("list").len(), 1);
}
