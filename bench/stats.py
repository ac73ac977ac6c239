#!/usr/bin/env python3
"""Summarise bench/run measurements into a Markdown report.

bench/run appends one JSON object a line to a results file:

* a run: {"kind": "run", "target", "round", "mean_delay_ms", "clk_tck",
  "cpu_ticks", "peak_rss_kib"} plus the fields wrk-report.lua prints
  (requests, duration_us, the error counts, p50_us, p90_us, p99_us, max_us);
  a mean delay of 0 marks a run at full speed, a positive one a paced run;
* idle connections: {"kind": "idle", "when", "connections",
  "rss_before_kib", "rss_idle_kib"}, as idle_connections.py prints it plus
  a label saying when it was taken;
* a fact: {"kind": "fact", "name", "value"}, such as whether the list
  query's plan uses the index (`list query uses ...`);
* key-set fetches: {"kind": "key_set", "target", "fetches", "seconds",
  "periods", "max_age"}, one per edge-proxy, where periods is how many
  key-set refresh periods (the key set's max-age) its lifetime spans.

The subcommands `record`, `idle`, `fact` and `key-set` append one entry
each. `report` prints medians with the min-max spread, the ratios against
nginx and HAProxy from the same results file, the paced runs in a table of
their own, and each performance target of hanko-edge as met or missed. It
exits 1 when any run saw a non-2xx response or a socket error, or when an
expected target has no run. A missed performance target never fails it,
because the bench measures and does not judge the machine. Standard library
only.
"""

import argparse
import json
import statistics
import sys

# Display order and labels of the targets bench/run measures.
PROXY_TARGETS = [
    ("direct", "direct to the upstream"),
    ("nginx", "nginx proxy_pass, keep-alive, no auth"),
    ("pingora", "minimal Pingora proxy, no auth"),
    ("haproxy", "HAProxy jwt_verify RS256"),
    ("edge-cache", "edge-proxy, token cache on"),
    ("edge-nocache", "edge-proxy, token cache off"),
]
# The edge-proxy binary given with `bench/run --baseline`, to compare builds.
BASELINE_TARGET = ("edge-baseline", "edge-proxy baseline binary, token cache on")
PATH_TARGETS = [
    ("list-direct", "GET list, item-api direct"),
    ("list-edge", "GET list, through edge-proxy"),
    ("create-direct", "POST item, item-api direct"),
    ("create-edge", "POST item, through edge-proxy"),
    ("list-small-direct", "GET list, small table, item-api direct"),
    ("list-small-edge", "GET list, small table, through edge-proxy"),
]
ERROR_FIELDS = ["connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"]

# hanko-edge's performance targets, as ratios between targets of one run
# (the limits docs/benchmarks.md states).
EDGE_CACHE_VS_NGINX_MIN = 1.0
EDGE_NOCACHE_VS_HAPROXY_MIN = 1.0
EDGE_P99_VS_NGINX_MAX = 1.5
# A paced comparison holds only when both targets ran at about one rate.
PACED_RATE_TOLERANCE = 0.05
PATH_EDGE_VS_DIRECT_MIN = 0.85
LIST_P50_LARGE_VS_SMALL_MAX = 1.3
IDLE_RSS_MAX_MIB = 64.0
KEY_SET_FETCHES_MAX = 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    record = commands.add_parser("record", help="append one run read from wrk's output on stdin")
    record.add_argument("--results", required=True, help="JSON-lines results file")
    record.add_argument("--target", required=True)
    record.add_argument("--round", type=int, required=True)
    record.add_argument(
        "--mean-delay-ms", type=int, default=0, help="mean wait before each request; 0 for full speed"
    )
    record.add_argument("--cpu-ticks", type=int, required=True, help="CPU clock ticks the process used")
    record.add_argument("--clk-tck", type=int, required=True, help="clock ticks per second")
    record.add_argument("--peak-rss-kib", type=int, required=True)

    fact = commands.add_parser("fact", help="append one named reading")
    fact.add_argument("--results", required=True)
    fact.add_argument("name")
    fact.add_argument("value")

    idle = commands.add_parser("idle", help="append idle_connections.py's reading, read from stdin")
    idle.add_argument("--results", required=True)
    idle.add_argument("--when", required=True, help="label, such as 'before the load'")

    key_set = commands.add_parser("key-set", help="append the key-set fetch count of one edge-proxy")
    key_set.add_argument("--results", required=True)
    key_set.add_argument("--target", required=True)
    key_set.add_argument("--fetches", type=int, required=True)
    key_set.add_argument("--seconds", type=int, required=True, help="how long the proxy ran")
    key_set.add_argument("--periods", type=int, required=True, help="refresh periods in that time, rounded up")
    key_set.add_argument("--max-age", type=int, required=True, help="the key set's max-age, in seconds")

    report = commands.add_parser("report", help="print the Markdown report")
    report.add_argument("--results", required=True)
    report.add_argument("--smoke", action="store_true", help="check completeness only, assert no target")
    report.add_argument("--skip-path", action="store_true", help="the whole-path part was not run")
    report.add_argument("--baseline", action="store_true", help="a baseline edge-proxy binary was loaded too")

    args = parser.parse_args()
    if args.command == "record":
        return record_run(args)
    if args.command == "fact":
        append(args.results, {"kind": "fact", "name": args.name, "value": args.value})
        return 0
    if args.command == "idle":
        reading = json.loads(sys.stdin.read())
        reading.update(kind="idle", when=args.when)
        append(args.results, reading)
        return 0
    if args.command == "key-set":
        append(
            args.results,
            {
                "kind": "key_set",
                "target": args.target,
                "fetches": args.fetches,
                "seconds": args.seconds,
                "periods": args.periods,
                "max_age": args.max_age,
            },
        )
        return 0
    return print_report(args)


