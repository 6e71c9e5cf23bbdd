#!/usr/bin/env python3
"""Offline checks of the Kubernetes manifests under k8s/ (run by deploy/k8s-check.sh).

1. Every YAML file under k8s/ parses; every file a kustomization.yaml lists exists; every YAML
   file is listed by some kustomization (no orphans).
2. `kubectl kustomize` renders the base, each overlay, and prod with the Indexed-Job component.
3. Each rendered built-in object validates against the Kubernetes API schema (the pydantic
   models of the `kubernetes` Python client: unknown fields, wrong types, missing required
   fields are errors); the Prometheus Operator objects against a hand-written subset.
4. What the deployment needs (docs/architecture.md#deployment): probes, resources, non-root, read-only root FS,
   no capabilities, CronJob limits, stream-sync's StatefulSet (replicas = shards), Indexed-Job consistency, and
   cross-references (Service/PDB/monitor selectors match pods, named ports exist, service
   accounts and ConfigMaps exist, only the documented Secrets are used, pinned images).
5. Every sync.toml (files and the rendered ConfigMaps) parses and uses only keys of
   crates/domain/src/config.rs, with the right types; its metrics.listen port and
   mysql.url_env agree with the workloads.
   The CronJob's activeDeadlineSeconds leaves room after partition_sync.max_run_secs.
6. The PrometheusRule's spec equals deploy/prometheus/alerts.yml; `promtool check rules` on it.

Exit code 0 when everything holds, 1 with one line per problem otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
CONFIG_RS = ROOT / "crates/domain/src/config.rs"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
KUBECTL = os.environ.get("KUBECTL", "kubectl")
PROMTOOL = os.environ.get("PROMTOOL", "promtool")

# Secrets the manifests may reference: created by hand per namespace (README "Deployment").
KNOWN_SECRETS = {"recipe-api-db", "recipe-api-tokens", "sync-mysql"}
SYNC_ARGS = ["--config", "/etc/sync/sync.toml", "run"]
INDEXED_COMPONENT = K8S / "components/partition-sync-indexed"

problems: list[str] = []


def problem(where: str, what: str) -> None:
    problems.append(f"{where}: {what}")


# ------------------------------------------------------------------------------------------
# 1. files and kustomizations


def yaml_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*") if p.suffix in (".yaml", ".yml"))


def check_files() -> None:
    listed: set[Path] = set()
    for path in yaml_files():
        rel = path.relative_to(ROOT)
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except yaml.YAMLError as e:
            problem(str(rel), f"does not parse: {e}")
            continue
        if path.name != "kustomization.yaml":
            for d in docs:
                if not isinstance(d, dict):
                    problem(str(rel), "a document is not a mapping")
                    continue
                for key in ("apiVersion", "kind"):
                    if not d.get(key):
                        problem(str(rel), f"a document has no {key}")
                if not (d.get("metadata") or {}).get("name"):
                    problem(str(rel), f"a {d.get('kind')} has no metadata.name")
            continue
        listed.add(path)
        k = docs[0] if docs else {}
        refs: list[str] = []
        refs += k.get("resources", []) + k.get("components", [])
        refs += [p for p in k.get("patchesStrategicMerge", []) if isinstance(p, str)]
        refs += [p["path"] for p in k.get("patches", []) if isinstance(p, dict) and "path" in p]
        for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
            refs += [f.split("=", 1)[-1] for f in gen.get("files", [])]
        for ref in refs:
            target = (path.parent / ref).resolve()
            if not target.exists():
                problem(str(rel), f"lists {ref}, which does not exist")
            elif target.is_dir():
                if not (target / "kustomization.yaml").exists():
                    problem(str(rel), f"lists directory {ref}, which has no kustomization.yaml")
            else:
                listed.add(target)
    for path in yaml_files():
        if path.resolve() not in listed:
            problem(str(path.relative_to(ROOT)), "is not listed by any kustomization.yaml")


# ------------------------------------------------------------------------------------------
# 2. rendering


def kustomize(directory: Path) -> list[dict] | None:
    try:
        out = subprocess.run(
            [KUBECTL, "kustomize", str(directory)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    except subprocess.CalledProcessError as e:
        problem(str(directory.relative_to(ROOT)) if directory.is_relative_to(ROOT) else str(directory),
                f"kubectl kustomize failed: {e.stderr.strip()}")
        return None
    return [d for d in yaml.safe_load_all(out) if d]


def render_all() -> dict[str, list[dict]]:
    rendered: dict[str, list[dict]] = {}
    for d in [K8S / "base"] + sorted((K8S / "overlays").iterdir()):
        if (d / "kustomization.yaml").exists():
            objs = kustomize(d)
            if objs is not None:
                rendered[str(d.relative_to(K8S))] = objs
    # prod with the Indexed-Job component, from a throwaway kustomization.
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "kustomization.yaml").write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "kustomize.config.k8s.io/v1beta1",
                    "kind": "Kustomization",
                    "resources": [os.path.relpath(K8S / "overlays/prod", tmp)],
                    "components": [os.path.relpath(INDEXED_COMPONENT, tmp)],
                }
            )
        )
        objs = kustomize(Path(tmp))
        if objs is not None:
            rendered["overlays/prod+partition-sync-indexed"] = objs
    return rendered


# ------------------------------------------------------------------------------------------
# 3. schemas


def check_schema(where: str, obj: dict) -> None:
    import kubernetes.client.models as models  # pydantic models, extra="forbid"
    import pydantic

    version = obj["apiVersion"].split("/")[-1]
    cls = getattr(models, version[0].upper() + version[1:] + obj["kind"], None)
    if cls is not None and obj["apiVersion"].split("/")[0] != "monitoring.coreos.com":
        try:
            cls.model_validate(obj)
        except pydantic.ValidationError as e:
            for err in e.errors():
                loc = ".".join(str(x) for x in err["loc"])
                problem(where, f"schema: {loc}: {err['msg']} (value {err.get('input')!r})")
        return
    check_monitoring_schema(where, obj)


MONITOR_ENDPOINT_KEYS = {
    "port", "portNumber", "targetPort", "path", "scheme", "params", "interval", "scrapeTimeout",
    "honorLabels", "honorTimestamps", "relabelings", "metricRelabelings", "tlsConfig",
    "bearerTokenSecret", "authorization", "basicAuth", "oauth2", "followRedirects",
    "enableHttp2", "filterRunning", "proxyUrl", "trackTimestampsStaleness",
}
MONITOR_SPEC_KEYS = {
    "ServiceMonitor": {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels",
                       "podTargetLabels", "sampleLimit", "targetLimit", "labelLimit",
                       "attachMetadata", "scrapeProtocols"},
    "PodMonitor": {"selector", "podMetricsEndpoints", "namespaceSelector", "jobLabel",
                   "podTargetLabels", "sampleLimit", "targetLimit", "labelLimit",
                   "attachMetadata", "scrapeProtocols"},
    "PrometheusRule": {"groups"},
}


def check_monitoring_schema(where: str, obj: dict) -> None:
    kind = obj["kind"]
    if obj["apiVersion"] != "monitoring.coreos.com/v1" or kind not in MONITOR_SPEC_KEYS:
        problem(where, f"no schema known for {obj['apiVersion']} {kind}")
        return
    spec = obj.get("spec") or {}
    for key in set(spec) - MONITOR_SPEC_KEYS[kind]:
        problem(where, f"unknown field spec.{key}")
    if kind == "PrometheusRule":
        return
    if "matchLabels" not in (spec.get("selector") or {}):
        problem(where, "spec.selector.matchLabels is required here")
    endpoints = spec.get("endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints")
    if not endpoints:
        problem(where, "no endpoints")
    for ep in endpoints or []:
        for key in set(ep) - MONITOR_ENDPOINT_KEYS:
            problem(where, f"unknown endpoint field {key}")
        if not ep.get("port"):
            problem(where, "an endpoint has no port name")


# ------------------------------------------------------------------------------------------
# 4. deployment requirements


def pod_spec(obj: dict) -> dict | None:
    kind = obj["kind"]
    if kind in ("Deployment", "StatefulSet", "Job"):
        return obj["spec"]["template"]["spec"]
    if kind == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def pod_labels(obj: dict) -> dict:
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return obj["spec"]["template"]["metadata"].get("labels", {})


def matches(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_container_security(where: str, pod: dict, c: dict) -> None:
    psc = pod.get("securityContext") or {}
    sc = c.get("securityContext") or {}
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        problem(where, "runAsNonRoot is not set")
    uid = sc.get("runAsUser", psc.get("runAsUser"))
    if uid in (None, 0):
        problem(where, "runAsUser must be a non-zero uid (the image's user is 65532)")
    if sc.get("readOnlyRootFilesystem") is not True:
        problem(where, "readOnlyRootFilesystem is not true")
    if sc.get("allowPrivilegeEscalation") is not False:
        problem(where, "allowPrivilegeEscalation is not false")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problem(where, "capabilities.drop does not contain ALL")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problem(where, "pod seccompProfile is not RuntimeDefault")
    res = c.get("resources") or {}
    for path in ("requests.cpu", "requests.memory", "limits.memory"):
        a, b = path.split(".")
        if not (res.get(a) or {}).get(b):
            problem(where, f"resources.{path} is not set")
    mounts = {m["mountPath"] for m in c.get("volumeMounts") or []}
    if "/tmp" not in mounts:
        problem(where, "no writable /tmp volume (the root filesystem is read-only)")


def check_probe(where: str, c: dict, kind: str, path: str, port: str) -> None:
    probe = c.get(kind)
    if not probe:
        problem(where, f"no {kind}")
        return
    get = probe.get("httpGet") or {}
    if get.get("path") != path or get.get("port") != port:
        problem(where, f"{kind} must be GET {path} on port {port}, is {get}")


def check_requirements(name: str, objs: list[dict], overlay: bool, rules: bool) -> None:
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    workloads = [o for o in objs if pod_spec(o) is not None]
    configmaps = by_kind.get("ConfigMap", {})
    accounts = by_kind.get("ServiceAccount", {})
    hpas = by_kind.get("HorizontalPodAutoscaler", {})

    for kind, names in {"Deployment": ["recipe-api"], "StatefulSet": ["stream-sync"],
                        "CronJob": ["partition-sync"],
                        "Job": ["recipe-api-migrate"], "Service": ["recipe-api", "stream-sync"],
                        "HorizontalPodAutoscaler": ["recipe-api"],
                        "PodDisruptionBudget": ["recipe-api"], "ServiceMonitor": ["recipe-api"],
                        "PodMonitor": ["stream-sync"], "PrometheusRule": ["recipes-sync"],
                        "ServiceAccount": ["recipe-api", "recipe-api-migrate", "partition-sync",
                                           "stream-sync"]}.items():
        for n in names:
            if n not in by_kind.get(kind, {}):
                problem(name, f"{kind} {n} is missing")

    namespaces = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
    if overlay and (len(namespaces) != 1 or None in namespaces):
        problem(name, f"objects must share one namespace, have {namespaces}")

    for o in workloads:
        where = f"{name} {o['kind']}/{o['metadata']['name']}"
        pod = pod_spec(o)
        sa = pod.get("serviceAccountName")
        if sa not in accounts:
            problem(where, f"serviceAccountName {sa!r} is not a ServiceAccount here")
        if pod.get("automountServiceAccountToken") is not False:
            problem(where, "automountServiceAccountToken is not false")
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for v in volumes.values():
            if "configMap" in v and v["configMap"]["name"] not in configmaps:
                problem(where, f"volume {v['name']}: ConfigMap {v['configMap']['name']} missing")
            if "secret" in v and v["secret"]["secretName"] not in KNOWN_SECRETS:
                problem(where, f"volume {v['name']}: Secret {v['secret']['secretName']} is not "
                        f"one of the documented {sorted(KNOWN_SECRETS)}")
        for c in pod["containers"]:
            cw = f"{where} container {c['name']}"
            check_container_security(cw, pod, c)
            for m in c.get("volumeMounts") or []:
                if m["name"] not in volumes:
                    problem(cw, f"mounts unknown volume {m['name']}")
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["name"] not in KNOWN_SECRETS:
                    problem(cw, f"env {e['name']}: Secret {ref['name']} is not documented")
            image = c.get("image", "")
            if overlay and not re.fullmatch(r"[a-z0-9.-]+(:\d+)?/[\w./-]+(:[\w.-]+|@sha256:[0-9a-f]{64})", image):
                problem(cw, f"image {image!r} is not registry/name:tag")
            if overlay and image.endswith(":latest"):
                problem(cw, "image tag latest")
            ports = {p["name"] for p in c.get("ports") or [] if "name" in p}
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    problem(cw, f"{probe} uses port {port}, not a named port of the container")

    def container(kind: str, n: str) -> dict | None:
        o = by_kind.get(kind, {}).get(n)
        return pod_spec(o)["containers"][0] if o else None

    env_of = lambda c: {e["name"]: e for e in c.get("env") or []}  # noqa: E731

    # recipe-api
    dep = by_kind.get("Deployment", {}).get("recipe-api")
    c = container("Deployment", "recipe-api")
    if dep and c:
        w = f"{name} Deployment/recipe-api"
        check_probe(w, c, "livenessProbe", "/healthz", "http")
        check_probe(w, c, "readinessProbe", "/readyz", "http")
        env = env_of(c)
        if (env.get("RECIPE_API_BIND") or {}).get("value") != "0.0.0.0:8080":
            problem(w, "RECIPE_API_BIND must be 0.0.0.0:8080")
        if ((env.get("DATABASE_URL") or {}).get("valueFrom") or {}).get("secretKeyRef", {}).get("name") != "recipe-api-db":
            problem(w, "DATABASE_URL must come from Secret recipe-api-db")
        tokens = (env.get("RECIPE_API_TOKENS_FILE") or {}).get("value", "")
        mounted = [m for m in c.get("volumeMounts") or [] if tokens.startswith(m["mountPath"] + "/")]
        vols = {v["name"]: v for v in pod_spec(dep).get("volumes") or []}
        if not mounted or (vols.get(mounted[0]["name"], {}).get("secret") or {}).get("secretName") != "recipe-api-tokens":
            problem(w, "RECIPE_API_TOKENS_FILE must be a file of the mounted Secret recipe-api-tokens")
        if any(p.get("containerPort") == 8080 and p.get("name") == "http" for p in c.get("ports") or []) is False:
            problem(w, "container port 8080 must be named http")
        for h in hpas.values():
            if h["spec"]["scaleTargetRef"]["name"] == "recipe-api" and "replicas" in dep["spec"]:
                problem(w, "has spec.replicas although an HPA scales it")
    hpa = hpas.get("recipe-api")
    if hpa:
        ref = hpa["spec"]["scaleTargetRef"]
        if ref.get("kind") != "Deployment" or ref.get("name") not in by_kind.get("Deployment", {}):
            problem(f"{name} HPA/recipe-api", f"scaleTargetRef {ref} is not a Deployment here")
        cpu = [m for m in hpa["spec"].get("metrics", []) if (m.get("resource") or {}).get("name") == "cpu"]
        if not cpu or cpu[0]["resource"]["target"].get("averageUtilization") != 70:
            problem(f"{name} HPA/recipe-api", "must target 70% CPU utilization")
        if hpa["spec"].get("minReplicas", 1) > hpa["spec"]["maxReplicas"]:
            problem(f"{name} HPA/recipe-api", "minReplicas > maxReplicas")
    pdb = by_kind.get("PodDisruptionBudget", {}).get("recipe-api")
    if pdb:
        if pdb["spec"].get("minAvailable") != 1:
            problem(f"{name} PDB/recipe-api", "minAvailable must be 1")
        if hpa and hpa["spec"].get("minReplicas", 1) < 2:
            problem(f"{name} PDB/recipe-api", "minAvailable 1 with 1 replica blocks every drain")
        if not dep or not matches(pdb["spec"]["selector"].get("matchLabels"), pod_labels(dep)):
            problem(f"{name} PDB/recipe-api", "selector does not match the Deployment's pods")
    svc = by_kind.get("Service", {}).get("recipe-api")
    if svc and dep and c:
        if not matches(svc["spec"].get("selector"), pod_labels(dep)):
            problem(f"{name} Service/recipe-api", "selector does not match the Deployment's pods")
        if not matches(dep["spec"]["selector"]["matchLabels"], pod_labels(dep)):
            problem(f"{name} Deployment/recipe-api", "selector does not match its own pods")
        names = {p.get("name") for p in c.get("ports") or []}
        for p in svc["spec"]["ports"]:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                problem(f"{name} Service/recipe-api", f"targetPort {p['targetPort']} unknown")
    job = by_kind.get("Job", {}).get("recipe-api-migrate")
    jc = container("Job", "recipe-api-migrate")
    if job and jc:
        w = f"{name} Job/recipe-api-migrate"
        if jc.get("args") != ["migrate"]:
            problem(w, "args must be [migrate]")
        if dep and jc.get("image") != c.get("image"):
            problem(w, "image differs from the Deployment's: it must migrate the version deployed")
        if (job["metadata"].get("labels") or {}).get("app.kubernetes.io/component") != "migration":
            problem(w, "needs label app.kubernetes.io/component=migration (README applies it first)")
        if svc and matches(svc["spec"].get("selector"), pod_labels(job)):
            problem(w, "its pods match the Service's selector")
        migration = {o["kind"] + "/" + o["metadata"]["name"] for o in objs
                     if (o["metadata"].get("labels") or {}).get("app.kubernetes.io/component") == "migration"}
        sa = pod_spec(job).get("serviceAccountName")
        if f"ServiceAccount/{sa}" not in migration:
            problem(w, f"ServiceAccount {sa} must carry component=migration too (applied first, alone)")
    sm = by_kind.get("ServiceMonitor", {}).get("recipe-api")
    if sm and svc:
        if not matches(sm["spec"]["selector"].get("matchLabels"), svc["metadata"].get("labels", {})):
            problem(f"{name} ServiceMonitor/recipe-api", "selector does not match Service recipe-api")
        for ep in sm["spec"].get("endpoints", []):
            if ep.get("port") not in {p.get("name") for p in svc["spec"]["ports"]}:
                problem(f"{name} ServiceMonitor/recipe-api", f"port {ep.get('port')} not in the Service")
            if ep.get("path") != "/metrics":
                problem(f"{name} ServiceMonitor/recipe-api", "path must be /metrics")

    # partition-sync
    cj = by_kind.get("CronJob", {}).get("partition-sync")
    pc = container("CronJob", "partition-sync")
    if cj and pc:
        w = f"{name} CronJob/partition-sync"
        spec, jspec = cj["spec"], cj["spec"]["jobTemplate"]["spec"]
        if spec.get("concurrencyPolicy") != "Forbid":
            problem(w, "concurrencyPolicy must be Forbid")
        for key, where_ in (("startingDeadlineSeconds", spec), ("backoffLimit", jspec),
                            ("activeDeadlineSeconds", jspec), ("ttlSecondsAfterFinished", jspec)):
            if not isinstance(where_.get(key), int):
                problem(w, f"{key} is not set")
        if jspec.get("backoffLimit") != 2:
            problem(w, "backoffLimit must be 2")
        check_run_budget(w, jspec.get("activeDeadlineSeconds"), configmaps)
        if pc.get("args") != SYNC_ARGS:
            problem(w, f"args must be {SYNC_ARGS}")
        check_sync_workload(w, pod_spec(cj), pc, configmaps)
        sa = accounts.get(pod_spec(cj).get("serviceAccountName"), {})
        gsa = (sa.get("metadata", {}).get("annotations") or {}).get("iam.gke.io/gcp-service-account", "")
        if not re.fullmatch(r"[a-z][a-z0-9-]*@[a-z][a-z0-9-]*\.iam\.gserviceaccount\.com", gsa):
            problem(w, f"service account needs iam.gke.io/gcp-service-account, has {gsa!r}")
        if overlay and "PROJECT_ID" in gsa:
            problem(w, "the overlay must set the real Google service account")
        indexed = jspec.get("completionMode") == "Indexed"
        count = (env_of(pc).get("JOB_COMPLETION_COUNT") or {}).get("value")
        if indexed:
            n = jspec.get("completions")
            if count != str(n) or jspec.get("parallelism") != n:
                problem(w, f"Indexed: completions ({n}), parallelism ({jspec.get('parallelism')}) "
                        f"and env JOB_COMPLETION_COUNT ({count}) must be equal")
        elif count is not None:
            problem(w, "JOB_COMPLETION_COUNT is set but the Job is not Indexed")
        if pod_spec(cj).get("restartPolicy") != "Never":
            problem(w, "restartPolicy must be Never (podFailurePolicy needs it)")

    # stream-sync: a StatefulSet whose replicas are the shards of sync.toml
    sd = by_kind.get("StatefulSet", {}).get("stream-sync")
    sc = container("StatefulSet", "stream-sync")
    if sd and sc:
        w = f"{name} StatefulSet/stream-sync"
        spec = sd["spec"]
        if spec.get("podManagementPolicy") != "Parallel":
            problem(w, "podManagementPolicy must be Parallel (shards are independent)")
        if (spec.get("updateStrategy") or {}).get("type", "RollingUpdate") != "RollingUpdate":
            problem(w, "updateStrategy must be RollingUpdate (one pod per ordinal at a time)")
        svc = by_kind.get("Service", {}).get(spec.get("serviceName", ""))
        if not svc:
            problem(w, f"serviceName {spec.get('serviceName')!r} names no Service")
        elif svc["spec"].get("clusterIP") != "None" or not matches(svc["spec"].get("selector"), pod_labels(sd)):
            problem(f"{name} Service/{svc['metadata']['name']}",
                    "must be headless (clusterIP: None) and select stream-sync's pods")
        pod_name = [e for e in sc.get("env") or [] if e.get("name") == "POD_NAME"]
        if not pod_name or ((pod_name[0].get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") != "metadata.name":
            problem(w, "env POD_NAME must come from metadata.name (the pod's ordinal is its shard)")
        shards = stream_shards(pod_spec(sd), sc, configmaps)
        if shards is None:
            problem(w, "cannot read stream_sync.shards: no sync.toml ConfigMap mounted at /etc/sync")
        elif spec.get("replicas", 1) != shards:
            problem(w, f"replicas ({spec.get('replicas', 1)}) must equal stream_sync.shards "
                       f"({shards}) of its sync.toml")
        if sc.get("args") != SYNC_ARGS:
            problem(w, f"args must be {SYNC_ARGS}")
        if not any(p.get("name") == "metrics" and p.get("containerPort") == 9464 for p in sc.get("ports") or []):
            problem(w, "needs container port 9464 named metrics")
        check_probe(w, sc, "livenessProbe", "/healthz", "metrics")
        check_sync_workload(w, pod_spec(sd), sc, configmaps, listen_port=9464)
        pm = by_kind.get("PodMonitor", {}).get("stream-sync")
        if pm:
            if not matches(pm["spec"]["selector"].get("matchLabels"), pod_labels(sd)):
                problem(f"{name} PodMonitor/stream-sync", "selector does not match stream-sync's pods")
            for ep in pm["spec"].get("podMetricsEndpoints", []):
                if ep.get("port") != "metrics" or ep.get("path") != "/metrics":
                    problem(f"{name} PodMonitor/stream-sync", "must scrape port metrics, /metrics")
            if pod_labels(sd).get(pm["spec"].get("jobLabel", "")) != "stream-sync":
                problem(f"{name} PodMonitor/stream-sync",
                        "jobLabel must yield job=\"stream-sync\" (alert StreamSyncDown)")

    for cm in configmaps.values():
        if "sync.toml" in (cm.get("data") or {}):
            check_sync_toml(f"{name} ConfigMap/{cm['metadata']['name']}", cm["data"]["sync.toml"])

    for rule in by_kind.get("PrometheusRule", {}).values() if rules else []:
        check_rules(f"{name} PrometheusRule/{rule['metadata']['name']}", rule)


# A run stops starting batches at partition_sync.max_run_secs; its last batch and the report
# need time before the Job's activeDeadlineSeconds kills it (which would roll that batch back).
RUN_BUDGET_MARGIN_SECS = 300


def default_max_run_secs() -> int:
    m = re.search(r"fn default_max_run_secs\(\) -> u64 \{\s*(\d+)", CONFIG_RS.read_text())
    return int(m[1]) if m else 0


def check_run_budget(w: str, deadline, configmaps: dict) -> None:
    """partition_sync.max_run_secs (or its default) leaves RUN_BUDGET_MARGIN_SECS before the
    CronJob's activeDeadlineSeconds."""
    if not isinstance(deadline, int):
        return
    for cm in configmaps.values():
        text = (cm.get("data") or {}).get("sync.toml")
        if not text:
            continue
        try:
            budget = tomllib.loads(text).get("partition_sync", {}).get("max_run_secs", default_max_run_secs())
        except tomllib.TOMLDecodeError:
            continue  # reported by check_sync_toml
        if not isinstance(budget, int) or budget <= 0 or budget + RUN_BUDGET_MARGIN_SECS > deadline:
            problem(w, f"partition_sync.max_run_secs ({budget}) must leave {RUN_BUDGET_MARGIN_SECS} s "
                       f"before activeDeadlineSeconds ({deadline}) in ConfigMap/{cm['metadata']['name']}")


