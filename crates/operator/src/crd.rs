//! The `RaftCluster` custom resource (group `flotilla.dev`, version `v1alpha1`).
//!
//! The spec is what a user asks for; the status is what the operator last observed. The status
//! is only ever a report: every reconcile decision is re-derived from the StatefulSet, the pods
//! and the nodes' own admin status, never from a value read back out of `.status` — so an
//! operator restart, or a user editing the status, cannot mislead it.
//!
//! Member ids are shown as 16-digit hex strings (as `etcdctl member list` prints them): a random
//! 64-bit id does not survive a trip through a JSON number in most clients.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Desired state of a Flotilla cluster.
// The derive repeats `type_ = "string"` across printer columns, which clippy misreads as a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "flotilla.dev",
    version = "v1alpha1",
    kind = "RaftCluster",
    namespaced,
    status = "RaftClusterStatus",
    shortname = "raft",
    category = "flotilla",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas"),
    printcolumn(
        name = "Updated",
        type_ = "integer",
        json_path = ".status.updatedReplicas"
    ),
    printcolumn(name = "Leader", type_ = "string", json_path = ".status.leader"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RaftClusterSpec {
    /// Number of members, 1 to 9. Odd counts are recommended: an even count tolerates no more
    /// failures than the odd count below it (the operator publishes a warning Event for even
    /// counts).
    #[schemars(range(min = 1, max = 9))]
    pub replicas: i32,
    /// Container image holding the `flotilla` binary.
    #[schemars(length(min = 1))]
    pub image: String,
    /// Image pull policy (`Always`, `IfNotPresent`, `Never`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = ["Always", "IfNotPresent", "Never"]))]
    pub image_pull_policy: Option<String>,
    /// The volume each member keeps its log and data on. Immutable: a StatefulSet's volume
    /// claims cannot change once created.
    #[serde(default)]
    pub storage: StorageSpec,
    /// Compute resources of the `flotilla` container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Raft timing and snapshot settings.
    #[serde(default)]
    pub raft: RaftSettings,
    /// Where the pods may run.
    #[serde(default)]
    pub scheduling: SchedulingSpec,
    /// Seconds a new member may stay a learner, catching up with the leader, before the
    /// operator reports it stuck (`Progressing=False`, reason `CatchUpDeadlineExceeded`, and a
    /// Warning Event) — as a Deployment's `progressDeadlineSeconds`. The operator keeps
    /// waiting and promotes the member once it catches up; it never removes it on a timeout.
    #[serde(default = "default_catch_up_deadline_seconds")]
    #[schemars(range(min = 1))]
    pub catch_up_deadline_seconds: u32,
    /// TLS on the client and peer ports. Immutable once the cluster exists: switching a
    /// running cluster between http and https would need every member's advertised URLs
    /// changed at once.
    #[serde(default)]
    pub tls: TlsSpec,
    /// The NetworkPolicy the operator keeps for the cluster.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,
    /// Scheduled backups (crate::backup).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupSpec>,
    /// How a new cluster starts: empty, or from a backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<BootstrapSpec>,
    /// What the operator may do when a majority of voters is gone for good (crate::recovery).
    #[serde(default)]
    pub recovery: RecoverySpec,
}

/// Scheduled backups: a consistent snapshot from a healthy member (a caught-up follower when
/// there is one), checksummed, uploaded under a name that sorts by time and carries the
/// revision, older ones pruned per retention. `kubectl annotate raftcluster/NAME
/// flotilla.dev/backup-now=<any new value>` takes one at once.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSpec {
    /// Cron schedule, five fields in UTC (`0 */6 * * *`: every six hours).
    #[schemars(length(min = 1))]
    pub schedule: String,
    /// Which backups to keep.
    #[serde(default)]
    pub retention: Retention,
    /// Where backups go.
    pub target: BackupLocation,
}

/// Which backups are kept: a backup is deleted when it is beyond `count` or older than
/// `maxAge`; the newest is never deleted.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep at most this many.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub count: Option<u32>,
    /// Keep none older than this (`7d`, `36h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            count: Some(7),
            max_age: None,
        }
    }
}

/// A place backups are written to or read from: object storage or a volume.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupLocation {
    /// S3-compatible object storage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Location>,
    /// A PersistentVolumeClaim in the cluster's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcLocation>,
}

