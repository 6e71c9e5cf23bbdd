#!/usr/bin/env bash
# Benchmark of recipe-api (a benchmark, not a test): seeds a fresh database with 10,000 recipes
# (8 ingredients each, from 500), starts the release binary on a free loopback port, and for
# each scenario alternates rounds of wrk (16 connections) against the service and of the
# database ceiling: the same diesel code the endpoint runs, straight against MariaDB at the
# same concurrency. Prints, per scenario, the median over the rounds of req/s, p50 and p99 on
# each side, the median of the rounds' API / ceiling ratios with their range, and the server's
# resident memory under load. Alternating short rounds and taking medians is what makes the
# ratio hold still on a shared VM, whose speed drifts by a third within minutes (CPU steal):
# one long API run followed by one long ceiling run compared two different machines.
#
# Usage: deploy/dev/bench-api.sh  (after `deploy/dev/env.sh up`; reads .dev/env)
# Env:   BENCH_CONNECTIONS (16), BENCH_SECONDS (5, per round and side), BENCH_ROUNDS (3),
#        BENCH_SCENARIOS ("by-id by-ingredient write-mix write-mix-keyed"; the keyed mix is measured against the same database ceiling as write-mix),
#        BENCH_WORKERS (1): HTTP workers. wrk, MariaDB and the service share this machine's two
#        cores, so the service is given one (as a pod with a 1-CPU limit would be); the pool
#        size is its default (4 here).
#        BENCH_API_BIN: a recipe-api binary to measure instead of this tree's (A/B comparisons).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ -f "$ROOT/.dev/env" ]; then
  set -a; . "$ROOT/.dev/env"; set +a
fi
: "${MYSQL_URL:?MYSQL_URL is not set: run deploy/dev/env.sh up first}"
if ! command -v wrk >/dev/null || ! command -v curl >/dev/null; then
  echo "installing wrk and curl (Debian packages)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk curl >/dev/null
fi

CONNECTIONS="${BENCH_CONNECTIONS:-16}"
SECONDS_PER_RUN="${BENCH_SECONDS:-5}"
ROUNDS="${BENCH_ROUNDS:-3}"
SCENARIOS="${BENCH_SCENARIOS:-by-id by-ingredient write-mix write-mix-keyed}"
WORKERS="${BENCH_WORKERS:-1}"
export BENCH_RECIPES=10000 BENCH_INGREDIENTS=500

cargo build --release -p recipe-api --bin recipe-api --example bench_db
BIN="${BENCH_API_BIN:-$ROOT/target/release/recipe-api}"
CEILING="$ROOT/target/release/examples/bench_db"

rest="${MYSQL_URL#mysql://}"
creds="${rest%%@*}"; hostport="${rest#*@}"; hostport="${hostport%%/*}"
DB_USER="${creds%%:*}"; export MYSQL_PWD="${creds#*:}"
DB_HOST="${hostport%%:*}"; DB_PORT="${hostport##*:}"
[ "$DB_PORT" = "$hostport" ] && DB_PORT=3306
sql() { mariadb --protocol=TCP -h "$DB_HOST" -P "$DB_PORT" -u "$DB_USER" "$@"; }

DB_NAME="bench_$(python3 -c 'import uuid; print(uuid.uuid4().hex)')"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
export BENCH_TOKEN="bench-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
RESULTS="$(mktemp -d)"
LOG="$ROOT/.dev/bench-recipe-api.log"
PID=""

cleanup() {
  if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  sql -e "DROP DATABASE IF EXISTS \`$DB_NAME\`" || true
  rm -rf "$RESULTS"
}
trap cleanup EXIT

sql -e "CREATE DATABASE \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
export DATABASE_URL="${MYSQL_URL%/}/$DB_NAME"
"$BIN" migrate >"$LOG" 2>&1
echo "seeding $BENCH_RECIPES recipes, $BENCH_INGREDIENTS ingredients ..."
python3 deploy/dev/bench/seed.py "$BENCH_RECIPES" "$BENCH_INGREDIENTS" | sql "$DB_NAME"
sql "$DB_NAME" -e "ANALYZE TABLE recipes, ingredients, recipe_ingredients" >/dev/null

RECIPE_API_BIND="127.0.0.1:$PORT" RECIPE_API_TOKENS="$BENCH_TOKEN" RECIPE_API_WORKERS="$WORKERS" \
  RUST_LOG=warn "$BIN" serve >>"$LOG" 2>&1 &
PID=$!
ready=""
for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && { ready=1; break; }
  kill -0 "$PID" 2>/dev/null || { echo "recipe-api exited; log:"; cat "$LOG"; exit 1; }
  sleep 0.1
done
[ -n "$ready" ] || { echo "recipe-api was not ready after 10 s; log:"; cat "$LOG"; exit 1; }

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$PID/status"; }
for scenario in $SCENARIOS; do
  echo "== $scenario: $ROUNDS rounds of the API (wrk -c$CONNECTIONS -d${SECONDS_PER_RUN}s, $WORKERS HTTP worker(s)) then the database ceiling ($CONNECTIONS threads, ${SECONDS_PER_RUN}s)"
  # Warm up (caches, pool) for 2 s, then measure.
  BENCH_SCENARIO="$scenario" wrk -t2 -c"$CONNECTIONS" -d2s -s deploy/dev/bench/recipes.lua "http://127.0.0.1:$PORT" >/dev/null
  ( while kill -0 "$PID" 2>/dev/null; do rss_kib; sleep 0.2; done ) >"$RESULTS/$scenario.rss" &
  sampler=$!
  for round in $(seq 1 "$ROUNDS"); do
    BENCH_SCENARIO="$scenario" wrk -t2 -c"$CONNECTIONS" -d"${SECONDS_PER_RUN}s" -s deploy/dev/bench/recipes.lua \
      "http://127.0.0.1:$PORT" >"$RESULTS/$scenario.$round.wrk"
    grep '^WRK_JSON ' "$RESULTS/$scenario.$round.wrk" | sed 's/^WRK_JSON //' >"$RESULTS/$scenario.$round.api.json"
    "$CEILING" "$DATABASE_URL" "$scenario" "$CONNECTIONS" "$SECONDS_PER_RUN" "$BENCH_RECIPES" "$BENCH_INGREDIENTS" \
      >"$RESULTS/$scenario.$round.db.json"
    python3 deploy/dev/bench/api_report.py round "$RESULTS" "$scenario" "$round"
  done
  kill "$sampler" 2>/dev/null || true
  wait "$sampler" 2>/dev/null || true
  max_rss="$(sort -n "$RESULTS/$scenario.rss" | tail -1)"
  echo "{\"max_rss_kib\": ${max_rss:-0}}" >"$RESULTS/$scenario.rss.json"
done
peak_kib="$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")"

python3 deploy/dev/bench/api_report.py summary "$RESULTS" "$peak_kib" "$ROUNDS" $SCENARIOS
