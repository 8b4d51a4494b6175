//! Leader election among operator replicas with a `coordination.k8s.io/v1` Lease.
//!
//! Only the holder of the Lease reconciles; the others wait. A replica that cannot renew in
//! time stops (the process exits and Kubernetes restarts it as a standby) instead of carrying
//! on — two operators driving membership at once is exactly what "one change at a time" forbids.
//! Writes use `replace` with the Lease's resourceVersion, so two candidates racing for an
//! expired Lease cannot both win: the API server rejects the second with 409 Conflict.
//!
//! The decision itself is the pure [`decide`], tested without an API server.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, PostParams};

use crate::Error;

/// What to do with the Lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it (absent or expired): take it.
    Acquire,
    /// We hold it: renew it.
    Renew,
    /// Someone else holds a live Lease: wait.
    Standby,
}

/// Decides from the Lease (if any), who we are and the time.
pub fn decide(lease: Option<&Lease>, me: &str, now: Timestamp) -> Decision {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else {
        return Decision::Acquire;
    };
    match spec.holder_identity.as_deref() {
        Some(h) if h == me => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) => {
            let duration =
                SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(15)));
            match &spec.renew_time {
                Some(MicroTime(t)) if *t + duration > now => Decision::Standby,
                _ => Decision::Acquire,
            }
        }
    }
}

/// One candidate for the Lease.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    me: String,
    duration: Duration,
}

impl Elector {
    /// A candidate `me` for Lease `name` held for `duration` per renewal.
    pub fn new(api: Api<Lease>, name: String, me: String, duration: Duration) -> Self {
        Self {
            api,
            name,
            me,
            duration,
        }
    }

    /// How often to try: a third of the Lease, so two renewals may fail before it lapses.
    pub fn period(&self) -> Duration {
        self.duration / 3
    }

    /// One round: returns whether we hold the Lease afterwards.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let current = self.api.get_opt(&self.name).await?;
        let decision = decide(current.as_ref(), &self.me, now);
        if decision == Decision::Standby {
            return Ok(false);
        }
        let transitions = current
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        let acquire_time = match (decision, current.as_ref().and_then(|l| l.spec.as_ref())) {
            (Decision::Renew, Some(s)) => s.acquire_time.clone(),
            _ => Some(MicroTime(now)),
        };
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                resource_version: current
                    .as_ref()
                    .and_then(|l| l.metadata.resource_version.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(self.me.clone()),
                lease_duration_seconds: Some(
                    self.duration.as_secs().try_into().unwrap_or(i32::MAX),
                ),
                acquire_time,
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(if decision == Decision::Acquire {
                    transitions + 1
                } else {
                    transitions
                }),
                ..LeaseSpec::default()
            }),
        };
        let written = if current.is_some() {
            self.api
                .replace(&self.name, &PostParams::default(), &lease)
                .await
        } else {
            self.api.create(&PostParams::default(), &lease).await
        };
        match written {
            Ok(_) => Ok(true),
            // Someone else won the race for it.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed: Timestamp) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.into()),
                lease_duration_seconds: Some(15),
                renew_time: Some(MicroTime(renewed)),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn lease_decisions() {
        let t0 = Timestamp::from_second(1_000_000).expect("time");
        let later = |s: i64| t0 + SignedDuration::from_secs(s);
        assert_eq!(decide(None, "a", t0), Decision::Acquire);
        assert_eq!(
            decide(Some(&lease("a", t0)), "a", later(100)),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease("b", t0)), "a", later(14)),
            Decision::Standby
        );
        assert_eq!(
            decide(Some(&lease("b", t0)), "a", later(16)),
            Decision::Acquire
        );
        assert_eq!(decide(Some(&lease("", t0)), "a", t0), Decision::Acquire);
    }

    use http::{Method, Request, Response};
    use kube::Client;
    use kube::client::Body;
    use tower_test::mock;

    fn elector() -> (Elector, mock::Handle<Request<Body>, Response<Body>>) {
        let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let api = Api::namespaced(Client::new(svc, "default"), "ops");
        (
            Elector::new(
                api,
                "flotilla-operator".into(),
                "op-a".into(),
                Duration::from_secs(15),
            ),
            handle,
        )
    }

    #[tokio::test]
    async fn absent_lease_is_created_with_us_as_holder() {
        let (e, mut server) = elector();
        let call = tokio::spawn(async move { e.try_acquire_or_renew().await });
        let (req, send) = server.next_request().await.expect("get");
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().to_string(),
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases/flotilla-operator"
        );
        let nf = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404});
        send.send_response(
            Response::builder()
                .status(404)
                .body(Body::from(nf.to_string().into_bytes()))
                .expect("resp"),
        );
        let (req, send) = server.next_request().await.expect("create");
        assert_eq!(req.method(), Method::POST);
        assert_eq!(
            req.uri().to_string(),
            "/apis/coordination.k8s.io/v1/namespaces/ops/leases?"
        );
        let body = req.into_body().collect_bytes().await.expect("body");
        let lease: Lease = serde_json::from_slice(&body).expect("lease");
        let spec = lease.spec.clone().expect("spec");
        assert_eq!(spec.holder_identity.as_deref(), Some("op-a"));
        assert_eq!(spec.lease_duration_seconds, Some(15));
        assert_eq!(spec.lease_transitions, Some(1));
        send.send_response(
            Response::builder()
                .body(Body::from(body.to_vec()))
                .expect("resp"),
        );
        assert!(call.await.expect("join").expect("elect"));
    }

    #[tokio::test]
    async fn live_lease_of_another_replica_is_left_alone() {
        let (e, mut server) = elector();
        let call = tokio::spawn(async move { e.try_acquire_or_renew().await });
        let (_, send) = server.next_request().await.expect("get");
        let mut held = lease("op-b", Timestamp::now());
        held.metadata.name = Some("flotilla-operator".into());
        send.send_response(
            Response::builder()
                .body(Body::from(serde_json::to_vec(&held).expect("json")))
                .expect("resp"),
        );
        assert!(!call.await.expect("join").expect("elect"), "standby");
    }
}
