#!/usr/bin/env python3
"""A real Prometheus for the end-to-end suite, configured from the Helm chart's own objects.

    prometheus.py config RENDERED_CHART OUT_DIR INTERVAL
        Reads the chart as `helm template` rendered it (serviceMonitor.enabled and
        prometheusRule.enabled set) and writes OUT_DIR/prometheus.yml and OUT_DIR/rules.yaml:
        * every PodMonitor and ServiceMonitor becomes a scrape config the way the Prometheus
          Operator generates one — keep-relabelings for the selector's labels and the named
          port, the namespace/pod/service/container/endpoint labels, the monitor's default job
          name — followed by the monitor's own relabelings, honorLabels and interval; so the
          chart's selectors, port names and job relabelings are what is tested, against the
          pods and Services that really run;
        * every PrometheusRule's groups become the rule file, unchanged (the real `for:`
          durations: an alert that fires here fires in production).
    prometheus.py discover OUT_DIR
        Writes OUT_DIR/pods.json and OUT_DIR/endpoints.json: file_sd target groups carrying the
        same `__meta_kubernetes_*` labels Prometheus' Kubernetes service discovery (roles `pod`
        and `endpoints`) attaches, from `kubectl get pods,endpoints,services -A -o json`.
        Debian's Prometheus is built without Kubernetes SD, so the suite discovers for it; the
        relabelings above then run unchanged. Run it again to follow pods (atomic rename:
        Prometheus never reads half a file).
    prometheus.py query URL EXPR
        Prints the instant vector of EXPR as JSON lines ({"metric": …, "value": …}); exit 1
        when the query fails.
    prometheus.py alerts URL
        Prints one line per alert: STATE NAME label=value …

Prometheus runs outside the cluster and scrapes pod IPs directly: the suite runs this scenario
where pod IPs are routable from the machine running it (local-k8s; not kind).
Needs python3 with PyYAML (Debian: python3-yaml), kubectl, and Prometheus (Debian: prometheus).
"""

import json
import os
import re
import subprocess
import sys
import urllib.parse
import urllib.request

try:
    import yaml
except ImportError:  # pragma: no cover - reported to the caller
    sys.exit("prometheus.py needs PyYAML (Debian: apt-get install python3-yaml)")


def sanitize(label: str) -> str:
    """A Kubernetes label name as a service-discovery meta label suffix."""
    return re.sub(r"[^a-zA-Z0-9_]", "_", label)


def snake(key: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), key)


def relabelings(items: list) -> list:
    """A monitor's relabelings (camelCase) as Prometheus relabel_configs (snake_case)."""
    out = []
    for r in items or []:
        out.append({snake(k): v for k, v in r.items()})
    return out


def selector_keeps(match_labels: dict, kind: str) -> list:
    keeps = []
    for key, value in sorted((match_labels or {}).items()):
        s = sanitize(key)
        keeps.append({
            "action": "keep",
            "source_labels": [f"__meta_kubernetes_{kind}_label_{s}",
                              f"__meta_kubernetes_{kind}_labelpresent_{s}"],
            "regex": f"({re.escape(str(value))});true",
        })
    return keeps


def namespace_keep(monitor: dict) -> list:
    """The monitor's namespaceSelector (Kubernetes SD's `namespaces`) as a keep-relabeling."""
    sel = monitor["spec"].get("namespaceSelector") or {}
    if sel.get("any"):
        return []
    names = sel.get("matchNames") or [monitor["metadata"]["namespace"]]
    return [{"action": "keep", "source_labels": ["__meta_kubernetes_namespace"],
             "regex": "|".join(re.escape(n) for n in names)}]


def pod_monitor(m: dict, out: str, default_interval: str) -> list:
    ns, name = m["metadata"]["namespace"], m["metadata"]["name"]
    jobs = []
    for i, ep in enumerate(m["spec"]["podMetricsEndpoints"]):
        relabel = namespace_keep(m)
        relabel += selector_keeps(m["spec"]["selector"].get("matchLabels"), "pod")
        relabel += [
            {"action": "keep", "source_labels": ["__meta_kubernetes_pod_container_port_name"],
             "regex": ep["port"]},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"target_label": "job", "replacement": f"{ns}/{name}"},
            {"target_label": "endpoint", "replacement": ep["port"]},
        ]
        relabel += relabelings(ep.get("relabelings"))
        jobs.append({
            "job_name": f"podMonitor/{ns}/{name}/{i}",
            "honor_labels": bool(ep.get("honorLabels", False)),
            "scrape_interval": ep.get("interval", default_interval),
            "metrics_path": ep.get("path", "/metrics"),
            "file_sd_configs": [{"files": [os.path.join(out, "pods.json")], "refresh_interval": "5s"}],
            "relabel_configs": relabel,
        })
    return jobs


