# shellcheck shell=bash
# edge-proxy and hanko-dev for bench/run: a generated edge-proxy config, and
# one hanko-dev key-set server per edge-proxy so that each proxy's key-set
# fetches show up in a log of their own.

# Audience the bench tokens carry and every verifying proxy requires.
BENCH_AUDIENCE=localhost

# write_edge_proxy_config FILE LISTEN_PORT ADMIN_PORT WORKERS JWKS_URL
#   CACHE_ENABLED UPSTREAM_PORT UPGRADE_SOCKET: an edge-proxy config with one
# authenticated route, /api, to 127.0.0.1:UPSTREAM_PORT. Everything not set
# here keeps the default documented in config.toml.
write_edge_proxy_config() {
    local file=$1 port=$2 admin_port=$3 workers=$4 jwks_url=$5 cache=$6 upstream_port=$7 upgrade_socket=$8
    cat >"$file" <<EOF
[proxy]
listen = ["127.0.0.1:$port"]
admin_listen = "127.0.0.1:$admin_port"
worker_threads = $workers
upgrade_socket = "$upgrade_socket"
# Short grace so a stop at the end of the bench does not wait.
grace_period_seconds = 1
shutdown_timeout_seconds = 1

[proxy.auth]
jwks_url = "$jwks_url"
audience = ["$BENCH_AUDIENCE"]

[proxy.auth.claim_headers]
"email.address" = "X-User-Email"

[proxy.auth.token_cache]
enabled = $cache

[[proxy.routes]]
path_prefix = "/api"
upstream = ["127.0.0.1:$upstream_port"]
auth = "required"
EOF
}

# start_hanko_dev NAME DATA_DIR: starts `hanko-dev serve` on a free port and
# waits for its health endpoint (not the key set, so the access log counts
# only the proxy's fetches); sets HANKO_PID, HANKO_LOG and HANKO_URL.
start_hanko_dev() {
    local name=$1 data_dir=$2 port
    port=$(free_port)
    HANKO_LOG=$WORK/logs/$name.log
    start_process "$name" "$HANKO_LOG" "$BIN_DIR/hanko-dev" serve --listen "127.0.0.1:$port" --data-dir "$data_dir"
    HANKO_PID=$STARTED_PID
    HANKO_URL=http://127.0.0.1:$port
    wait_for_http "$HANKO_URL/healthz" "$HANKO_PID" "$HANKO_LOG"
}

# key_set_fetches LOGFILE: prints how many key-set requests a hanko-dev
# access log records.
key_set_fetches() {
    grep -c '/.well-known/jwks.json' "$1" || true
}