def stream_shards(pod: dict, c: dict, configmaps: dict) -> int | None:
    """`stream_sync.shards` of the sync.toml the container mounts (None: not found)."""
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    for m in c.get("volumeMounts") or []:
        if m["mountPath"] != "/etc/sync":
            continue
        cm = configmaps.get((volumes.get(m["name"], {}).get("configMap") or {}).get("name"))
        try:
            return tomllib.loads(cm["data"]["sync.toml"]).get("stream_sync", {}).get("shards", 1)
        except (TypeError, KeyError, tomllib.TOMLDecodeError):
            return None
    return None


def check_sync_workload(w: str, pod: dict, c: dict, configmaps: dict, listen_port: int | None = None) -> None:
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mount = [m for m in c.get("volumeMounts") or [] if m["mountPath"] == "/etc/sync"]
    cm_name = (volumes.get(mount[0]["name"], {}).get("configMap") or {}).get("name") if mount else None
    if not cm_name or not cm_name.startswith("sync-config"):
        problem(w, "ConfigMap sync-config must be mounted at /etc/sync")
        return
    cm = configmaps.get(cm_name)
    if not cm:
        return
    try:
        config = tomllib.loads(cm["data"]["sync.toml"])
    except (KeyError, tomllib.TOMLDecodeError):
        return  # reported by check_sync_toml
    url_env = config.get("mysql", {}).get("url_env", "SYNC_MYSQL_URL")
    env = {e["name"]: e for e in c.get("env") or []}
    ref = ((env.get(url_env) or {}).get("valueFrom") or {}).get("secretKeyRef") or {}
    if ref.get("name") != "sync-mysql":
        problem(w, f"env {url_env} (mysql.url_env) must come from Secret sync-mysql")
    if listen_port is not None:
        listen = config.get("metrics", {}).get("listen", "")
        if not re.fullmatch(rf"0\.0\.0\.0:{listen_port}|\[::\]:{listen_port}", listen):
            problem(w, f"sync.toml metrics.listen is {listen!r}, the pod's metrics port needs "
                    f"0.0.0.0:{listen_port}")
        if not [t for t in config.get("tables", []) if t.get("mode") == "stream"]:
            problem(w, "sync.toml has no mode = \"stream\" table")