def record_run(args: argparse.Namespace) -> int:
    wrk_lines = [line for line in sys.stdin.read().splitlines() if line.startswith("{")]
    if not wrk_lines:
        print(f"stats.py: no JSON line from wrk for target {args.target}", file=sys.stderr)
        return 1
    run = json.loads(wrk_lines[-1])
    run.update(
        kind="run",
        target=args.target,
        round=args.round,
        mean_delay_ms=args.mean_delay_ms,
        cpu_ticks=args.cpu_ticks,
        clk_tck=args.clk_tck,
        peak_rss_kib=args.peak_rss_kib,
    )
    append(args.results, run)
    pace = f", paced ({args.mean_delay_ms} ms mean wait)" if args.mean_delay_ms else ""
    print(
        f"bench: {args.target} round {args.round}{pace}: {requests_per_second(run):,.0f} req/s, "
        f"p99 {run['p99_us'] / 1000:.2f} ms, errors {error_count(run)}",
        file=sys.stderr,
    )
    return 0


def append(path: str, entry: dict) -> None:
    with open(path, "a", encoding="utf-8") as results:
        results.write(json.dumps(entry) + "\n")


def requests_per_second(run: dict) -> float:
    return run["requests"] / (run["duration_us"] / 1e6)


def cpu_us_per_request(run: dict) -> float:
    if run["requests"] == 0:
        return float("nan")
    return run["cpu_ticks"] / run["clk_tck"] * 1e6 / run["requests"]


def error_count(run: dict) -> int:
    return sum(run[field] for field in ERROR_FIELDS)


