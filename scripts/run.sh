#!/usr/bin/env bash
# Start creditgate on this machine, run the demo client against it, then keep it in the
# foreground until Ctrl-C (or stop right after the demo when RUN_ONCE=1).
#
# Called by `make run`, which has already built the venv and the extension. Environment:
#   VENV (.venv)  PORT (50051)  REDIS_PORT (6399)  REDIS_URL (unset: private redis in ./var)
#   METRICS_PORT (9464: the gateway's /metrics)  LEDGER_METRICS_PORT (9465: the worker's)
#   RUN_ONCE (unset: stay in the foreground; 1: exit with the demo's status)
set -euo pipefail

cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PORT=${PORT:-50051}
REDIS_PORT=${REDIS_PORT:-6399}
RUN_ONCE=${RUN_ONCE:-0}
CATALOG=${CATALOG:-limits/products.toml}
METRICS_PORT=${METRICS_PORT:-9464}
LEDGER_METRICS_PORT=${LEDGER_METRICS_PORT:-9465}
# Log lines for a person reading var/*.log (production keeps the default, JSON).
export CREDITGATE_LOG_FORMAT=text

VAR_DIR=var
REDIS_DIR=$VAR_DIR/redis
REDIS_PIDFILE=$REDIS_DIR/redis.pid
GATEWAY_LOG=$VAR_DIR/gateway.log
GATEWAY_PIDFILE=$VAR_DIR/gateway.pid
TLS_DIR=$VAR_DIR/tls
CALLERS=$VAR_DIR/callers.toml

redis_started=0
gateway_pid=""
worker_pid=""   # the ledger worker, once it exists (see start_ledger_worker)

log() { echo "run: $*"; }