# ------------------------------------------------------------------------------------------
# 5. sync.toml against crates/domain/src/config.rs


def rust_schema() -> tuple[dict, dict]:
    """The serde structs and lowercase enums of config.rs: {struct: {field: (type, has_default)}},
    {enum: [variants]}."""
    src = CONFIG_RS.read_text()
    structs: dict[str, dict[str, tuple[str, bool]]] = {}
    enums: dict[str, list[str]] = {}
    item = re.compile(r"((?:#\[[^\n]*\]\n)*)pub (struct|enum) (\w+) \{\n(.*?)\n\}", re.S)
    for attrs, what, name, body in item.findall(src):
        if "Deserialize" not in attrs:
            continue
        if what == "enum":
            variants = [
                re.match(r"\w+", s).group(0)
                for s in (line.strip() for line in body.splitlines())
                if s and not s.startswith(("//", "#"))
            ]
            if 'rename_all = "lowercase"' in attrs:
                enums[name] = [v.lower() for v in variants]
            elif 'rename_all = "snake_case"' in attrs:
                enums[name] = [re.sub(r"(?<!^)([A-Z])", r"_\1", v).lower() for v in variants]
            continue
        if "deny_unknown_fields" not in attrs:
            problem(str(CONFIG_RS.relative_to(ROOT)), f"{name} does not deny unknown fields")
        fields: dict[str, tuple[str, bool]] = {}
        pending = ""
        for line in body.splitlines():
            s = line.strip()
            if s.startswith("#["):
                pending += s
            elif m := re.fullmatch(r"pub (\w+): (.+),", s):
                fields[m[1]] = (m[2], "serde(default" in pending)
                pending = ""
        structs[name] = fields
    if "SyncConfig" not in structs:
        problem(str(CONFIG_RS.relative_to(ROOT)), "struct SyncConfig not found: update deploy/k8s-check.py")
    scalars = {"String", "Ident", "bool", "u8", "u16", "u32", "u64", "usize", "f32", "f64"}

    def known(ty: str) -> bool:
        if m := re.fullmatch(r"(?:Option|Vec)<(.+)>|BTreeMap<(?:String|Ident),\s*(.+)>", ty.strip()):
            return known(m[1] or m[2])
        return ty.strip() in scalars or ty.strip() in structs or ty.strip() in enums

    for name, fields in structs.items():
        for field, (ty, _) in fields.items():
            if not known(ty):
                problem(str(CONFIG_RS.relative_to(ROOT)),
                        f"{name}.{field}: type {ty} is not understood: update deploy/k8s-check.py")
    return structs, enums


