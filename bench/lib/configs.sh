# shellcheck shell=bash
# Config writers for the comparison servers in bench/run: the nginx upstream
# that serves a fixed JSON body, nginx as a plain reverse proxy, and HAProxy
# verifying the token with jwt_verify. Each writes one file and prints
# nothing; every server listens on 127.0.0.1 only.

# The upstream's fixed body, shaped like an item-api list page.
UPSTREAM_BODY='{"items":[{"id":"0b7e6c1e-5f1a-4c7e-9a51-2d7f3c9e8a10","title":"benchmark item","done":false}],"next_cursor":null}'

# Keep-alive limits raised far above one run's request count so no server
# closes a connection mid-run (nginx closes after 1000 requests by default).
KEEPALIVE_REQUESTS=100000000

# nginx_main_and_http_start PREFIX WORKERS: prints the lines both nginx
# configs share, up to and including the opening of the http block, with
# every file nginx writes kept under PREFIX.
nginx_main_and_http_start() {
    local prefix=$1 workers=$2
    cat <<EOF
worker_processes $workers;
daemon off;
master_process on;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
worker_rlimit_nofile 16384;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $prefix/client_body;
    proxy_temp_path $prefix/proxy;
    keepalive_requests $KEEPALIVE_REQUESTS;
    keepalive_timeout 300s;
EOF
}

# write_nginx_upstream FILE PREFIX PORT WORKERS: nginx answering every path
# with UPSTREAM_BODY.
write_nginx_upstream() {
    local file=$1 prefix=$2 port=$3 workers=$4
    mkdir -p "$prefix"
    {
        nginx_main_and_http_start "$prefix" "$workers"
        cat <<EOF
    server {
        listen 127.0.0.1:$port;
        location / {
            default_type application/json;
            return 200 '$UPSTREAM_BODY';
        }
    }
}
EOF
    } >"$file"
}

# write_nginx_proxy FILE PREFIX PORT WORKERS UPSTREAM_PORT CONNECTIONS: nginx
# proxying every path to the upstream over a keep-alive pool of CONNECTIONS
# idle connections, with no authentication.
write_nginx_proxy() {
    local file=$1 prefix=$2 port=$3 workers=$4 upstream_port=$5 connections=$6
    mkdir -p "$prefix"
    {
        nginx_main_and_http_start "$prefix" "$workers"
        cat <<EOF
    upstream bench_upstream {
        server 127.0.0.1:$upstream_port;
        keepalive $connections;
        keepalive_requests $KEEPALIVE_REQUESTS;
    }
    server {
        listen 127.0.0.1:$port;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    } >"$file"
}

# write_haproxy FILE PORT THREADS UPSTREAM_PORT PUBLIC_PEM AUDIENCE: HAProxy
# that accepts a request only with an RS256 bearer token whose signature
# verifies against PUBLIC_PEM, whose exp lies in the future and whose first
# aud entry is AUDIENCE; it forwards sub and email.address as headers, the
# way edge-proxy does.
#
# HAProxy 2.6 has no JSON array search, so only the first aud entry is
# compared; Hanko-shaped tokens carry a one-element aud array.
write_haproxy() {
    local file=$1 port=$2 threads=$3 upstream_port=$4 pem=$5 audience=$6
    cat >"$file" <<EOF
global
    nbthread $threads
    maxconn 4096

defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 300s

frontend bench
    bind 127.0.0.1:$port
    http-request deny deny_status 401 unless { req.hdr(authorization) -m found }
    http-request set-var(txn.bearer) http_auth_bearer
    http-request set-var(txn.jwt_alg) var(txn.bearer),jwt_header_query('\$.alg')
    http-request deny deny_status 401 unless { var(txn.jwt_alg) -m str RS256 }
    http-request deny deny_status 401 unless { var(txn.bearer),jwt_verify(txn.jwt_alg,"$pem") -m int 1 }
    http-request set-var(txn.now) date()
    http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('\$.exp','int')
    http-request deny deny_status 401 unless { var(txn.exp),sub(txn.now) -m int gt 0 }
    http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('\$.aud[0]')
    http-request deny deny_status 401 unless { var(txn.aud) -m str $audience }
    http-request del-header X-User-Id
    http-request del-header X-User-Email
    http-request set-header X-User-Id %[var(txn.bearer),jwt_payload_query('\$.sub')]
    http-request set-header X-User-Email %[var(txn.bearer),jwt_payload_query('\$.email.address')]
    default_backend bench_upstream

backend bench_upstream
    http-reuse always
    server upstream 127.0.0.1:$upstream_port
EOF
}
