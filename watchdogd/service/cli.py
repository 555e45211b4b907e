"""kvm-watchdog's command line: `main(argv) -> int` (an ExitStatus value), runnable in-process by tests."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Dict, List, Mapping, Optional, TextIO, cast

from .. import __version__
from ..config import Config, resolve_path, to_yaml
from ..printable import PrintableWriter
from ..problems import Problem
from ..report.answer import ExitStatus, as_json, exit_status
from ..report.events import EventSink, journal_sender
from ..report.perfdata import perfdata
from ..report.status import STATUS_FILE, StatusDocument, npd_answer
from ..report.text import diagnosis_text, human, problem_line, status_text
from ..state import StateStore
from .app import build, build_daemon, diagnose_host
from .pipeline import remediate_once, scan_once
from .preflight import ConfigSource
from .runlock import AlreadyRunning, hold_run_lock


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvm-watchdog",
        description="Watch libvirt's QEMU capability probes; find and fix hung ones.",
    )
    parser.add_argument("--version", action="version", version=f"kvm-watchdog {__version__}")
    parser.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        help="config file (default: $KVM_WATCHDOG_CONFIG or /etc/kvm-watchdog/config.yaml)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    check = sub.add_parser(
        "check", help="one full scan that changes nothing; exit 0 ok, 1 warning, 2 critical, 3 unknown"
    )
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.add_argument("--no-latency", action="store_true", help="skip the getDomainCapabilities probe")

    remediate = sub.add_parser(
        "remediate", help="one scan, then the policies applied once; exit status as check, for what is left"
    )
    remediate.add_argument("--dry-run", action="store_true", help="decide and report, act on nothing")
    remediate.add_argument("--json", action="store_true", help="print one JSON object")
    remediate.add_argument("--no-latency", action="store_true", help="skip the getDomainCapabilities probe")

    run = sub.add_parser(
        "run", help="the daemon, in the foreground (systemd Type=notify); exit 0 on a clean stop, 2 on a config error"
    )
    run.add_argument("-v", "--verbose", action="store_true", help="also print each event as a readable line on stdout")
    run.add_argument("--poll", action="store_true", help="watch the probe dirs by polling, not inotify")

    status = sub.add_parser(
        "status", help="what the running daemon saw last; exit 0, or 3 when there is no daemon state"
    )
    status.add_argument("--json", action="store_true", help="print the daemon's status as one JSON object")
    status.add_argument(
        "--npd",
        action="store_true",
        help="node-problem-detector's plugin answer: one line; exit 0 VM starts not blocked, 1 blocked, 2 unknown",
    )

    sub.add_parser(
        "capture-helper",
        help="(run by kvm-watchdog-capture@.service) read one hung probe's threads, asked on stdin, answered on stdout",
    )
    sub.add_parser(
        "hook-runner",
        help="(run by kvm-watchdog-hook@.service) run one hook of the config, asked on stdin, answered on stdout",
    )
    diagnose = sub.add_parser(
        "diagnose",
        help="why probes hang and VMs fail to start, what to do; "
        "exit 0 healthy, 2 a cause found or KVM unusable, 3 unknown",
    )
    diagnose.add_argument(
        "--json", action="store_true", help="print one JSON object: kvm, kernel, probes, signatures, incidents, verdict"
    )

    config = sub.add_parser("config", help="validate or show the config")
    config_sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    config_sub.required = True
    config_check = config_sub.add_parser("check", help="validate a config; FILE:LINE: problem for each error")
    config_check.add_argument("file", nargs="?", help="the file to check (default: the one the watchdog would use)")
    config_sub.add_parser("show", help="the effective config, defaults filled in, as YAML")
    return parser


class Cli:
    """The commands, with their output streams and environment passed in."""

    def __init__(self, out: TextIO, err: TextIO, environ: Mapping[str, str]):
        """out, err: every line written there has its control characters escaped (printable)."""
        self.out = cast(TextIO, PrintableWriter(out))
        self.err = cast(TextIO, PrintableWriter(err))
        self.environ = environ

    def load(self, args: argparse.Namespace) -> Optional[Config]:
        """The config named by --config (or the environment), checked; None when it is not, its problems on stderr."""
        return self.source(args).read(self.err)

    def source(self, args: argparse.Namespace) -> ConfigSource:
        return ConfigSource(*resolve_path(args.config, self.environ))

    def check(self, args: argparse.Namespace) -> ExitStatus:
        config = self.load(args)
        if config is None:
            return ExitStatus.UNKNOWN
        started = time.monotonic()
        obs, findings = scan_once(build(config, read_only=True), with_latency=not args.no_latency)
        took = time.monotonic() - started
        if args.json:
            print(as_json(findings, [], obs.errors), file=self.out)
        else:
            # the plugin format: perfdata after a | on the first line
            first, _, rest = human(findings, [], obs).partition("\n")
            print(f"{first} | {perfdata(findings, obs, config, took)}" + (f"\n{rest}" if rest else ""), file=self.out)
        return exit_status(findings, obs.errors)

    def remediate(self, args: argparse.Namespace) -> ExitStatus:
        config = self.load(args)
        if config is None:
            return ExitStatus.UNKNOWN
        lock = -1
        if not args.dry_run:
            try:
                lock = hold_run_lock(config.state_dir)
            except AlreadyRunning as exc:
                print(
                    f"UNKNOWN not acting: {exc}; it remediates already (see `kvm-watchdog status`), or use --dry-run",
                    file=self.out,
                )
                return ExitStatus.UNKNOWN
            except OSError as exc:
                print(
                    f"UNKNOWN cannot lock {config.state_dir}: {exc.strerror}; not acting without the single-actor "
                    "guard",
                    file=self.out,
                )
                return ExitStatus.UNKNOWN
        try:
            outcome = remediate_once(
                build(config, read_only=args.dry_run), dry_run=args.dry_run, with_latency=not args.no_latency
            )
        finally:
            if lock >= 0:
                os.close(lock)
        actions = [r.to_json() for r in outcome.actions]
        errors = list(outcome.after.errors) + outcome.problems
        if outcome.breaker == "paused":
            errors.append(Problem("remediation paused: the limits (actions per window) were reached"))
        if args.json:
            print(as_json(outcome.findings, actions, errors), file=self.out)
        else:
            print(human(outcome.findings, actions, outcome.after), file=self.out)
            for problem in outcome.problems:
                print(problem_line(problem, "UNKNOWN"), file=self.out)
        return exit_status(outcome.findings, errors)

    def run(self, args: argparse.Namespace) -> ExitStatus:
        source = self.source(args)
        config = source.read(self.err)
        if config is None:
            return ExitStatus.CONFIG_ERROR
        try:
            lock = hold_run_lock(config.state_dir)
        except AlreadyRunning as exc:
            print(f"kvm-watchdog: {exc}", file=self.err)
            return ExitStatus.CRITICAL
        except OSError as exc:  # no state dir can be made: go on, reported by the first scan
            print(
                f"kvm-watchdog: cannot lock {config.state_dir}: {exc.strerror}; going on without the single-daemon "
                "guard",
                file=self.err,
            )
            lock = -1
        sink = EventSink(config.events, journal_sender(), stream=self.err, echo=self.out if args.verbose else None)
        daemon = build_daemon(source, config, self.environ, sink, use_inotify=not args.poll)
        daemon.install_signal_handlers()
        try:
            daemon.run()
        finally:
            if lock >= 0:
                os.close(lock)
        return ExitStatus.OK

    def status(self, args: argparse.Namespace) -> ExitStatus:
        config = self.load(args)
        if config is None:
            return ExitStatus.UNKNOWN
        state = StateStore(config.state_dir, read_only=True)
        current = StatusDocument.read(state)
        if args.npd:
            answer, line = npd_answer(current, time.time())
            print(line, file=self.out)
            return answer  # type: ignore[return-value]  # NPD's own codes, not the monitoring-plugin ones
        if current is None:
            why = (
                "; ".join(str(p) for p in state.problems.drain())
                or f"no daemon state in {state.path(STATUS_FILE)}: is `kvm-watchdog run` running?"
            )
            print(json.dumps({"error": why}) if args.json else problem_line(why, "UNKNOWN"), file=self.out)
            return ExitStatus.UNKNOWN
        if args.json:
            print(json.dumps(dict(current.raw, running=current.running), indent=2), file=self.out)
        else:
            print(status_text(current, time.time()), file=self.out)
        return ExitStatus.OK

    def diagnose(self, args: argparse.Namespace) -> ExitStatus:
        config = self.load(args)
        if config is None:
            return ExitStatus.UNKNOWN
        report = diagnose_host(config)
        print(json.dumps(report.to_json(), indent=2) if args.json else diagnosis_text(report), file=self.out)
        return report.exit_status

    def config(self, args: argparse.Namespace) -> ExitStatus:
        if args.config_command == "show":
            config = self.load(args)
            if config is None:
                return ExitStatus.CONFIG_ERROR
            print(f"# effective config (from {config.source or 'built-in defaults'})", file=self.out)
            print(to_yaml(config), end="", file=self.out)
            return ExitStatus.OK
        path = self.source(args).path if args.file is None else args.file
        checked = ConfigSource(path, required=True).read(self.err)  # errors on stderr, as every other command's
        if checked is None:
            return ExitStatus.CONFIG_ERROR
        for note in checked.notes:
            print(f"{path}: note: {note}", file=self.out)
        print(f"{path}: valid", file=self.out)
        return ExitStatus.OK


def capture_helper(args: argparse.Namespace) -> ExitStatus:
    """The socket-activated capture helper's one answer (observe/capture_helper.py); the console script
    (service/launcher.py) starts it without this module."""
    from ..observe.capture_helper import serve_stdio

    return ExitStatus(serve_stdio())


def hook_runner(args: argparse.Namespace) -> ExitStatus:
    """The socket-activated hook runner's one run (service/hook_runner.py), of a hook of its own config."""
    from .hook_runner import HookResult, serve

    config = Cli(sys.stderr, sys.stderr, os.environ).load(args)
    if config is None:
        print(json.dumps({"result": HookResult.FAILED.value, "detail": "the hook runner cannot read its config"}))
        return ExitStatus.UNKNOWN
    return ExitStatus(serve(sys.stdin.buffer, sys.stdout.buffer, config.hooks))


def main(
    argv: Optional[List[str]] = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
    environ: Optional[Mapping[str, str]] = None,
) -> int:
    args = _parser().parse_args(argv)
    cli = Cli(out, err, os.environ if environ is None else environ)
    commands: Dict[str, Callable[[argparse.Namespace], ExitStatus]] = {
        "check": cli.check,
        "remediate": cli.remediate,
        "run": cli.run,
        "status": cli.status,
        "config": cli.config,
        "diagnose": cli.diagnose,
        "capture-helper": capture_helper,
        "hook-runner": hook_runner,
    }
    try:
        return int(commands[args.command](args))
    except KeyboardInterrupt:
        return int(ExitStatus.UNKNOWN)