class Summary:
    """Median and min-max of each measure over the rounds of one target."""

    def __init__(self, runs: list[dict]):
        self.rounds = len(runs)
        self.rps = spread([requests_per_second(run) for run in runs])
        self.p50_ms = spread([run["p50_us"] / 1000 for run in runs])
        self.p99_ms = spread([run["p99_us"] / 1000 for run in runs])
        self.cpu_us = spread([cpu_us_per_request(run) for run in runs])
        self.peak_rss_mib = max(run["peak_rss_kib"] for run in runs) / 1024
        self.errors = sum(error_count(run) for run in runs)
        self.requests = sum(run["requests"] for run in runs)


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def print_report(args: argparse.Namespace) -> int:
    runs: dict[str, list[dict]] = {}
    paced_runs: dict[str, list[dict]] = {}
    facts: dict[str, str] = {}
    key_sets: list[dict] = []
    idle_readings: list[dict] = []
    with open(args.results, encoding="utf-8") as results:
        for line in results:
            entry = json.loads(line)
            if entry["kind"] == "run" and entry.get("mean_delay_ms", 0) > 0:
                paced_runs.setdefault(entry["target"], []).append(entry)
            elif entry["kind"] == "run":
                runs.setdefault(entry["target"], []).append(entry)
            elif entry["kind"] == "key_set":
                key_sets.append(entry)
            elif entry["kind"] == "idle":
                idle_readings.append(entry)
            else:
                facts[entry["name"]] = entry["value"]
    summaries = {target: Summary(target_runs) for target, target_runs in runs.items()}
    paced = {target: Summary(target_runs) for target, target_runs in paced_runs.items()}

    problems = []
    proxy_targets = PROXY_TARGETS + ([BASELINE_TARGET] if args.baseline else [])
    expected = proxy_targets + ([] if args.skip_path else PATH_TARGETS)
    for target, label in expected:
        if target not in summaries:
            problems.append(f"target `{target}` ({label}) has no measurement")
        elif summaries[target].requests == 0:
            problems.append(f"target `{target}` ({label}) answered no request")
    for target, label in proxy_targets:
        if target not in paced:
            problems.append(f"target `{target}` ({label}) has no paced measurement")
        elif paced[target].requests == 0:
            problems.append(f"target `{target}` ({label}) answered no request in the paced runs")
    for kind, group in (("", summaries), ("paced ", paced)):
        for target, summary in group.items():
            if summary.errors:
                problems.append(
                    f"target `{target}` had {summary.errors} non-2xx responses or socket errors "
                    f"in its {kind}runs; every request must succeed"
                )

    print("## Proxy targets\n")
    print_table(summaries, proxy_targets, baselines=[("nginx", "nginx"), ("haproxy", "HAProxy")])
    print_floor_ratios(summaries)
    print_paced_table(paced, proxy_targets)
    if args.baseline:
        print_baseline_ratios(runs, paced_runs)
    if not args.skip_path:
        print("\n## Whole path\n")
        print_table(summaries, PATH_TARGETS, baselines=[])
        print_path_ratios(summaries)
    print("\n## Other readings\n")
    for idle in idle_readings:
        print(
            f"- edge-proxy RSS with {idle['connections']} idle keep-alive connections, {idle['when']}: "
            f"{idle['rss_idle_kib'] / 1024:.1f} MiB (before opening them: {idle['rss_before_kib'] / 1024:.1f} MiB)"
        )
    for name, value in facts.items():
        if name.startswith("list query uses"):
            print(f"- {name}: {value}")
    for key_set in key_sets:
        print(
            f"- key-set fetches by {key_set['target']}: {key_set['fetches']} in {key_set['seconds']} s, "
            f"which spans {key_set['periods']} refresh period(s) of {key_set['max_age']} s"
        )
        if key_set["fetches"] == 0:
            problems.append(f"{key_set['target']} never fetched the key set, so the count cannot be right")
    if not args.smoke:
        print("\n## Targets\n")
        print_targets(summaries, paced, facts, key_sets, idle_readings, args.skip_path)

    if problems:
        print("\n## Failures\n")
        for problem in problems:
            print(f"- {problem}")
        for problem in problems:
            print(f"bench: FAILED: {problem}", file=sys.stderr)
        return 1
    return 0


def print_table(summaries: dict, targets: list, baselines: list) -> None:
    header = "| target | req/s | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | non-2xx |"
    rule = "|---|---:|---:|---:|---:|---:|---:|"
    for _, name in baselines:
        header += f" req/s vs {name} | p99 vs {name} |"
        rule += "---:|---:|"
    print(header)
    print(rule)
    for target, label in targets:
        summary = summaries.get(target)
        if summary is None:
            continue
        row = (
            f"| {label} | {fmt_spread(summary.rps, '{:,.0f}')} | {fmt_spread(summary.p50_ms, '{:.2f}')} "
            f"| {fmt_spread(summary.p99_ms, '{:.2f}')} | {fmt_spread(summary.cpu_us, '{:.1f}')} "
            f"| {summary.peak_rss_mib:.1f} | {summary.errors} |"
        )
        for baseline, _ in baselines:
            base = summaries.get(baseline)
            if base is None:
                row += " – | – |"
                continue
            row += f" {ratio(summary.rps[0], base.rps[0])} | {ratio(summary.p99_ms[0], base.p99_ms[0])} |"
        print(row)
    print(
        "\nMedian over rounds, min–max in brackets. CPU µs/req is the user + system CPU time "
        "of the process under test (the proxy; the upstream for `direct`; item-api or "
        "edge-proxy in the whole path) divided by the requests wrk completed. "
        "Ratios compare medians."
    )