/// S3-compatible object storage.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Location {
    /// Endpoint URL (`https://s3.eu-west-1.amazonaws.com`, `http://minio.backup:9000`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Bucket.
    #[schemars(length(min = 1))]
    pub bucket: String,
    /// Key prefix (`flotilla/prod/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// Region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`), as MinIO and most self-hosted stores want.
    #[serde(default)]
    pub path_style: bool,
    /// Secret in the cluster's namespace with `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    #[schemars(length(min = 1))]
    pub credentials_secret: String,
}

/// A volume holding backups.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcLocation {
    /// The claim's name.
    #[schemars(length(min = 1))]
    pub claim_name: String,
    /// Directory inside the volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// How a new cluster starts.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BootstrapSpec {
    /// Start from this backup: keys, revisions, leases and the compaction point carried over,
    /// under a new cluster id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_backup: Option<FromBackup>,
}

/// A backup to start from.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FromBackup {
    /// Where it is.
    pub location: BackupLocation,
    /// The RaftCluster that wrote it (backup names start with it).
    #[schemars(length(min = 1))]
    pub cluster: String,
    /// The backup's name, or `latest`.
    #[serde(default = "default_backup_name")]
    pub name: String,
}

fn default_backup_name() -> String {
    "latest".to_owned()
}

/// Quorum-loss recovery. Without `allowDataLoss` the operator only reports.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoverySpec {
    /// When a majority of voters is gone for good, force a one-member cluster from the most
    /// up-to-date survivor and grow back from it. Writes the survivor never had are lost.
    #[serde(default)]
    pub allow_data_loss: bool,
    /// How long a voter's pod may stay unschedulable or without its volume before it counts as
    /// gone for good.
    #[serde(default = "default_gone_after_seconds")]
    #[schemars(range(min = 0))]
    pub gone_after_seconds: u32,
}

impl Default for RecoverySpec {
    fn default() -> Self {
        Self {
            allow_data_loss: false,
            gone_after_seconds: default_gone_after_seconds(),
        }
    }
}

fn default_gone_after_seconds() -> u32 {
    300
}

/// Who issues the cluster's certificates.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum TlsMode {
    /// Plain HTTP/2 on every port.
    #[default]
    Disabled,
    /// The operator keeps a CA for the cluster (Secret `NAME-ca`), issues every member's
    /// certificate and an admin client certificate, and renews them before they expire.
    Operator,
    /// cert-manager issues them: the operator creates one `Certificate` per member and one for
    /// the admin client, with the issuer named in `issuerRef`.
    CertManager,
}

/// TLS settings.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// `Disabled` (the default), `Operator` or `CertManager`.
    #[serde(default)]
    pub mode: TlsMode,
    /// The cert-manager issuer (mode `CertManager`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
    /// Require a certificate from the cluster's CA of every client (etcd's
    /// `--client-cert-auth`); its common name is then the user when auth is enabled.
    #[serde(default)]
    pub client_cert_auth: bool,
    /// Lifetime of the certificates the operator issues, in days (mode `Operator`).
    #[serde(default = "default_certificate_days")]
    #[schemars(range(min = 2))]
    pub certificate_days: u32,
    /// Renew a certificate when fewer than this many days of it remain (mode `Operator`).
    #[serde(default = "default_renew_before_days")]
    #[schemars(range(min = 1))]
    pub renew_before_days: u32,
}

impl Default for TlsSpec {
    fn default() -> Self {
        Self {
            mode: TlsMode::default(),
            issuer_ref: None,
            client_cert_auth: false,
            certificate_days: default_certificate_days(),
            renew_before_days: default_renew_before_days(),
        }
    }
}

fn default_certificate_days() -> u32 {
    90
}
fn default_renew_before_days() -> u32 {
    30
}

/// A cert-manager issuer.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// The issuer's name.
    pub name: String,
    /// `Issuer` (in the cluster's namespace, the default) or `ClusterIssuer`.
    #[serde(default = "default_issuer_kind")]
    pub kind: String,
    /// The issuer's API group.
    #[serde(default = "default_issuer_group")]
    pub group: String,
}

fn default_issuer_kind() -> String {
    "Issuer".to_owned()
}
fn default_issuer_group() -> String {
    "cert-manager.io".to_owned()
}

/// The cluster's NetworkPolicy: peers only from members, the client port from members, the
/// operator and the selected clients, metrics from anywhere.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Keep a NetworkPolicy. Unset: the operator's default (`--network-policy`, on in the
    /// chart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Namespaces whose pods may use the client port (with `clientPodSelector`); unset: only
    /// the cluster's own namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_namespace_selector: Option<LabelSelector>,
    /// Pods that may use the client port, within those namespaces; unset: every pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_pod_selector: Option<LabelSelector>,
}