def service_monitor(m: dict, out: str, default_interval: str) -> list:
    ns, name = m["metadata"]["namespace"], m["metadata"]["name"]
    jobs = []
    for i, ep in enumerate(m["spec"]["endpoints"]):
        relabel = namespace_keep(m)
        relabel += selector_keeps(m["spec"]["selector"].get("matchLabels"), "service")
        relabel += [
            {"action": "keep", "source_labels": ["__meta_kubernetes_endpoint_port_name"],
             "regex": ep["port"]},
            {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"},
            {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
            {"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"},
            {"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"},
            {"target_label": "endpoint", "replacement": ep["port"]},
        ]
        relabel += relabelings(ep.get("relabelings"))
        jobs.append({
            "job_name": f"serviceMonitor/{ns}/{name}/{i}",
            "honor_labels": bool(ep.get("honorLabels", False)),
            "scrape_interval": ep.get("interval", default_interval),
            "metrics_path": ep.get("path", "/metrics"),
            "file_sd_configs": [{"files": [os.path.join(out, "endpoints.json")],
                                 "refresh_interval": "5s"}],
            "relabel_configs": relabel,
        })
    return jobs


def config(rendered: str, out: str, interval: str) -> None:
    docs = [d for d in yaml.safe_load_all(open(rendered)) if isinstance(d, dict)]
    scrape, groups = [], []
    for d in docs:
        kind = d.get("kind")
        if kind == "PodMonitor":
            scrape += pod_monitor(d, out, interval)
        elif kind == "ServiceMonitor":
            scrape += service_monitor(d, out, interval)
        elif kind == "PrometheusRule":
            groups += d["spec"]["groups"]
    if not scrape:
        sys.exit("the rendered chart has no PodMonitor or ServiceMonitor (serviceMonitor.enabled?)")
    if not groups:
        sys.exit("the rendered chart has no PrometheusRule (prometheusRule.enabled?)")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "rules.yaml"), "w") as f:
        yaml.safe_dump({"groups": groups}, f, sort_keys=False)
    with open(os.path.join(out, "prometheus.yml"), "w") as f:
        yaml.safe_dump({
            "global": {"scrape_interval": interval, "evaluation_interval": interval},
            "rule_files": [os.path.join(out, "rules.yaml")],
            "scrape_configs": scrape,
        }, f, sort_keys=False)
    print(f"{len(scrape)} scrape configs ({', '.join(j['job_name'] for j in scrape)}), "
          f"{sum(len(g['rules']) for g in groups)} rules")


def kubectl_items(kind: str) -> list:
    out = subprocess.run(["kubectl", "get", kind, "--all-namespaces", "-o", "json"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)["items"]


def object_labels(prefix: str, labels: dict) -> dict:
    meta = {}
    for k, v in (labels or {}).items():
        meta[f"{prefix}_label_{sanitize(k)}"] = v
        meta[f"{prefix}_labelpresent_{sanitize(k)}"] = "true"
    return meta


def pod_meta(pod: dict) -> dict:
    md, status = pod["metadata"], pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or [])
    return {
        "__meta_kubernetes_namespace": md["namespace"],
        "__meta_kubernetes_pod_name": md["name"],
        "__meta_kubernetes_pod_ip": status.get("podIP", ""),
        "__meta_kubernetes_pod_ready": "true" if ready else "false",
        "__meta_kubernetes_pod_phase": status.get("phase", ""),
        "__meta_kubernetes_pod_node_name": pod["spec"].get("nodeName", ""),
        "__meta_kubernetes_pod_uid": md.get("uid", ""),
        **object_labels("__meta_kubernetes_pod", md.get("labels")),
    }