def print_floor_ratios(summaries: dict) -> None:
    """Prints nginx's and each edge-proxy target's ratios to the minimal Pingora proxy."""
    floor = summaries.get("pingora")
    if floor is None:
        return
    print("\n| target | req/s ÷ minimal Pingora | CPU per request ÷ minimal Pingora |")
    print("|---|---:|---:|")
    for target, label in PROXY_TARGETS:
        if target in ("nginx", "edge-cache", "edge-nocache") and target in summaries:
            summary = summaries[target]
            print(
                f"| {label} | {ratio(summary.rps[0], floor.rps[0])} "
                f"| {ratio(summary.cpu_us[0], floor.cpu_us[0])} |"
            )


def print_paced_table(paced: dict, targets: list) -> None:
    """Prints the paced runs, where every target gets about the same request rate."""
    print("\n### Paced: the same request rate for every target\n")
    print_table(paced, targets, baselines=[("nginx", "nginx")])
    print(
        "\nEach connection waits a random time before each request, so the rate depends on the "
        "wait and hardly on the target, and no target runs at its limit. A p99 ratio holds only "
        f"where the req/s ratio is within {PACED_RATE_TOLERANCE:.0%} of 1."
    )


def print_baseline_ratios(runs: dict, paced_runs: dict) -> None:
    """Prints the current edge-proxy against the baseline binary, round by round.

    Both ran with the token cache on, one after the other in every round, so
    a ratio per round cancels most of the drift between rounds.
    """
    print("\n### Current edge-proxy ÷ baseline binary, token cache on\n")
    print("| load | rounds | req/s | p50 | p99 | CPU per request |")
    print("|---|---:|---:|---:|---:|---:|")
    measures = [
        requests_per_second,
        lambda run: run["p50_us"],
        lambda run: run["p99_us"],
        cpu_us_per_request,
    ]
    for label, group in (("full speed", runs), ("paced", paced_runs)):
        current = {run["round"]: run for run in group.get("edge-cache", [])}
        baseline = {run["round"]: run for run in group.get(BASELINE_TARGET[0], [])}
        rounds = sorted(current.keys() & baseline.keys())
        if not rounds:
            continue
        cells = []
        for measure in measures:
            ratios = [measure(current[number]) / measure(baseline[number]) for number in rounds]
            median, low, high = spread(ratios)
            cells.append(f"{median:.3f}× ({low:.3f}–{high:.3f})")
        print(f"| {label} | {len(rounds)} | " + " | ".join(cells) + " |")
    print("\nMedian of the ratios of each round, min–max in brackets.")


def print_path_ratios(summaries: dict) -> None:
    pairs = [
        ("list", "list-edge", "list-direct"),
        ("create", "create-edge", "create-direct"),
        ("list, small table", "list-small-edge", "list-small-direct"),
    ]
    print("\n| request | req/s edge-proxy ÷ direct | p50 edge-proxy ÷ direct |")
    print("|---|---:|---:|")
    for label, edge, direct in pairs:
        if edge in summaries and direct in summaries:
            print(
                f"| {label} | {ratio(summaries[edge].rps[0], summaries[direct].rps[0])} "
                f"| {ratio(summaries[edge].p50_ms[0], summaries[direct].p50_ms[0])} |"
            )