fn default_catch_up_deadline_seconds() -> u32 {
    600
}

/// The ordinal of member (pod) `member` of cluster `cluster`: `demo-3` → 3; `None` for a name
/// of another cluster or with anything but digits after the dash.
pub fn ordinal_of(cluster: &str, member: &str) -> Option<u32> {
    let rest = member.strip_prefix(cluster)?.strip_prefix('-')?;
    if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The most members a cluster may have (the schema's bound, checked again by the operator).
pub const MAX_REPLICAS: i32 = 9;

impl RaftClusterSpec {
    /// Why the operator cannot carry this spec out, one sentence per problem; empty when it
    /// can. The schema rejects most of these already; this catches what a schema cannot say
    /// (and what an API server without CEL or an older CRD lets through), so a bad spec becomes
    /// a condition rather than a failed apply or a crash-looping pod.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            out.push(format!(
                "spec.replicas is {}; it must be between 1 and {MAX_REPLICAS}",
                self.replicas
            ));
        }
        if self.image.trim().is_empty() {
            out.push("spec.image is empty".to_owned());
        }
        if let Some(p) = &self.image_pull_policy
            && !["Always", "IfNotPresent", "Never"].contains(&p.as_str())
        {
            out.push(format!(
                "spec.imagePullPolicy is {p:?}; it must be Always, IfNotPresent or Never"
            ));
        }
        if !is_quantity(&self.storage.size) {
            out.push(format!(
                "spec.storage.size {:?} is not a Kubernetes quantity such as 1Gi",
                self.storage.size
            ));
        }
        let r = &self.raft;
        if r.tick_ms == 0 {
            out.push("spec.raft.tickMs must be at least 1".to_owned());
        }
        if r.heartbeat_ticks == 0 {
            out.push("spec.raft.heartbeatTicks must be at least 1".to_owned());
        }
        if r.heartbeat_ticks >= r.election_ticks {
            out.push(format!(
                "spec.raft.heartbeatTicks ({}) must be smaller than spec.raft.electionTicks ({})",
                r.heartbeat_ticks, r.election_ticks
            ));
        }
        if r.snapshot_threshold == 0 {
            out.push("spec.raft.snapshotThreshold must be at least 1".to_owned());
        }
        let t = &self.tls;
        if t.mode == TlsMode::CertManager && t.issuer_ref.as_ref().is_none_or(|i| i.name.is_empty())
        {
            out.push(
                "spec.tls.mode is CertManager but spec.tls.issuerRef.name is not set".to_owned(),
            );
        }
        if t.mode == TlsMode::Operator && t.renew_before_days >= t.certificate_days {
            out.push(format!(
                "spec.tls.renewBeforeDays ({}) must be smaller than spec.tls.certificateDays ({})",
                t.renew_before_days, t.certificate_days
            ));
        }
        if let Some(b) = &self.backup {
            if let Err(e) = b.schedule.parse::<croner::Cron>() {
                out.push(format!(
                    "spec.backup.schedule {:?} is not a cron schedule: {e}",
                    b.schedule
                ));
            }
            out.extend(location_problems("spec.backup.target", &b.target));
            if let Some(age) = &b.retention.max_age
                && crate::backup::parse_age(age).is_none()
            {
                out.push(format!(
                    "spec.backup.retention.maxAge {age:?} is not a duration such as 7d or 36h"
                ));
            }
        }
        if let Some(f) = self.bootstrap.as_ref().and_then(|b| b.from_backup.as_ref()) {
            out.extend(location_problems(
                "spec.bootstrap.fromBackup.location",
                &f.location,
            ));
        }
        if t.mode == TlsMode::Disabled && t.client_cert_auth {
            out.push(
                "spec.tls.clientCertAuth needs spec.tls.mode Operator or CertManager".to_owned(),
            );
        }
        out
    }
}

fn location_problems(field: &str, l: &BackupLocation) -> Option<String> {
    match (&l.s3, &l.pvc) {
        (Some(_), None) | (None, Some(_)) => None,
        _ => Some(format!("{field} must name exactly one of s3 and pvc")),
    }
}