def pod_targets(pods: list) -> list:
    """Kubernetes SD role `pod`: one target per declared container port of a pod with an IP
    (one without a port for a container that declares none)."""
    groups = []
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        base = pod_meta(pod)
        for c in pod["spec"]["containers"]:
            ports = c.get("ports") or [None]
            for port in ports:
                labels = {**base, "__meta_kubernetes_pod_container_name": c["name"],
                          "__meta_kubernetes_pod_container_image": c.get("image", "")}
                address = ip
                if port:
                    address = f"{ip}:{port['containerPort']}"
                    labels["__meta_kubernetes_pod_container_port_name"] = port.get("name", "")
                    labels["__meta_kubernetes_pod_container_port_number"] = str(port["containerPort"])
                    labels["__meta_kubernetes_pod_container_port_protocol"] = port.get("protocol", "TCP")
                groups.append({"targets": [address], "labels": labels})
    return groups


def endpoint_targets(endpoints: list, services: list, pods: list) -> list:
    """Kubernetes SD role `endpoints`: one target per address and port of every Endpoints
    object, with its Service's labels and, where the address is a pod, the pod's labels and
    the container that declares the port."""
    svc = {(s["metadata"]["namespace"], s["metadata"]["name"]): s for s in services}
    by_pod = {(p["metadata"]["namespace"], p["metadata"]["name"]): p for p in pods}
    groups = []
    for ep in endpoints:
        ns, name = ep["metadata"]["namespace"], ep["metadata"]["name"]
        s = svc.get((ns, name))
        base = {"__meta_kubernetes_namespace": ns,
                "__meta_kubernetes_endpoints_name": name,
                "__meta_kubernetes_service_name": name,
                **object_labels("__meta_kubernetes_service", (s or {}).get("metadata", {}).get("labels"))}
        for subset in ep.get("subsets") or []:
            for ready, key in (("true", "addresses"), ("false", "notReadyAddresses")):
                for addr in subset.get(key) or []:
                    ref = addr.get("targetRef") or {}
                    pod = by_pod.get((ns, ref.get("name"))) if ref.get("kind") == "Pod" else None
                    for port in subset.get("ports") or []:
                        labels = {**base,
                                  "__meta_kubernetes_endpoint_ready": ready,
                                  "__meta_kubernetes_endpoint_port_name": port.get("name", ""),
                                  "__meta_kubernetes_endpoint_port_protocol": port.get("protocol", "TCP")}
                        if pod:
                            labels.update(pod_meta(pod))
                            for c in pod["spec"]["containers"]:
                                if any(cp.get("containerPort") == port["port"] for cp in c.get("ports") or []):
                                    labels["__meta_kubernetes_pod_container_name"] = c["name"]
                        groups.append({"targets": [f"{addr['ip']}:{port['port']}"], "labels": labels})
    return groups


def write_atomically(path: str, data: object) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def discover(out: str) -> None:
    pods = kubectl_items("pods")
    write_atomically(os.path.join(out, "pods.json"), pod_targets(pods))
    write_atomically(os.path.join(out, "endpoints.json"),
                     endpoint_targets(kubectl_items("endpoints"), kubectl_items("services"), pods))


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def query(base: str, expr: str) -> None:
    data = get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    result = data["result"]
    if data["resultType"] == "scalar":
        result = [{"metric": {}, "value": result}]
    for r in result:
        print(json.dumps({"metric": r["metric"], "value": r["value"][1]}, sort_keys=True))


def alerts(base: str) -> None:
    for a in get(f"{base}/api/v1/alerts")["alerts"]:
        labels = " ".join(f"{k}={v}" for k, v in sorted(a["labels"].items()) if k != "alertname")
        print(f"{a['state']} {a['labels']['alertname']} {labels}")


def main(argv: list) -> None:
    if len(argv) == 5 and argv[1] == "config":
        config(*argv[2:])
    elif len(argv) == 3 and argv[1] == "discover":
        discover(argv[2])
    elif len(argv) == 4 and argv[1] == "query":
        try:
            query(argv[2], argv[3])
        except Exception as e:  # noqa: BLE001 - the message is the answer
            sys.exit(f"query failed: {e}")
    elif len(argv) == 3 and argv[1] == "alerts":
        alerts(argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
