"""`make bench`: the watchdog's cost and speed, side by side with what an operator would run instead.

Prints a table and writes bench/results.json. Sections: scan, detect (detection
delay and time to recovery), shell (the cron shell-loop alternative), footprint,
soak. Every knob has a flag, so a quick run is `python -m bench.run --quick`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List

from harness.journald import Journald
from harness.sandbox import LibvirtSandbox

from . import capture_cost, detection, footprint, metrics_cost, scan_cost, shell_loop, soak, vmstart

RESULTS = Path(__file__).resolve().parent / "results.json"
SECTIONS = ("scan", "systemd", "detect", "shell", "footprint", "soak", "metrics", "capture", "vmstart")


def machine() -> Dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    libvirt = subprocess.run(["libvirtd", "--version"], capture_output=True, text=True).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "libvirt": libvirt,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _scan_rows(results: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    if "scan" in results:
        out.append("1. scan cost (CPU ms, median of 7)            full scan   idle scan        ps    pgrep   full/ps")
        for r in results["scan"]:
            out.append(
                f"   +{r['extra_processes']:>6} processes ({r['processes']:>6} total)   {r['watchdog_full_scan_ms']:>9.2f} "
                f"{r['watchdog_idle_scan_ms']:>11.2f} {r['ps_ms']:>9.2f} {r['pgrep_ms']:>8.2f}   {r['ratio_to_ps']:>6.2f}x"
            )
        out.append("   goal: full scan at most 1.0x ps at every size")
    if "systemd" in results:
        out.append(
            "1b. scan while a hung probe's dir exists (CPU ms, median of 7)   systemd host   full walk        ps"
        )
        for r in results["systemd"]:
            out.append(
                f"   +{r['extra_processes']:>6} processes ({r['processes']:>6} total)   {r['systemd_scan_ms']:>12.3f} "
                f"{r['full_walk_ms']:>11.2f} {r['ps_ms']:>9.2f}"
            )
        out.append("   goal: the systemd host's scan flat, under 1 ms, at every size")
    return out


def table(results: Dict[str, Any]) -> List[str]:
    out: List[str] = []
    out.extend(_scan_rows(results))
    if "detect" in results:
        d = results["detect"]
        dd, rr = d["detection_delay_s"], d["time_to_recovery_s"]
        out.append(
            f"2. detection delay past the deadline, interval 30s, {d['trials']} trials: p50 {dd['p50'] * 1000:.0f} ms, p95 {dd['p95'] * 1000:.0f} ms, max {dd['max'] * 1000:.0f} ms (goal: p95 <= 200 ms)"
        )
        out.append(
            f"3. time to recovery, probe_hung_after {d['probe_hung_after_s']:g}s: p50 {rr['p50']:.2f} s, p95 {rr['p95']:.2f} s, max {rr['max']:.2f} s (goal: <= {d['recovery_goal_s']:g} s)"
        )
    if "shell" in results:
        s = results["shell"]["time_to_recovery_s"]
        out.append(
            f"   the cron shell loop (once a minute, timeout 30 s), {results['shell']['trials']} trials: p50 {s['p50']:.1f} s, max {s['max']:.1f} s"
        )
    if "footprint" in results:
        for label, f in (
            ("healthy host", results["footprint"]["healthy"]),
            ("+10k processes", results["footprint"]["with_extra_processes"]),
        ):
            out.append(
                f"4. footprint, {label}, {f['window_s']:.0f} s at defaults: RSS max {f['rss_mb_max']} MB, CPU {f['cpu_percent_of_one_core']}% of one core, "
                f"{f['open_fds']} fds (goals: 40 MB, 0.2%)"
            )
    if "soak" in results:
        s = results["soak"]
        e = s["events"]
        out.append(
            f"5. soak {s['minutes']:g} min, interval 0.5 s, a hang every {s['hang_every_s']:g} s: {s['recovered']}/{s['hangs']} recovered; events open/kill ok/resolved "
            f"{e['probe_hung_open']}/{e['kill_probe_ok']}/{e['probe_hung_resolved']} (expected {s['events_expected_each']} each); "
            f"RSS {s['rss_mb']['start']} -> {s['rss_mb']['end']} MB, fds {s['open_fds']['start']} -> {s['open_fds']['end']}"
        )
    if "metrics" in results:
        m = results["metrics"]
        out.append(
            f"6. metrics per scan, +{m['extra_processes']} processes (CPU, median of 200): publish (exposition + textfile) {m['publish_ms']:.3f} ms, "
            f"a scrape's exposition {m['scrape_ms']:.3f} ms, textfile {m['textfile_bytes']} bytes (goal: < {m['goal_ms']:g} ms)"
        )
    if "capture" in results:
        c = results["capture"]
        out.append(
            f"7. capture before kill, one hung probe ({c['members']} members, {c['threads']} threads; CPU, median of 100): "
            f"{c['capture_ms']:.3f} ms (goal: < {c['goal_ms']:g} ms)"
        )
        if "helper_start_ms" in c:
            out.append(
                f"   the capture helper, started to its answer (wall, median of {capture_cost.STARTS}): "
                f"{c['helper_start_ms']:.0f} ms; through the whole CLI {c['helper_start_through_cli_ms']:.0f} ms"
            )
    if "vmstart" in results:
        v = results["vmstart"]
        out.append(
            f"8. a failed VM start told, interval {v['interval_s']} s, {v['trials']} trials: log line to vm_start_failed p50 {v['delay_s']['p50'] * 1000:.0f} ms, "
            f"max {v['delay_s']['max'] * 1000:.0f} ms (goal: < {v['goal_s']:g} s)"
        )
    return out


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(prog="make bench")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated sections of {', '.join(SECTIONS)}")
    parser.add_argument("--sizes", default="100,1000,10000")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--hung-after", type=float, default=2.0)
    parser.add_argument("--shell-trials", type=int, default=3)
    parser.add_argument("--footprint-seconds", type=float, default=120)
    parser.add_argument("--load", type=int, default=10000)
    parser.add_argument("--soak-minutes", type=float, default=30)
    parser.add_argument("--quick", action="store_true", help="small numbers everywhere: a smoke run of every section")
    parser.add_argument("--output", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.trials, args.shell_trials, args.footprint_seconds, args.load, args.soak_minutes = (
            "100,1000",
            3,
            1,
            10,
            1000,
            1,
        )
        if args.output == str(RESULTS):
            # a smoke run never overwrites the figures the README quotes
            args.output = str(RESULTS.with_name("results-quick.json"))
    wanted = [s for s in args.only.split(",") if s]
    unknown = set(wanted) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")

    results: Dict[str, Any] = {}
    if set(wanted) != set(SECTIONS) and Path(args.output).exists():
        # a run of some sections keeps the others' figures (each section records its own settings)
        results = json.loads(Path(args.output).read_text())
        results.setdefault("settings_rest", results.get("settings"))
    results.update({"machine": machine(), "settings": vars(args)})
    journald = Journald().ensure()
    box = LibvirtSandbox().start()
    try:
        box.domcaps()
        run = {
            "scan": lambda: scan_cost.measure(box, [int(s) for s in args.sizes.split(",")]),
            "systemd": lambda: scan_cost.measure_systemd(box, [int(s) for s in args.sizes.split(",")]),
            "detect": lambda: detection.measure(box, args.trials, args.hung_after),
            "shell": lambda: shell_loop.measure(box, args.shell_trials),
            "footprint": lambda: footprint.measure(box, args.footprint_seconds, args.load),
            "soak": lambda: soak.measure(box, args.soak_minutes),
            "metrics": lambda: metrics_cost.measure(box, 1000),
            "capture": lambda: capture_cost.measure(box),
            "vmstart": lambda: vmstart.measure(box, min(args.trials, 10)),
        }
        for section in wanted:
            print(f"-- {section} ...", file=sys.stderr, flush=True)
            results[section] = run[section]()
            # what is done is kept if a later section fails
            Path(args.output).write_text(json.dumps(results, indent=1) + "\n")
    finally:
        box.destroy()
        journald.close()
    print("\n".join(table(results)))
    print(
        f"\nmachine: {results['machine']['cpus']} CPUs ({results['machine']['cpu_model']}), kernel {results['machine']['kernel']}, {results['machine']['libvirt']}"
    )
    print(f"written: {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
