-- wrk script for bench/run: sets the request method and body from the
-- environment and prints one JSON line with the counts and latencies that
-- bench/stats.py reads.
--
-- BENCH_METHOD (default GET) and BENCH_BODY (default empty) apply to every
-- request; BENCH_CONTENT_TYPE sets Content-Type when a body is sent. wrk
-- counts a response as a status error when its status is 400 or above;
-- bench/run checks with curl beforehand that each target answers exactly 2xx.

local method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
local mean_delay_ms = tonumber(os.getenv("BENCH_MEAN_DELAY_MS") or "0")

wrk.method = method
if body and body ~= "" then
    wrk.body = body
    wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
end

-- With BENCH_MEAN_DELAY_MS set, each connection waits a random time with
-- that mean before each request, so the request rate depends on the wait far
-- more than on how fast the target responds. wrk starts a request's latency
-- clock when it sends the request, after the wait. The waits are
-- exponentially distributed, so arrivals come in bursts the way requests of
-- independent clients do. wrk takes whole milliseconds. Lua's generator is
-- not seeded, so every target gets the same sequence of waits.
if mean_delay_ms > 0 then
    function delay()
        return math.floor(-mean_delay_ms * math.log(1 - math.random()) + 0.5)
    end
end

function done(summary, latency, requests)
    local errors = summary.errors
    io.write(string.format(
        '{"requests":%d,"duration_us":%d,"bytes":%d,' ..
        '"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
        '"status_errors":%d,"timeouts":%d,' ..
        '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
        summary.requests, summary.duration, summary.bytes,
        errors.connect, errors.read, errors.write, errors.status, errors.timeout,
        latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