SCHEMA: tuple[dict, dict] | None = None


def check_value(file: str, path: str, value, ty: str, structs: dict, enums: dict) -> None:
    """Checks one TOML value against a config.rs type; `path` names it (`tables[0].mode`)."""
    ty = ty.strip()
    at = lambda what: problem(file, f"{path or 'top level'}: {what}")  # noqa: E731
    if m := re.fullmatch(r"Option<(.+)>", ty):
        return check_value(file, path, value, m[1], structs, enums)
    if m := re.fullmatch(r"Vec<(.+)>", ty):
        if not isinstance(value, list):
            return at(f"must be an array, is {value!r}")
        for i, v in enumerate(value):
            check_value(file, f"{path}[{i}]", v, m[1], structs, enums)
        return
    if m := re.fullmatch(r"BTreeMap<(String|Ident),\s*(.+)>", ty):
        if not isinstance(value, dict):
            return at("must be a table")
        for k, v in value.items():
            if m[1] == "Ident":
                check_value(file, f"{path} key", k, "Ident", structs, enums)
            check_value(file, f"{path}.{k}", v, m[2], structs, enums)
        return
    if ty == "String":
        if not isinstance(value, str):
            at(f"must be a string, is {value!r}")
    elif ty == "Ident":  # domain::ident::is_valid
        if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$]{0,63}", value):
            at(f"must be an identifier (letters, digits, _ and $, 1..=64, no leading digit), is {value!r}")
    elif ty in ("u8", "u16", "u32", "u64", "usize"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            at(f"must be a non-negative integer, is {value!r}")
    elif ty in ("f32", "f64"):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            at(f"must be a number, is {value!r}")
    elif ty == "bool":
        if not isinstance(value, bool):
            at(f"must be true or false, is {value!r}")
    elif ty in enums:
        if value not in enums[ty]:
            at(f"must be one of {enums[ty]}, is {value!r}")
    elif ty in structs:
        if not isinstance(value, dict):
            return at("must be a table")
        fields = structs[ty]
        for key in value:
            if key not in fields:
                at(f"unknown key `{key}` (config.rs knows: {', '.join(fields)})")
        for key, (fty, has_default) in fields.items():
            if key in value:
                check_value(file, f"{path}.{key}" if path else key, value[key], fty, structs, enums)
            elif not has_default and not fty.startswith("Option<"):
                at(f"missing required key `{key}`")
    else:
        at(f"type {ty} of config.rs is not understood: update deploy/k8s-check.py")


def check_sync_toml(where: str, text: str) -> None:
    global SCHEMA
    if SCHEMA is None:
        SCHEMA = rust_schema()
    structs, enums = SCHEMA
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        return problem(where, f"sync.toml does not parse: {e}")
    before = len(problems)
    check_value(where, "", config, "SyncConfig", structs, enums)
    if len(problems) > before:
        return
    # The semantic rules of SyncConfig::validate that matter for a deployment.
    tables = config.get("tables", [])
    targets = [t["target"] for t in tables]
    for t in tables:
        tw = f"{where}: tables ({t['target']})"
        if targets.count(t["target"]) > 1:
            problem(tw, "target listed twice")
        if t["mode"] == "partition" and not t.get("partition_column"):
            problem(tw, 'mode = "partition" needs partition_column')
        if t["mode"] == "stream" and (not t.get("primary_key") or "partition_column" in t):
            problem(tw, 'mode = "stream" needs a primary_key and no partition_column')
        for dep in t.get("depends_on", []):
            other = [o for o in tables if o["target"] == dep]
            group = lambda x: x.get("group", x["target"])  # noqa: E731
            if not other or group(other[0]) != group(t):
                problem(tw, f"depends_on {dep} is not a target of the same group")


def check_sync_toml_files() -> None:
    files = sorted(K8S.rglob("sync.toml"))
    if not files:
        problem("k8s", "no sync.toml found")
    for path in files:
        check_sync_toml(str(path.relative_to(ROOT)), path.read_text())


# ------------------------------------------------------------------------------------------
# 6. alert rules


def check_rules(where: str, rule: dict) -> None:
    source = yaml.safe_load(ALERTS.read_text())
    if rule.get("spec") != source:
        problem(where, f"spec differs from {ALERTS.relative_to(ROOT)} (the source): copy its groups")
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump(rule.get("spec"), f)
        f.flush()
        r = subprocess.run([PROMTOOL, "check", "rules", f.name], capture_output=True, text=True)
        if r.returncode != 0:
            problem(where, f"promtool check rules: {(r.stdout + r.stderr).strip()}")


# ------------------------------------------------------------------------------------------


def main() -> int:
    check_files()
    check_sync_toml_files()
    rendered = render_all()
    checked_rules = False
    for name, objs in rendered.items():
        for o in objs:
            check_schema(f"{name} {o['kind']}/{o['metadata']['name']}", o)
        if name == "base":
            continue  # bare image names, no namespace: only rendered and schema-checked
        # The rules are the same object in every overlay: promtool once is enough.
        check_requirements(name, objs, overlay=True, rules=not checked_rules)
        checked_rules = True
    for p in problems:
        print(f"k8s-check: {p}", file=sys.stderr)
    counts = {n: len(o) for n, o in rendered.items()}
    if problems:
        print(f"k8s-check: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(f"k8s-check: ok, rendered {counts}; schemas, requirements, sync.toml keys and alert rules hold")
    return 0


if __name__ == "__main__":
    sys.exit(main())