/// A storage quantity as the schema's pattern accepts it: digits, an optional fraction, an
/// optional binary or decimal suffix.
fn is_quantity(s: &str) -> bool {
    const SUFFIXES: [&str; 12] = [
        "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", "k", "M", "G", "T", "P", "E",
    ];
    let number = SUFFIXES.iter().find_map(|x| s.strip_suffix(x)).unwrap_or(s);
    let (int, frac) = number.split_once('.').unwrap_or((number, "0"));
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    digits(int) && digits(frac)
}

/// Persistent storage of each member.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Size of each member's volume (a Kubernetes quantity such as `1Gi`).
    #[serde(default = "default_storage_size")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$"))]
    pub size: String,
    /// StorageClass of the volumes; the cluster default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    /// What happens to a removed member's volume when the cluster shrinks.
    #[serde(default)]
    pub retention_on_scale_down: RetentionPolicy,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class_name: None,
            retention_on_scale_down: RetentionPolicy::default(),
        }
    }
}

fn default_storage_size() -> String {
    "1Gi".to_owned()
}

/// Whether a removed member's PersistentVolumeClaim is kept.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum RetentionPolicy {
    /// Delete the claim once the member has left the Raft configuration. A later scale-up then
    /// starts that ordinal from an empty volume, as a new member — the safe default.
    #[default]
    Delete,
    /// Keep the claim (for forensics). The cluster then cannot grow onto that ordinal: the
    /// operator refuses with `Reconciled=False StaleVolumeRetained` until the claim is deleted.
    Retain,
}

/// Raft timing. Ticks are the unit of the election and heartbeat timeouts.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftSettings {
    /// Length of one tick in milliseconds.
    #[serde(default = "default_tick_ms")]
    #[schemars(range(min = 1))]
    pub tick_ms: u32,
    /// Election timeout in ticks (randomised between this and twice this).
    #[serde(default = "default_election_ticks")]
    #[schemars(range(min = 2))]
    pub election_ticks: u32,
    /// Heartbeat interval in ticks; must be smaller than the election timeout.
    #[serde(default = "default_heartbeat_ticks")]
    #[schemars(range(min = 1))]
    pub heartbeat_ticks: u32,
    /// Number of applied entries after which a member snapshots its state and compacts its log.
    #[serde(default = "default_snapshot_threshold")]
    #[schemars(range(min = 1))]
    pub snapshot_threshold: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            tick_ms: default_tick_ms(),
            election_ticks: default_election_ticks(),
            heartbeat_ticks: default_heartbeat_ticks(),
            snapshot_threshold: default_snapshot_threshold(),
        }
    }
}

fn default_tick_ms() -> u32 {
    100
}
fn default_election_ticks() -> u32 {
    10
}
fn default_heartbeat_ticks() -> u32 {
    1
}
fn default_snapshot_threshold() -> u64 {
    10_000
}

/// Pod placement, copied verbatim into the StatefulSet's pod template.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulingSpec {
    /// Node labels a pod's node must carry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// Node and pod (anti-)affinity, verbatim. When unset, `antiAffinity` applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How members avoid sharing a node when `affinity` is unset: `Soft` (the default:
    /// preferred, so a small cluster still schedules), `Hard` (required), or `None`.
    #[serde(default)]
    pub anti_affinity: AntiAffinity,
    /// How the pods spread over zones and nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

/// Spreading members over nodes.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum AntiAffinity {
    /// Prefer one member per node.
    #[default]
    Soft,
    /// Require one member per node (pods stay Pending when nodes run out).
    Hard,
    /// No anti-affinity.
    None,
}

/// What the operator last observed.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaftClusterStatus {
    /// Pods the StatefulSet currently runs (the scale subresource reads this).
    #[serde(default)]
    pub replicas: i32,
    /// Pods that are ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Pods that run the current pod template (a rolling update is done when this equals
    /// `replicas`).
    #[serde(default)]
    pub updated_replicas: i32,
    /// Label selector of the pods, as a string (the scale subresource reads this).
    #[serde(default)]
    pub selector: String,
    /// Name of the member that leads, if one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The Raft configuration as the leader reports it.
    #[serde(default)]
    pub members: Vec<MemberStatus>,
    /// Coarse state of the cluster.
    #[serde(default)]
    pub phase: Phase,
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Available, Progressing, Degraded, QuorumAtRisk, Reconciled and (with TLS)
    /// CertificatesReady.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The certificates, when TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
    /// Backups, when scheduled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup: Option<BackupStatus>,
    /// The last quorum-loss recovery (`spec.recovery.allowDataLoss`): which member the cluster
    /// was rebuilt from, from which index, and what may have been lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_recovery: Option<RecoveryRecord>,
}

