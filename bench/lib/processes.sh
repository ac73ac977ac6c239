# shellcheck shell=bash
# Process helpers for bench/run: start servers in the background with their
# output in a log file, stop them by PID on exit, wait for them with a
# deadline, and read CPU time and peak RSS from /proc.
#
# Only processes started through start_process are ever signalled; nothing
# here looks processes up by name.

# PIDs started by start_process, in start order, and a label for each.
STARTED_PIDS=()
declare -A STARTED_NAMES=()

# Seconds a process gets after SIGTERM before it is sent SIGKILL.
STOP_GRACE_SECONDS=10

# die MESSAGE...: prints the message to stderr and exits non-zero, which runs
# the EXIT trap and so stops everything started so far.
die() {
    echo "bench: error: $*" >&2
    exit 1
}

# log MESSAGE...: progress line on stderr, so stdout keeps only the report.
log() {
    echo "bench: $*" >&2
}

# start_process NAME LOGFILE COMMAND...: runs COMMAND in the background with
# stdout and stderr in LOGFILE and records its PID; sets STARTED_PID.
start_process() {
    local name=$1 logfile=$2
    shift 2
    "$@" >"$logfile" 2>&1 &
    STARTED_PID=$!
    STARTED_PIDS+=("$STARTED_PID")
    STARTED_NAMES[$STARTED_PID]=$name
    log "started $name (pid $STARTED_PID, log $logfile)"
}

# stop_process PID: SIGTERM, then SIGKILL after STOP_GRACE_SECONDS.
stop_process() {
    local pid=$1 waited=0
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null && ((waited < STOP_GRACE_SECONDS * 10)); do
        sleep 0.1
        waited=$((waited + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "${STARTED_NAMES[$pid]:-pid $pid} ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

# stop_started_processes: stops every recorded process, newest first.
stop_started_processes() {
    local index
    for ((index = ${#STARTED_PIDS[@]} - 1; index >= 0; index--)); do
        stop_process "${STARTED_PIDS[index]}"
    done
    STARTED_PIDS=()
}

# require_running PID: fails with the log tail when the process has exited.
require_running() {
    local pid=$1 logfile=$2
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "--- last lines of $logfile ---" >&2
        tail -n 30 "$logfile" >&2 || true
        die "${STARTED_NAMES[$pid]:-pid $pid} exited early"
    fi
}

# free_port: prints a loopback TCP port that was free a moment ago. The port
# is released before use, so another program could take it in between; the
# readiness checks catch that.
free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# wait_for_http URL PID LOGFILE [CURL_ARGS...]: polls URL until it answers
# 2xx, for at most 30 seconds; fails early when PID exits.
wait_for_http() {
    local url=$1 pid=$2 logfile=$3
    shift 3
    local deadline=$((SECONDS + 30))
    until curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; do
        require_running "$pid" "$logfile"
        if ((SECONDS >= deadline)); then
            tail -n 30 "$logfile" >&2 || true
            die "$url did not answer 2xx within 30 s"
        fi
        sleep 0.1
    done
}

# process_tree PID: prints PID and all its descendants, one a line, read
# from /proc so that no procps tools are needed.
process_tree() {
    local pid=$1 children child
    echo "$pid"
    children=$(cat /proc/"$pid"/task/*/children 2>/dev/null) || true
    for child in $children; do
        process_tree "$child"
    done
}

# cpu_ticks PID: prints user + system CPU time, in clock ticks, of PID and
# its descendants (all threads included, as /proc/<pid>/stat counts them).
cpu_ticks() {
    local total=0 pid stat fields
    for pid in $(process_tree "$1"); do
        stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
        # Field 2 (comm) may contain spaces; everything after the last ")"
        # starts at field 3, so utime (14) and stime (15) are at 11 and 12.
        read -ra fields <<<"${stat##*) }"
        total=$((total + fields[11] + fields[12]))
    done
    echo "$total"
}

# peak_rss_kib PID: prints the sum of VmHWM (peak resident set size) over PID
# and its descendants, in KiB.
peak_rss_kib() {
    proc_status_sum "$1" VmHWM
}

# rss_kib PID: prints the sum of the current VmRSS over PID and its
# descendants, in KiB.
rss_kib() {
    proc_status_sum "$1" VmRSS
}

proc_status_sum() {
    local total=0 pid value
    for pid in $(process_tree "$1"); do
        value=$(awk -v key="$2:" '$1 == key { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${value:-0}))
    done
    echo "$total"
}