def print_targets(
    summaries: dict, paced: dict, facts: dict, key_sets: list, idle_readings: list, skip_path: bool
) -> None:
    rows = []

    def check(name: str, value: float | None, limit: float, at_least: bool, unit: str = "×") -> None:
        if value is None:
            rows.append(f"| {name} | not measured | {limit}{unit} | – |")
            return
        met = value >= limit if at_least else value <= limit
        bound = "≥" if at_least else "≤"
        if met:
            verdict = "met"
        elif at_least:
            verdict = f"missed by {(limit - value) / limit:.0%}"
        else:
            verdict = f"missed by {(value - limit) / limit:.0%}"
        rows.append(f"| {name} | {value:.2f}{unit} | {bound} {limit}{unit} | {verdict} |")

    def rps_ratio(numerator: str, denominator: str) -> float | None:
        if numerator in summaries and denominator in summaries:
            return summaries[numerator].rps[0] / summaries[denominator].rps[0]
        return None

    def p_ratio(numerator: str, denominator: str, field: str) -> float | None:
        if numerator in summaries and denominator in summaries:
            return getattr(summaries[numerator], field)[0] / getattr(summaries[denominator], field)[0]
        return None

    check("edge-proxy with cache ÷ nginx, req/s", rps_ratio("edge-cache", "nginx"), EDGE_CACHE_VS_NGINX_MIN, True)
    check(
        "edge-proxy without cache ÷ HAProxy, req/s",
        rps_ratio("edge-nocache", "haproxy"),
        EDGE_NOCACHE_VS_HAPROXY_MIN,
        True,
    )
    check("edge-proxy with cache ÷ nginx, p99", p_ratio("edge-cache", "nginx", "p99_ms"), EDGE_P99_VS_NGINX_MAX, False)
    check(
        "edge-proxy without cache ÷ nginx, p99",
        p_ratio("edge-nocache", "nginx", "p99_ms"),
        EDGE_P99_VS_NGINX_MAX,
        False,
    )
    for target, label in (("edge-cache", "with cache"), ("edge-nocache", "without cache")):
        name = f"edge-proxy {label} ÷ nginx, p99 at the same request rate (paced)"
        # A zero median means the runs failed, which the failures list reports.
        nginx = paced.get("nginx")
        if target not in paced or nginx is None or 0 in (nginx.rps[0], nginx.p99_ms[0]):
            check(name, None, EDGE_P99_VS_NGINX_MAX, False)
            continue
        rate_ratio = paced[target].rps[0] / nginx.rps[0]
        if abs(rate_ratio - 1) > PACED_RATE_TOLERANCE:
            rows.append(
                f"| {name} | rates differ: {rate_ratio:.2f}× nginx's req/s | ≤ {EDGE_P99_VS_NGINX_MAX}× "
                "| not comparable |"
            )
            continue
        check(name, paced[target].p99_ms[0] / nginx.p99_ms[0], EDGE_P99_VS_NGINX_MAX, False)
    if not skip_path:
        check("whole path list, edge-proxy ÷ direct, req/s", rps_ratio("list-edge", "list-direct"), PATH_EDGE_VS_DIRECT_MIN, True)
        check(
            "whole path create, edge-proxy ÷ direct, req/s",
            rps_ratio("create-edge", "create-direct"),
            PATH_EDGE_VS_DIRECT_MIN,
            True,
        )
        check(
            "list p50, large ÷ small table, through edge-proxy",
            p_ratio("list-edge", "list-small-edge", "p50_ms"),
            LIST_P50_LARGE_VS_SMALL_MAX,
            False,
        )
        check(
            "list p50, large ÷ small table, item-api direct",
            p_ratio("list-direct", "list-small-direct", "p50_ms"),
            LIST_P50_LARGE_VS_SMALL_MAX,
            False,
        )
        large_plan = [value for name, value in facts.items() if name.startswith("list query uses") and "large" in name]
        if large_plan:
            verdict = "met" if large_plan[0] == "yes" else "missed"
            rows.append(f"| list query on the large table uses the (owner_id, id) index | {large_plan[0]} | yes | {verdict} |")
    # The larger reading counts: a proxy lives through load before it idles.
    idle = max(idle_readings, key=lambda reading: reading["rss_idle_kib"], default=None)
    check(
        f"edge-proxy RSS, {idle['connections'] if idle else '?'} idle keep-alive connections ({idle['when'] if idle else '-'})",
        idle["rss_idle_kib"] / 1024 if idle else None,
        IDLE_RSS_MAX_MIB,
        False,
        " MiB",
    )
    worst = max((key_set["fetches"] / key_set["periods"] for key_set in key_sets), default=None)
    check("key-set fetches per refresh period, worst edge-proxy", worst, KEY_SET_FETCHES_MAX, False, "")

    print("| target | measured | required | verdict |")
    print("|---|---:|---:|---|")
    for row in rows:
        print(row)


def fmt_spread(values: tuple[float, float, float], pattern: str) -> str:
    median, low, high = values
    return f"{pattern.format(median)} ({pattern.format(low)}–{pattern.format(high)})"


def ratio(value: float, base: float) -> str:
    if base == 0:
        return "–"
    return f"{value / base:.2f}×"


if __name__ == "__main__":
    sys.exit(main())