/// A quorum-loss recovery, as the operator started it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecoveryRecord {
    /// The survivor forced alone (pod name).
    pub member: String,
    /// Its member id, 16 hex digits.
    pub member_id: String,
    /// Its last log index and term: everything up to there is kept.
    pub last_index: u64,
    /// See `lastIndex`.
    pub last_term: u64,
    /// Its applied index when it was chosen.
    pub applied_index: u64,
    /// The voters that were gone for good.
    pub lost_members: Vec<String>,
    /// What may be lost: writes that only the lost members had.
    pub data_loss: String,
    /// When the operator started it (RFC 3339).
    pub started_at: String,
}

/// The backups the operator's Jobs took.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupStatus {
    /// The last successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful: Option<BackupRecord>,
    /// When the last backup Job was started (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_started: Option<String>,
    /// When the next scheduled one starts (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_scheduled: Option<String>,
}

/// One backup, as its Job reported it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    /// Object name.
    pub name: String,
    /// Where it is (`s3://bucket/prefix/name`, `file:///backup/name`).
    pub location: String,
    /// The store's revision it holds.
    pub revision: i64,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the file.
    #[serde(default)]
    pub sha256: String,
    /// When it finished (RFC 3339).
    pub finished_at: String,
}

/// The certificates the members and the operator use.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    /// The Secret the pods mount (`ca.crt`, `<pod>.crt`, `<pod>.key`).
    pub secret: String,
    /// The admin client certificate's Secret (`ca.crt`, `tls.crt`, `tls.key`): the operator's
    /// identity, and root's when auth is enabled — guard it like a password.
    pub client_secret: String,
    /// When the first of the member and client certificates expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates_expire_at: Option<String>,
    /// When the CA expires (RFC 3339), mode `Operator`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_expires_at: Option<String>,
}

/// One member of the Raft configuration.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// Member name (the pod name).
    pub name: String,
    /// Member id, 16 hex digits.
    pub id: String,
    /// Voter or learner.
    pub role: MemberRole,
    /// Whether the leader heard from it recently.
    pub healthy: bool,
    /// Highest log index known to be replicated on it.
    pub match_index: u64,
    /// Entries it lags behind the leader's commit index.
    pub lag: u64,
    /// Highest index it applied, when it answered the operator itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_index: Option<u64>,
}

/// A member's role in the configuration.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum MemberRole {
    /// Votes and counts towards quorum.
    Voter,
    /// Receives the log, does not vote.
    Learner,
}

/// Coarse cluster state for `kubectl get`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Objects created, first member not up yet.
    #[default]
    Pending,
    /// A member is being added or removed.
    Scaling,
    /// Members are being restarted, one at a time, onto a new pod template.
    Updating,
    /// Every desired member is a healthy voter and a leader exists.
    Running,
    /// No leader, or some member is unhealthy.
    Degraded,
}

/// A status condition in the usual Kubernetes shape.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// `Available`, `Progressing`, `Degraded` or `QuorumAtRisk`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// One CamelCase word saying why.
    pub reason: String,
    /// A sentence for humans.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    /// The generation this condition was computed for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The CRD as the API server gets it: the derived one, with every `default` removed from the
/// status schema. Serde defaults there only help the operator read an old status; as schema
/// defaults they make API servers (1.20 among them) reject or rewrite the status the operator
/// writes.
pub fn crd() -> CustomResourceDefinition {
    use kube::CustomResourceExt;
    let mut crd = RaftCluster::crd();
    for v in &mut crd.spec.versions {
        let status = v
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("status"));
        if let Some(status) = status {
            strip_defaults(status);
        }
    }
    crd
}

fn strip_defaults(s: &mut JSONSchemaProps) {
    s.default = None;
    for p in s.properties.iter_mut().flat_map(|p| p.values_mut()) {
        strip_defaults(p);
    }
    match s.items.as_mut() {
        Some(JSONSchemaPropsOrArray::Schema(item)) => strip_defaults(item),
        Some(JSONSchemaPropsOrArray::Schemas(items)) => items.iter_mut().for_each(strip_defaults),
        None => {}
    }
    for sub in [&mut s.all_of, &mut s.any_of, &mut s.one_of]
        .into_iter()
        .flatten()
        .flatten()
    {
        strip_defaults(sub);
    }
}

