# shellcheck shell=bash
# A private PostgreSQL cluster for bench/run: initdb into a directory under
# the bench's temporary directory, serve on one loopback port, stop with
# pg_ctl. PostgreSQL refuses to run as root, so when the bench runs as root
# the cluster runs as the `postgres` OS user.
#
# The cluster trusts every connection, which is safe only because it listens
# on 127.0.0.1 and a socket directory nobody else uses, and lives for one run.

PG_DATA=""

# as_postgres COMMAND...: runs COMMAND as the postgres OS user when root.
as_postgres() {
    if ((EUID == 0)); then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# pg_start DIR PORT: creates a cluster in DIR/data and starts it on
# 127.0.0.1:PORT, waiting at most 60 s for it to accept connections.
pg_start() {
    local dir=$1 port=$2
    mkdir -p "$dir/socket"
    if ((EUID == 0)); then
        chown -R postgres: "$dir"
    fi
    as_postgres initdb -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-instructions \
        >"$dir/initdb.log" 2>&1 || {
        tail -n 20 "$dir/initdb.log" >&2
        die "initdb into $dir/data failed"
    }
    PG_DATA=$dir/data
    # Default durability settings (fsync, synchronous_commit) stay on, so a
    # POST costs what it costs in production on this disk.
    as_postgres pg_ctl -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir/socket -c max_connections=200 -c shared_buffers=256MB" \
        start >"$dir/pg_ctl.log" 2>&1 || {
        tail -n 20 "$dir/server.log" >&2
        die "PostgreSQL did not start on 127.0.0.1:$port"
    }
    log "started PostgreSQL on 127.0.0.1:$port (log $dir/server.log)"
}

# pg_stop: fast shutdown of the cluster pg_start started, if any.
pg_stop() {
    [[ -n $PG_DATA ]] || return 0
    as_postgres pg_ctl -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1 ||
        log "pg_ctl stop failed for $PG_DATA"
    PG_DATA=""
}
