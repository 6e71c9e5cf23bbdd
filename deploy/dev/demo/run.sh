#!/usr/bin/env bash
# `make run`: the product end to end on this machine. Expects the services of
# `deploy/dev/env.sh up` (make run starts them first) and their URLs in .dev/env.
#
#   1. build recipe-api, partition-sync and stream-sync (one at a time)
#   2. migrate recipe-api's database
#   3. seed the warehouse dataset `demo` and recipe-api's recipes/ingredients (same ids)
#   4. partition-sync run, stream-sync run --once (progress shown)
#   5. keep running until Ctrl-C: recipe-api on 127.0.0.1:8080, stream-sync (every 5 s),
#      partition-sync every 30 s (what the CronJob does in Kubernetes)
#
# Ctrl-C (or SIGTERM) stops what this script started, by PID. Logs: .dev/demo/*.log.
# Idempotent: a second run reseeds the same data and the sync finds nothing to do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
[ -f .dev/env ] || { echo "run: .dev/env is missing: start the services with deploy/dev/env.sh up" >&2; exit 1; }
set -a
# shellcheck disable=SC1091
. .dev/env
set +a

CARGO="${CARGO:-cargo}"
BIN="$ROOT/target/debug"
DEMO="$ROOT/.dev/demo"
BIND="${RECIPE_API_BIND:-127.0.0.1:8080}"
METRICS_BIND="${DEMO_STREAM_METRICS:-127.0.0.1:9464}"
PARTITION_EVERY="${DEMO_PARTITION_EVERY:-30}"
export RECIPE_API_TOKENS="${RECIPE_API_TOKENS:-demo-write-token}"
TOKEN="${RECIPE_API_TOKENS%%,*}"
export SYNC_MYSQL_URL="$DATABASE_URL"
export DEMO_DATASET="${DEMO_DATASET:-demo}"
CONFIG="$DEMO/sync.toml"
mkdir -p "$DEMO"

if [ -t 1 ]; then
  step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
else
  step() { printf '\n==> %s\n' "$*"; }
fi
port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

for addr in "$BIND" "$METRICS_BIND"; do
  if port_open "$addr"; then
    echo "run: $addr is already in use (another make run?): stop it first" >&2
    exit 1
  fi
done

step "build recipe-api, partition-sync, stream-sync"
for crate in recipe-api partition-sync stream-sync; do
  "$CARGO" build -q -p "$crate"
done

step "migrate recipe-api's database ($(printf '%s' "$DATABASE_URL" | sed 's#//[^@]*@#//***@#'))"
"$BIN/recipe-api" migrate 2>&1 | tail -n 1

step "seed the warehouse (dataset $DEMO_DATASET) and recipe-api's recipes and ingredients"
python3 deploy/dev/demo/demo.py seed-warehouse
python3 deploy/dev/demo/demo.py seed-api
python3 deploy/dev/demo/demo.py config --metrics-listen "$METRICS_BIND" >"$CONFIG"
echo "  sync config: $CONFIG"

step "partition-sync run (recipe_daily_stats; the catalog group in one transaction)"
"$BIN/partition-sync" --config "$CONFIG" --output text run
step "stream-sync run --once (ingredient_nutrition)"
"$BIN/stream-sync" --config "$CONFIG" run --once

PIDS=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "stopping: ${PIDS[*]:-nothing}"
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT
trap 'cleanup; exit 0' INT TERM

step "start stream-sync (every 5 s), partition-sync (every ${PARTITION_EVERY} s) and recipe-api"
"$BIN/stream-sync" --config "$CONFIG" run >>"$DEMO/stream-sync.log" 2>&1 &
PIDS+=($!)
(
  trap 'kill "$!" 2>/dev/null; exit 0' TERM
  while sleep "$PARTITION_EVERY" & wait $!; do
    "$BIN/partition-sync" --config "$CONFIG" --output json run >>"$DEMO/partition-sync.log" 2>&1 || true
  done
) &
PIDS+=($!)
RECIPE_API_BIND="$BIND" "$BIN/recipe-api" serve >>"$DEMO/recipe-api.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do port_open "$BIND" && break; sleep 0.1; done
port_open "$BIND" || { echo "run: recipe-api did not start; see $DEMO/recipe-api.log" >&2; exit 1; }

URL="http://$BIND"
cat <<EOF

recipe-api      $URL   (Swagger UI $URL/docs, metrics $URL/metrics)
stream-sync     http://$METRICS_BIND/metrics   (every 5 s)
partition-sync  every ${PARTITION_EVERY} s, metrics pushed to ${PUSHGATEWAY_URL:-no Pushgateway}
write token     $TOKEN
logs            $DEMO/{recipe-api,stream-sync,partition-sync}.log

Try:
  curl -s '$URL/v1/recipes/1/stats?from=2026-03-25&to=2026-03-31'
  curl -s '$URL/v1/ingredients/1'
  curl -s -X POST $URL/v1/ingredients -H 'Authorization: Bearer $TOKEN' \\
       -H 'Content-Type: application/json' -d '{"name": "saffron"}'

Change the warehouse in another terminal with \`make demo-change\`, and watch the next sync
carry it to the API. Ctrl-C stops everything started here.
EOF
wait "${PIDS[2]}"