/// The CRD as YAML, exactly what `crdgen` prints and what deploy/ and the chart carry.
pub fn crd_yaml() -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(&crd())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crd_has_scale_and_status_subresources() {
        let crd = crd();
        assert_eq!(crd.spec.group, "flotilla.dev");
        assert_eq!(crd.spec.scope, "Namespaced");
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        let sub = v.subresources.as_ref().expect("subresources");
        assert!(sub.status.is_some());
        let scale = sub.scale.as_ref().expect("scale");
        assert_eq!(scale.spec_replicas_path, ".spec.replicas");
        assert_eq!(scale.status_replicas_path, ".status.replicas");
        assert_eq!(
            scale.label_selector_path.as_deref(),
            Some(".status.selector")
        );
        let cols: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .expect("columns")
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(
            cols,
            ["Replicas", "Ready", "Updated", "Leader", "Phase", "Age"]
        );
    }

    #[test]
    fn crd_schema_rejects_zero_replicas() {
        let crd = serde_json::to_value(crd()).expect("json");
        let replicas = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["properties"]["replicas"];
        assert_eq!(replicas["minimum"].as_f64(), Some(1.0), "{replicas}");
        let required = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
            ["required"];
        assert!(
            required
                .as_array()
                .expect("required")
                .contains(&"replicas".into())
        );
    }

    #[test]
    fn minimal_spec_gets_defaults() {
        let spec: RaftClusterSpec =
            serde_json::from_value(serde_json::json!({"replicas": 3, "image": "flotilla:dev"}))
                .expect("parse");
        assert_eq!(spec.storage.size, "1Gi");
        assert_eq!(
            spec.storage.retention_on_scale_down,
            RetentionPolicy::Delete
        );
        assert_eq!(spec.raft.election_ticks, 10);
    }

    #[test]
    fn problems_name_each_bad_field() {
        let spec =
            |v: serde_json::Value| -> RaftClusterSpec { serde_json::from_value(v).expect("parse") };
        let ok = spec(serde_json::json!({"replicas": 3, "image": "flotilla:dev"}));
        assert!(ok.problems().is_empty(), "{:?}", ok.problems());
        let bad = spec(serde_json::json!({
            "replicas": 12, "image": " ", "imagePullPolicy": "Sometimes",
            "storage": {"size": "lots"},
            "raft": {"heartbeatTicks": 10, "electionTicks": 10, "tickMs": 0, "snapshotThreshold": 0},
        }));
        let p = bad.problems();
        assert_eq!(p.len(), 7, "{p:?}");
        assert!(p.iter().any(|m| m.contains(
            "spec.raft.heartbeatTicks (10) must be smaller than spec.raft.electionTicks (10)"
        )));
        assert!(p.iter().any(|m| m.contains("spec.replicas is 12")));
        assert!(p.iter().any(|m| m.contains("\"lots\"")));
        for q in ["1Gi", "512Mi", "1.5Gi", "100", "2G"] {
            assert!(is_quantity(q), "{q}");
        }
        for q in ["", "Gi", "1.Gi", "-1Gi", "1 Gi", "1GiB"] {
            assert!(!is_quantity(q), "{q}");
        }
    }

    #[test]
    fn status_schema_has_no_defaults() {
        let crd = serde_json::to_value(crd()).expect("json");
        let status =
            &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"];
        assert!(status.is_object());
        assert!(
            !status.to_string().contains("\"default\""),
            "API servers reject defaults in the status schema: {status}"
        );
        assert_eq!(
            crd["spec"]["names"]["shortNames"],
            serde_json::json!(["raft"]),
            "`rc` is ReplicationController's"
        );
    }

    #[test]
    fn no_empty_string_defaults() {
        // Kubernetes 1.20 rejects the CRD with `default: ""` ("must be of type string: null").
        let crd = serde_json::to_string(&crd()).expect("json");
        assert!(
            !crd.contains("\"default\":\"\""),
            "an empty-string default in the CRD"
        );
    }

    #[test]
    fn checked_in_crds_match_crdgen() {
        let want = crd_yaml().expect("yaml");
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        for path in [
            "deploy/crds/raftcluster.yaml",
            "charts/flotilla-operator/crds/raftcluster.yaml",
        ] {
            let got = std::fs::read_to_string(format!("{root}/{path}"))
                .unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(
                got == want,
                "{path} drifted from crdgen: run `cargo run -p flotilla-operator --bin crdgen > {path}`"
            );
        }
    }
}
