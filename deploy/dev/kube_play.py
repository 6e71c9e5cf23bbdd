"""Turns the rendered dev overlay (k8s/overlays/dev, `kubectl kustomize`) into what
`podman kube play` (podman 4.3) can start on this machine, changing as little as possible.

usage: kube_play.py RENDERED.yaml SYNC_TOML API_PORT DATABASE_URL TOKEN OUT_DIR EXPORT_ROOT

Writes OUT_DIR/migrate.yaml (the migration Job's pod), OUT_DIR/services.yaml (the ConfigMap,
the recipe-api Deployment, stream-sync's StatefulSet pod 0), OUT_DIR/partition-sync.yaml (the CronJob's pod)
and OUT_DIR/secret-*.json (the Secrets, for `podman secret create`). What podman's kube play lacks, and how each is covered (README "Images"):
- Job and CronJob: their pod templates run as Pods (restartPolicy Never), one after the other.
- StatefulSet (podman 4.3 has none): its pod 0 runs as a Pod named as the StatefulSet names it
  (`stream-sync-0`), POD_NAME set to that name (the downward API's metadata.name).
- Secrets are not in the manifests (created per namespace): generated here from test values,
  with the names and keys the manifests reference.
- Services, HPA, PDB, ServiceMonitor/PodMonitor, PrometheusRule, ServiceAccounts, Namespace:
  not started (no cluster networking, autoscaling or Prometheus Operator here); k8s-check
  validates them offline.
- Networking: pods use the host network (`hostNetwork: true`) to reach the local services on
  127.0.0.1, and listen on 127.0.0.1 (the bind variables and the sync config say so) instead of
  0.0.0.0.
- Images: the locally built localhost/<name>:dev, never pulled.
- Staging: the BigQuery emulator writes exports to a local directory (EXPORT_ROOT), which the
  partition-sync pod gets at the same path (hostPath); in a cluster it is the GCS bucket.
Everything else stays as rendered: commands, args, env, volumes and mounts, probes, resources,
security contexts (read-only root, uid/gid 65532, no capabilities).
"""

import base64
import json
import sys
import tomllib
from pathlib import Path

import yaml

IMAGES = ("recipe-api", "partition-sync", "stream-sync")
# Named container ports -> the port each process listens on here (filled in main()).
PORTS = {}


def local_image(image):
    for name in IMAGES:
        if f"/{name}:" in image or image.startswith(f"{name}:") or image == name:
            return f"localhost/{name}:dev"
    return image


def pod_spec_for_podman(spec, api_port, secret_dir):
    spec = dict(spec)
    # podman 4.3's kube play crashes (nil pointer in VolumeFromSecret) on Secret volumes: each
    # becomes a directory of the Secret's files on the host (hostPath), at the same mount path.
    volumes = []
    for v in spec.get("volumes", []):
        s = v.get("secret")
        if s:
            v = {"name": v["name"], "hostPath": {"path": str(secret_dir / s["secretName"]), "type": "Directory"}}
        volumes.append(v)
    if volumes:
        spec["volumes"] = volumes
    spec["hostNetwork"] = True
    spec.pop("serviceAccountName", None)
    spec.pop("automountServiceAccountToken", None)
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        c["image"] = local_image(c["image"])
        c["imagePullPolicy"] = "Never"
        for e in c.get("env", []):
            if e.get("name") == "RECIPE_API_BIND":
                e["value"] = f"127.0.0.1:{api_port}"
        # With the host network podman refuses port mappings: the ports go, and the probes
        # that named them get the numbers the processes listen on here.
        c.pop("ports", None)
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            get = (c.get(probe) or {}).get("httpGet")
            if get and get.get("port") in PORTS:
                get["port"] = PORTS[get["port"]]
    return spec


def as_pod(name, template, api_port, secret_dir):
    spec = pod_spec_for_podman(template["spec"], api_port, secret_dir)
    spec["restartPolicy"] = "Never"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template.get("metadata", {}).get("labels", {})},
        "spec": spec,
    }


def secret(name, data):
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "type": "Opaque",
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def main():
    rendered, sync_toml, api_port, database_url, token, out, export_root = sys.argv[1:8]
    docs = [d for d in yaml.safe_load_all(Path(rendered).read_text()) if d]
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    listen = tomllib.loads(Path(sync_toml).read_text()).get("metrics", {}).get("listen", "")
    PORTS.update({"http": int(api_port), "metrics": int(listen.rsplit(":", 1)[-1] or 9464)})

    job = by_kind["Job"][0]
    secret_dir = out / "secrets"
    migrate = as_pod("recipe-api-migrate", job["spec"]["template"], api_port, secret_dir)

    services = []
    for cm in by_kind.get("ConfigMap", []):
        if "sync.toml" in (cm.get("data") or {}):
            cm = dict(cm)
            cm["data"] = dict(cm["data"], **{"sync.toml": Path(sync_toml).read_text()})
            services.append(cm)
    # podman 4.3 reads a Secret's keys from a podman secret holding a JSON object of key ->
    # base64 value (a Secret in the played YAML is stored as YAML and then fails to parse):
    # written as OUT_DIR/secret-<name>.json for `podman secret create <name> FILE`.
    for s in (
        secret("recipe-api-db", {"url": database_url}),
        secret("recipe-api-tokens", {"tokens": token + "\n"}),
        secret("sync-mysql", {"url": database_url}),
    ):
        (out / f"secret-{s['metadata']['name']}.json").write_text(json.dumps(s["data"]))
        files = secret_dir / s["metadata"]["name"]
        files.mkdir(parents=True, exist_ok=True)
        files.chmod(0o755)
        for key, value in s["data"].items():
            (files / key).write_bytes(base64.b64decode(value))
            (files / key).chmod(0o644)
    for dep in by_kind.get("Deployment", []):
        dep = dict(dep)
        dep["spec"] = dict(dep["spec"], replicas=1)
        dep["spec"]["template"] = dict(dep["spec"]["template"])
        dep["spec"]["template"]["spec"] = pod_spec_for_podman(
            dep["spec"]["template"]["spec"], api_port, secret_dir
        )
        services.append(dep)

    for sts in by_kind.get("StatefulSet", []):
        pod = as_pod(f"{sts['metadata']['name']}-0", sts["spec"]["template"], api_port, secret_dir)
        pod["spec"]["restartPolicy"] = "Always"
        for c in pod["spec"]["containers"]:
            for e in c.get("env", []):
                field = ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
                if field == "metadata.name":
                    e.pop("valueFrom")
                    e["value"] = pod["metadata"]["name"]
        services.append(pod)

    cron = by_kind["CronJob"][0]
    partition_sync = as_pod(
        "partition-sync", cron["spec"]["jobTemplate"]["spec"]["template"], api_port, secret_dir
    )
    spec = partition_sync["spec"]
    spec.setdefault("volumes", []).append(
        {"name": "staging", "hostPath": {"path": export_root, "type": "Directory"}}
    )
    spec["containers"][0].setdefault("volumeMounts", []).append(
        {"name": "staging", "mountPath": export_root}
    )

    # The pods mount the Secrets and ConfigMap by name: each file carries what its pod needs.
    needs = [d for d in services if d["kind"] == "ConfigMap"]
    (out / "migrate.yaml").write_text(yaml.safe_dump_all(needs + [migrate]))
    (out / "services.yaml").write_text(yaml.safe_dump_all(services))
    (out / "partition-sync.yaml").write_text(yaml.safe_dump_all(needs + [partition_sync]))


if __name__ == "__main__":
    main()