stop_pid() { # name pid: SIGTERM, wait up to 10 s, then SIGKILL
    local name=$1 pid=$2
    kill -0 "$pid" 2>/dev/null || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$name did not stop within 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # Stop in the reverse order of start: the gateway first, so nothing writes after redis goes.
    [[ -n $gateway_pid ]] && stop_pid gateway "$gateway_pid"
    rm -f "$GATEWAY_PIDFILE"
    [[ -n $worker_pid ]] && stop_pid "ledger worker" "$worker_pid"
    if [[ $redis_started == 1 ]]; then
        log "stopping the private redis-server on port $REDIS_PORT"
        # NOSAVE skips the RDB snapshot only; the append-only file is flushed, so holds survive.
        if ! redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1; then
            [[ -f $REDIS_PIDFILE ]] && stop_pid redis-server "$(cat "$REDIS_PIDFILE")"
        fi
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

mkdir -p "$REDIS_DIR"

# A gateway left over from an interrupted run would hold the port.
if [[ -f $GATEWAY_PIDFILE ]]; then
    old_pid=$(cat "$GATEWAY_PIDFILE")
    if kill -0 "$old_pid" 2>/dev/null && grep -q creditgate "/proc/$old_pid/cmdline" 2>/dev/null; then
        stop_pid "gateway from an earlier run" "$old_pid"
    fi
    rm -f "$GATEWAY_PIDFILE"
fi

start_private_redis() {
    if ! command -v redis-server >/dev/null 2>&1; then
        echo "error: redis-server is not installed: sudo apt-get install redis-server," \
             "or set REDIS_URL to an existing server" >&2
        exit 1
    fi
    if [[ -f $REDIS_PIDFILE ]] && kill -0 "$(cat "$REDIS_PIDFILE")" 2>/dev/null; then
        log "reusing the private redis-server left running in $REDIS_DIR (pid $(cat "$REDIS_PIDFILE"))"
    else
        if redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1; then
            echo "error: port $REDIS_PORT already has a redis that is not ours;" \
                 "choose another with make run REDIS_PORT=NNNN" >&2
            exit 1
        fi
        log "starting a private redis-server on 127.0.0.1:$REDIS_PORT (data in $REDIS_DIR)"
        # appendonly so that holds made by the demo survive a restart of `make run`.
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$PWD/$REDIS_DIR" \
            --daemonize yes --pidfile "$PWD/$REDIS_PIDFILE" --logfile "$PWD/$REDIS_DIR/redis.log" \
            --save "" --appendonly yes
    fi
    redis_started=1
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "error: the private redis-server did not answer PING within 10 s; see $REDIS_DIR/redis.log" >&2
    tail -n 20 "$REDIS_DIR/redis.log" >&2 || true
    exit 1
}

if [[ -z ${REDIS_URL:-} ]]; then
    start_private_redis
    REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
else
    log "using REDIS_URL=$REDIS_URL"
fi
export REDIS_URL

# A private development CA, the gateway's certificate, the demo callers' certificates and the
# callers file naming them; files from an earlier run are kept.
log "development certificates in $TLS_DIR, callers in $CALLERS"
"$VENV/bin/creditgate" certs init --dir "$TLS_DIR" --callers "$CALLERS"

# The gateway's metrics, where this build's serve has --metrics-port.
metrics_options=()
GATEWAY_METRICS_URL=""
if "$VENV/bin/creditgate" serve --help | grep -q -- --metrics-port; then
    metrics_options=(--metrics-port "$METRICS_PORT")
    GATEWAY_METRICS_URL="http://127.0.0.1:$METRICS_PORT/metrics"
fi
log "starting the gateway with mutual TLS on 127.0.0.1:$PORT (log: $GATEWAY_LOG)"
: >"$GATEWAY_LOG"
"$VENV/bin/creditgate" serve --port "$PORT" --redis-url "$REDIS_URL" --catalog "$CATALOG" \
    --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key" --tls-ca "$TLS_DIR/ca.pem" \
    --callers "$CALLERS" --log-format text "${metrics_options[@]}" >>"$GATEWAY_LOG" 2>&1 &
gateway_pid=$!
echo "$gateway_pid" >"$GATEWAY_PIDFILE"

LEDGER_DSN=${LEDGER_DSN:-sqlite:///$PWD/$VAR_DIR/ledger.sqlite3}
export LEDGER_DSN
LEDGER_METRICS_URL="http://127.0.0.1:$LEDGER_METRICS_PORT/metrics"
start_ledger_worker() {
    log "starting the ledger worker into ${LEDGER_DSN%%\?*} (log: $VAR_DIR/ledger.log)"
    "$VENV/bin/creditgate" ledger --redis-url "$REDIS_URL" --ledger-dsn "$LEDGER_DSN" \
        --metrics-port "$LEDGER_METRICS_PORT" --log-format text >>"$VAR_DIR/ledger.log" 2>&1 &
    worker_pid=$!
}
start_ledger_worker
log "metrics: gateway ${GATEWAY_METRICS_URL:-(not in this build)}, ledger worker $LEDGER_METRICS_URL"

# The demo's calls as the gateway's /metrics counts them: its Authorize calls and decisions
# (the gateway adds a call to its metrics within a moment of answering it).
show_demo_metrics() {
    if [[ -z $GATEWAY_METRICS_URL ]]; then
        return 0
    fi
    for _ in $(seq 50); do
        if "$VENV/bin/python" - "$GATEWAY_METRICS_URL" >"$VAR_DIR/metrics.out" 2>&1 <<'PY'
import sys
import urllib.request

text = urllib.request.urlopen(sys.argv[1], timeout=2).read().decode()
lines = [line for line in text.splitlines()
         if line.startswith("creditgate_calls_total{") and 'method="Authorize"' in line
         or line.startswith("creditgate_decisions_total{")]
print("\n".join(lines))
sys.exit(0 if any("creditgate_calls_total" in line for line in lines) else 1)
PY
        then
            log "the demo's calls at $GATEWAY_METRICS_URL:"
            cat "$VAR_DIR/metrics.out"
            return 0
        fi
        sleep 0.2
    done
    echo "error: $GATEWAY_METRICS_URL does not count the demo's Authorize calls:" >&2
    cat "$VAR_DIR/metrics.out" >&2 || true
    exit 1
}

# The demo waits for health SERVING by itself and exits non-zero on any failure, a refused
# call that succeeds included. It calls as the terminal, back-office and billing callers.
log "running the demo client against 127.0.0.1:$PORT as the callers of $CALLERS"
demo_status=0
"$VENV/bin/creditgate" demo --target "127.0.0.1:$PORT" --tls-dir "$TLS_DIR" || demo_status=$?
if [[ $demo_status != 0 ]]; then
    echo "error: the demo failed (exit $demo_status); last lines of $GATEWAY_LOG:" >&2
    tail -n 40 "$GATEWAY_LOG" >&2 || true
    exit "$demo_status"
fi

# The demo's purchase reaches the ledger: wait until Redis and the ledger reconcile.
log "waiting for the ledger worker to post the demo's events"
ledger_status=1
for _ in $(seq 50); do
    if "$VENV/bin/creditgate" reconcile --redis-url "$REDIS_URL" >"$VAR_DIR/reconcile.out" 2>&1; then
        ledger_status=0
        break
    fi
    sleep 0.2
done
cat "$VAR_DIR/reconcile.out"
if [[ $ledger_status != 0 ]]; then
    echo "error: the ledger did not catch up; last lines of $VAR_DIR/ledger.log:" >&2
    tail -n 40 "$VAR_DIR/ledger.log" >&2 || true
    exit 1
fi
log "the ledger's latest journal lines (double entry, minor units):"
"$VENV/bin/creditgate" journal --limit 3
show_demo_metrics

if [[ $RUN_ONCE == 1 ]]; then
    log "demo passed; RUN_ONCE=1, stopping"
    exit 0
fi

echo "gateway listening with mutual TLS on 127.0.0.1:$PORT (client certificates in $TLS_DIR," \
     "e.g. creditgate customer show ID), ledger worker posting into ${LEDGER_DSN%%\?*}; Ctrl-C stops both"
echo "metrics: gateway ${GATEWAY_METRICS_URL:-(not in this build)}, ledger worker $LEDGER_METRICS_URL"
gateway_status=0
wait "$gateway_pid" || gateway_status=$?
gateway_pid=""
echo "error: the gateway exited by itself (exit $gateway_status); last lines of $GATEWAY_LOG:" >&2
tail -n 40 "$GATEWAY_LOG" >&2 || true
exit $(( gateway_status == 0 ? 1 : gateway_status ))
