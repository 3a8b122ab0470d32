#!/usr/bin/env bash
# A scale-out cluster on one machine (docs/orchestration.md, "Several hosts"):
#   scripts/cluster.sh up --workers N    Prefect server, PostgreSQL + MLflow server (artifacts proxied),
#                                        N process workers (each in its own folder, code and data from
#                                        their pull steps), the zombie-flow automation, the deployments
#   scripts/cluster.sh down              stop everything `up` started
# State lives in $FCDD_CLUSTER_DIR (default .cluster/). Ports: FCDD_PREFECT_PORT (4200),
# FCDD_MLFLOW_PORT (5000), FCDD_PG_PORT (5433). Needs the `cluster` extra (psycopg) and PostgreSQL
# (Debian: apt-get install -y postgresql). Deploys HEAD: commit first.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
DIR=$(realpath -m "${FCDD_CLUSTER_DIR:-.cluster}")
PREFECT_PORT=${FCDD_PREFECT_PORT:-4200}
MLFLOW_PORT=${FCDD_MLFLOW_PORT:-5000}
PG_PORT=${FCDD_PG_PORT:-5433}
HOST=${FCDD_CLUSTER_HOST:-127.0.0.1}
BIN=$(dirname "$(command -v python)")
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
export PREFECT_API_URL="http://$HOST:$PREFECT_PORT/api" MLFLOW_TRACKING_URI="http://$HOST:$MLFLOW_PORT"

die() { echo "cluster: $*" >&2; exit 1; }
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u nobody -- "$@"; else "$@"; fi; }  # postgres refuses root
wait_http() {  # URL NAME LOG
  for _ in $(seq 240); do curl -sf -o /dev/null "$1" && return 0; sleep 0.5; done
  die "$2 did not come up at $1; see $3"
}
start() {  # NAME LOG COMMAND...: in the background, its own session, pid in $DIR/NAME.pid
  local name=$1 log=$2; shift 2
  setsid "$@" >"$log" 2>&1 < /dev/null &
  echo $! > "$DIR/$name.pid"
}

up() {
  local workers=1
  while [[ $# -gt 0 ]]; do
    case $1 in
      --workers) workers=${2:?--workers needs a number}; shift 2 ;;
      *) die "unknown option $1 (use: up --workers N)" ;;
    esac
  done
  [[ $workers =~ ^[1-9][0-9]*$ ]] || die "--workers: expected a positive number, got $workers"
  [[ -z $PG_BIN ]] && die "PostgreSQL not found (Debian: apt-get install -y postgresql)"
  python -c "import psycopg" 2>/dev/null || die "psycopg missing: pip install -e '.[cluster]'"
  [[ -e $DIR/prefect.pid ]] && die "$DIR holds a running cluster; scripts/cluster.sh down first"
  git diff --quiet HEAD -- fcdd pipelines params.yaml || echo "cluster: uncommitted changes are not deployed (HEAD is)" >&2
  mkdir -p "$DIR"/{logs,prefect-home,mlartifacts}

  # PostgreSQL as an unprivileged user, on a private socket folder and a local TCP port.
  mkdir -p "$DIR/pg" "$DIR/pg-run"
  [[ $(id -u) == 0 ]] && chown nobody "$DIR/pg" "$DIR/pg-run" "$DIR/logs"
  [[ -f $DIR/pg/PG_VERSION ]] || as_pg "$PG_BIN/initdb" -D "$DIR/pg" -U fcdd --auth=trust >"$DIR/logs/initdb.log"
  as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg" -l "$DIR/logs/postgres.log" -w \
    -o "-p $PG_PORT -k $DIR/pg-run -c listen_addresses=$HOST" start >/dev/null
  "$PG_BIN/psql" -h "$HOST" -p "$PG_PORT" -U fcdd -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='mlflow'" \
    | grep -q 1 || "$PG_BIN/createdb" -h "$HOST" -p "$PG_PORT" -U fcdd mlflow

  start mlflow "$DIR/logs/mlflow.log" "$BIN/mlflow" server --host "$HOST" --port "$MLFLOW_PORT" --workers 1 \
    --backend-store-uri "postgresql+psycopg://fcdd@$HOST:$PG_PORT/mlflow" \
    --artifacts-destination "$DIR/mlartifacts"
  PREFECT_HOME=$DIR/prefect-home start prefect "$DIR/logs/prefect.log" \
    "$BIN/prefect" server start --host "$HOST" --port "$PREFECT_PORT"
  wait_http "$PREFECT_API_URL/health" "Prefect server" "$DIR/logs/prefect.log"
  wait_http "$MLFLOW_TRACKING_URI/health" "MLflow server" "$DIR/logs/mlflow.log"

  # Pool + GPU limit, the zombie automation, the deployments (pull steps: clone HEAD, dvc pull).
  python -m pipelines.deploy --gpus "$workers" >/dev/null || die "work pool / limit setup failed"
  prefect automation create --from-file prefect.automations.yaml >/dev/null || die "automation failed"
  if [[ -z ${FCDD_DVC_REMOTE:-} ]]; then  # no team remote given: one in $DIR, filled from data/
    mkdir -p "$DIR/dvc-remote"
    dvc commit -f -q data.dvc || die "dvc commit data.dvc failed (is data/ materialised?)"
    dvc remote add --local --force cluster "$DIR/dvc-remote"
    dvc push -q --remote cluster data.dvc || die "dvc push to $DIR/dvc-remote failed"
  fi
  FCDD_GIT_URL=${FCDD_GIT_URL:-file://$REPO} FCDD_DVC_REMOTE=${FCDD_DVC_REMOTE:-$DIR/dvc-remote} \
    prefect --no-prompt deploy --all --prefect-file prefect.cluster.yaml >"$DIR/logs/deploy.log" 2>&1 \
    || die "prefect deploy failed; see $DIR/logs/deploy.log"

  for i in $(seq "$workers"); do
    mkdir -p "$DIR/worker-$i"
    (cd "$DIR/worker-$i" && PREFECT_RUNNER_HEARTBEAT_FREQUENCY=30 \
      start "worker-$i" "$DIR/logs/worker-$i.log" "$BIN/prefect" worker start --pool gpu-pool --name "worker-$i")
  done
  cat <<MSG
cluster up: $workers worker(s), state in $DIR
  Prefect UI   http://$HOST:$PREFECT_PORT
  MLflow UI    $MLFLOW_TRACKING_URI   (PostgreSQL on $HOST:$PG_PORT, artifacts proxied)
run:  PREFECT_API_URL=$PREFECT_API_URL prefect deployment run fcdd-train/fcdd-train \\
        -p classes='["0","1"]' -p overrides='["orchestration.mode=deployments","tracking.uri=$MLFLOW_TRACKING_URI","train.checkpoint_uri=$DIR/checkpoints"]'
stop: scripts/cluster.sh down
MSG
}

down() {
  local pidfile pid
  for pidfile in "$DIR"/worker-*.pid "$DIR"/prefect.pid "$DIR"/mlflow.pid; do
    [[ -f $pidfile ]] || continue
    pid=$(cat "$pidfile")
    kill -TERM -- "-$pid" 2>/dev/null || true  # its session: the server and what it spawned
    for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
  done
  if [[ -n $PG_BIN && -f $DIR/pg/postmaster.pid ]]; then
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg" -m fast -w stop >/dev/null || true
  fi
  echo "cluster down ($DIR kept; rm -rf it to start afresh)"
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  *) die "usage: scripts/cluster.sh up --workers N | down" ;;
esac
