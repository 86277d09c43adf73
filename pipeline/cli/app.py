"""The `lockstep` commands.

Each command imports what it needs when it runs, so `lockstep --help`, or a command that
fails on its arguments, starts without the detectors, Kafka or HTTP clients. A failure is
reported by `pipeline.cli.errors`: a command body is just its work.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from pipeline.cli.errors import (
    BAD_ARGUMENT,
    BAD_FILE,
    CANNOT_READ,
    CANNOT_WRITE,
    INTERRUPTED,
    OS_ERROR,
    CommandError,
    ReportingGroup,
    cannot_consume_from,
    cannot_produce_to,
    cannot_write_to,
    metrics_port_taken,
    reporting,
)

if TYPE_CHECKING:
    from pipeline.core.settings import Settings
    from pipeline.embedded.engine import BatchResult
    from pipeline.enforcement.audit import AuditTrail

app = typer.Typer(
    cls=ReportingGroup,
    add_completion=False,
    no_args_is_help=True,
    help="Lockstep: streaming detection of fake traffic and follower jumps.",
)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config", envvar="LOCKSTEP_CONFIG", help="YAML overlay on config/lockstep.yaml."
    ),
]


def _settings(config: Path | None, policy: Path | None = None) -> Settings:
    """Settings, with the enforcement policy checked (and replaced by `policy` if given)."""
    from pipeline.core.settings import load_settings, policy_path
    from pipeline.enforcement.policy import load_policy

    overrides = {"enforcement": {"policy": str(policy.resolve())}} if policy else None
    settings = load_settings(config, overrides)
    load_policy(policy_path(settings))
    return settings


@app.command()
def replay(
    events: Annotated[str, typer.Argument(help="JSONL file, .jsonl.gz, or - for standard input.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the outputs.")],
    config: ConfigOpt = None,
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Enforcement policy to backtest (default: the config's)."),
    ] = None,
    audit: Annotated[
        str | None,
        typer.Option("--audit", help="Audit store (default OUT/audit.sqlite; or postgresql://)."),
    ] = None,
) -> None:
    """Replay a log of events through every enabled detector and the policy."""
    from pipeline.embedded.replay import replay as run_replay

    settings = _settings(config, policy)
    with reporting(cannot_write_to(out)):
        summary = run_replay(events, out, settings, progress=err.is_terminal, audit=audit)
    err.print(
        f"read {summary['inputs']:,} inputs: {summary['events']:,} events, "
        f"{summary['dead_letters']:,} dead letters, {summary['duplicates']:,} duplicates; "
        f"{summary['findings']:,} findings, {summary['actions']:,} actions "
        f"({summary['events_per_s'] or 0:,.0f} inputs/s) -> {out}",
        markup=False,
    )


@app.command()
def run(
    source: Annotated[
        str, typer.Argument(help="JSONL file to read, or - for standard input.")
    ] = "-",
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep reading as the file grows.")
    ] = False,
    demo: Annotated[
        bool, typer.Option("--demo", help="Run the built-in synthetic stream.")
    ] = False,
    out: Annotated[Path, typer.Option("--out", help="Directory for the outputs.")] = Path(
        "lockstep-out"
    ),
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Port for /metrics (0: off).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run the embedded pipeline on a live stream, serving Prometheus metrics."""
    from pipeline.embedded.live import file_lines, run_live, stdin_lines

    settings = _settings(config)
    signal.signal(signal.SIGTERM, _stop)
    port = settings.run.metrics_port if metrics_port is None else metrics_port
    if demo:
        from pipeline.embedded.demo import demo_events, paced

        lines, name = paced(demo_events(), seconds=8.0), "demo"
        err.print(
            f"[bold]Lockstep demo[/]: four hours of a small platform, replayed in a few "
            f"seconds. Metrics on http://localhost:{port}/metrics"
            if port
            else "[bold]Lockstep demo[/]"
        )
    elif source == "-":
        lines, name = stdin_lines(max_line_bytes=settings.input.max_event_bytes), "stdin"
    else:
        if not follow and not Path(source).is_file():
            raise CommandError(f"cannot read {source}: no such file")
        bound = settings.input.max_event_bytes
        lines, name = file_lines(source, follow, max_line_bytes=bound), source
    reader = _Reader(lines)
    try:
        with reporting(metrics_port_taken(port), OS_ERROR, INTERRUPTED):
            engine = run_live(
                reader, name, settings, out, metrics_port=port, on_result=_print_findings
            )
            reader.raise_failure()
    except _Stopped:
        err.print(f"stopped; outputs so far are in {out}", markup=False)
        return
    st = engine.stats
    err.print(
        f"done: {sum(st.events_by_type.values()):,} events, "
        f"{sum(st.dead_letters_by_reason.values()):,} dead letters, "
        f"{st.duplicates:,} duplicates, {sum(st.findings_by_kind.values()):,} findings, "
        f"{sum(st.actions_by_type.values()):,} actions -> {out}",
        markup=False,
    )


class _Stopped(Exception):
    """SIGTERM: a normal shutdown of a live run."""


class _Reader:
    """A live run's lines, read on `run_live`'s reader thread. A failure there (an
    unreadable or corrupt input) would be a traceback on that thread and an exit 0: it
    ends the lines instead, so what was read before is processed and written, and is kept
    for `raise_failure` to raise on the command's own thread, to be reported."""

    def __init__(self, lines: Iterable[bytes]) -> None:
        self.lines = lines
        self.failure: Exception | None = None

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self.lines
        except Exception as exc:  # whatever it is: a project error, or a bug's traceback
            self.failure = exc

    def raise_failure(self) -> None:
        """Raise what ended the lines early, if anything did (once the lines have ended:
        the run has seen the end the reader thread queues after it)."""
        if self.failure is not None:
            raise self.failure


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


def _print_findings(result: BatchResult) -> None:
    for f in result.findings:
        colour = {"critical": "red", "high": "magenta", "medium": "yellow"}.get(f.severity, "cyan")
        err.print(
            f"[{colour}]{f.severity:>8}[/] {f.detector} (Art. {f.article}) "
            f"{f.subject_type} [bold]{f.subject_id}[/]: {f.evidence.get('explanation', '')}"
        )


@app.command()
def worker(
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Port for /metrics (0: off).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Run a distributed worker: the same stages as Faust agents on Kafka.

    Configured by config/ and LOCKSTEP_KAFKA_BROKER, LOCKSTEP_TOPIC_PREFIX,
    LOCKSTEP_PARTITIONS, LOCKSTEP_STORE and LOCKSTEP_DATA_DIR.
    """
    from pipeline.distributed.worker import run_worker

    settings = _settings(config)
    run_worker(settings, settings.run.metrics_port if metrics_port is None else metrics_port)


@app.command()
def produce(
    events: Annotated[str, typer.Argument(help="JSONL file, .jsonl.gz, or - for standard input.")],
    config: ConfigOpt = None,
) -> None:
    """Load a JSONL file into the input topics, one topic per event type."""
    import asyncio

    from pipeline.distributed.produce import produce as run_produce

    settings = _settings(config)
    with reporting(cannot_produce_to(settings.kafka.broker)):
        sent = asyncio.run(run_produce(events, settings))
    total = sum(sent.values())
    err.print(
        f"produced {total:,} records to {settings.kafka.topic_prefix}.events.*: "
        + ", ".join(f"{k} {n:,}" for k, n in sorted(sent.items())),
        markup=False,
    )


@app.command()
def simulate(
    out: Annotated[Path, typer.Option("--out", help="Events file to write (JSONL).")],
    labels: Annotated[Path, typer.Option("--labels", help="Ground-truth labels (JSON).")],
    minutes: Annotated[int, typer.Option("--minutes", help="Event-time span.", min=1)] = 360,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same world.")] = 1,
    scenario: Annotated[
        list[str] | None,
        typer.Option("--scenario", help="Only these campaigns / hard negatives (repeatable)."),
    ] = None,
    scale: Annotated[
        float, typer.Option("--scale", help="Population and rates x this.", min=0.001)
    ] = 1.0,
    cold: Annotated[
        bool,
        typer.Option("--cold", help="No warm-up: everything begins in the first five minutes."),
    ] = False,
) -> None:
    """Simulate a platform: organic traffic, hard negatives and labelled campaigns."""
    from pipeline.lab.simulation import simulate as run_simulate

    with reporting(BAD_ARGUMENT, CANNOT_WRITE):
        result = run_simulate(
            minutes=minutes,
            seed=seed,
            scenarios=scenario,
            out=out,
            labels_out=labels,
            scale=scale,
            cold=cold,
        )
    start = "cold" if cold else "warm"
    err.print(
        f"simulated {minutes} min {start} (seed {seed}): {len(result.campaigns)} campaigns, "
        f"{len(result.hard_negatives)} hard negatives -> {out}, {labels}",
        markup=False,
    )


@app.command()
def evaluate(
    labels: Annotated[Path, typer.Option("--labels", help="Labels from `lockstep simulate`.")],
    findings: Annotated[Path, typer.Option("--findings", help="findings.jsonl to score.")],
    events: Annotated[Path | None, typer.Option("--events", help="The events, for --plot.")] = None,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="Write the report as JSON here.")
    ] = None,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Draw activity, windows and findings (PNG).")
    ] = None,
) -> None:
    """Score a findings file against simulated ground truth."""
    from rich.console import Console

    from pipeline.lab.evaluation import evaluate as run_evaluate
    from pipeline.lab.evaluation import read_findings, render_table
    from pipeline.lab.labels import read_labels

    if plot is not None and events is None:
        raise CommandError("--plot needs --events (the activity it draws)")
    with reporting(CANNOT_READ, BAD_FILE):
        truth = read_labels(labels)
        found = read_findings(findings)
    report = run_evaluate(truth, found)
    render_table(report, Console(highlight=False))
    if json_out is not None:
        json_out.write_bytes(report.to_json())
    if plot is not None and events is not None:
        from pipeline.lab.evaluation.plot import plot as draw  # matplotlib: only when asked

        draw(truth, found, events, plot)


@app.command("config")
def show_config(config: ConfigOpt = None) -> None:
    """Print the effective settings (defaults plus any overlay) as JSON."""
    import json

    import msgspec

    settings = _settings(config)
    sys.stdout.write(json.dumps(msgspec.to_builtins(settings), indent=2) + "\n")


policy_app = typer.Typer(no_args_is_help=True, help="Enforcement policies (config/policy.yaml).")
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    file: Annotated[Path, typer.Argument(help="The policy YAML to check.")],
) -> None:
    """Validate a policy: one clear line and exit status 2 when it cannot be used."""
    from pipeline.enforcement.policy import load_policy

    policy = load_policy(file)
    levels = ", ".join(sorted(policy.credit.levels))
    print(f"{file}: ok, {len(policy.rules)} rules, credit levels {levels}")


audit_app = typer.Typer(no_args_is_help=True, help="The audit trail (Article 19: records).")
app.add_typer(audit_app, name="audit")


def _open_audit(target: str) -> AuditTrail:
    from pipeline.enforcement.audit import open_audit

    if "://" not in target and not Path(target).exists():
        raise CommandError(f"no audit store at {target}")
    return open_audit(target)


@audit_app.command("verify")
def audit_verify(
    trail: Annotated[
        str, typer.Argument(help="The audit store: OUT/audit.sqlite or a postgresql:// URL.")
    ],
) -> None:
    """Recompute the hash chain: exit 1 at the first record changed, removed or inserted."""
    audit = _open_audit(trail)
    count, problem = audit.verify()
    audit.close()
    if problem is not None:
        raise CommandError(f"{trail}: {problem} ({count} records before it hold)", 1)
    print(f"{trail}: ok, {count} records, chain intact")


def _epoch_ms(text: str) -> int:
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CommandError(
            f"not a date or time: {text!r} (e.g. 2026-11-01 or 2026-11-01T08:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


@app.command()
def report(
    trail: Annotated[str, typer.Option("--audit", help="The audit store (file or URL).")],
    start: Annotated[str, typer.Option("--from", help="First day or time (ISO 8601, UTC).")],
    end: Annotated[str, typer.Option("--to", help="End, exclusive (ISO 8601, UTC).")],
    out: Annotated[Path, typer.Option("--out", help="Directory for report.csv and .json.")],
) -> None:
    """The regulator report: actions by article and type, with subjects and reasons."""
    import csv
    import json

    from pipeline.enforcement.audit import regulator_report

    audit = _open_audit(trail)
    data = regulator_report(audit, _epoch_ms(start), _epoch_ms(end))
    audit.close()
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    with open(out / "report.csv", "w", newline="", encoding="utf-8") as handle:
        fields = list(data["rows"][0]) if data["rows"] else ["ts", "action_id", "action"]
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(data["rows"])
    print(f"{data['actions']} actions from {start} to {end} -> {out}/report.csv, report.json")


webhooks_app = typer.Typer(no_args_is_help=True, help="Alert webhooks and their outbox.")
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("deliver")
def webhooks_deliver(
    outbox: Annotated[
        Path, typer.Option("--outbox", help="The outbox (OUT/webhook_outbox.sqlite).")
    ],
    config: ConfigOpt = None,
    wait_s: Annotated[float, typer.Option("--wait-s", help="Keep retrying this long.")] = 30.0,
    dead: Annotated[
        bool, typer.Option("--dead", help="Send dead letters again, their schedule anew.")
    ] = False,
    now: Annotated[
        bool, typer.Option("--now", help="Send pending rows now, not at their due time.")
    ] = False,
) -> None:
    """Deliver what an outbox still holds to the configured endpoints; report what is left.
    Once a receiver is back, --dead sends its dead letters again and --now what waits."""
    import time

    from pipeline.outputs import webhooks

    if not outbox.exists():
        raise CommandError(f"no outbox at {outbox}")
    settings = _settings(config)
    hooks = webhooks.from_settings(settings.webhooks, outbox)
    if hooks is None:
        raise CommandError("no webhook endpoints configured (webhooks.endpoints)")
    box, sender = hooks
    urls = [e.url for e in sender.endpoints]
    try:
        if dead:
            revived = box.revive(urls, time.time())
            for webhook_id, url, _, error in revived:
                err.print(
                    f"resending dead letter: {webhook_id} to {url} (was: {error})", markup=False
                )
            print(f"{len(revived)} dead letters resent")
        if now:
            print(f"{box.hasten(urls, time.time())} pending sent now, before their due time")
        counts = sender.run(wait_s)
        for webhook_id, url, attempts, error in box.dead():
            err.print(
                f"dead letter: {webhook_id} to {url} after {attempts} attempts: {error}",
                markup=False,
            )
    finally:
        sender.close()
        box.close()
    print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "nothing queued")


throttle_app = typer.Typer(no_args_is_help=True, help="The throttling hook for gateways.")
app.add_typer(throttle_app, name="throttle")


@throttle_app.command("serve")
def throttle_serve(
    actions: Annotated[Path, typer.Option("--actions", help="actions.jsonl (followed).")],
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8089,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    now: Annotated[
        str | None, typer.Option("--now", help="Answer as of this time (ISO 8601, UTC).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Answer GET /v1/throttle?account_id=&action= with 200 or 429 and Retry-After."""
    from pipeline.serve.throttle import serve

    settings = _settings(config).throttle

    if not actions.parent.is_dir():
        raise CommandError(f"no directory {actions.parent} for the actions file")
    if not actions.exists():
        print(f"no actions file at {actions} yet: every check is allowed until it appears",
              file=sys.stderr)  # fmt: skip
    serve(str(actions), settings, host, port, _epoch_ms(now) / 1000 if now else None)


review_app = typer.Typer(no_args_is_help=True, help="Review and appeals (Article 20).")
app.add_typer(review_app, name="review")


@review_app.command("serve")
def review_serve(
    out: Annotated[Path, typer.Option("--out", help="The run's output directory.")],
    audit: Annotated[
        str | None, typer.Option("--audit", help="Audit store (default OUT/audit.sqlite).")
    ] = None,
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8090,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    kafka: Annotated[
        bool, typer.Option("--kafka", help="Publish new actions on the actions topic.")
    ] = False,
) -> None:
    """The review desk's API over a run's audit trail; needs review.token's bearer token."""
    import os

    from pipeline.serve.review_api import serve

    settings = _settings(config)
    token = settings.review.token
    if token.startswith("env:"):
        token = os.environ.get(token[4:], "")
    if not token:
        raise CommandError(f"no review token: set {settings.review.token[4:] or 'review.token'}")
    target = audit or str(out / "audit.sqlite")
    if "://" not in target and not Path(target).exists():
        raise CommandError(f"no audit store at {target}")
    serve(out, target, settings, token, host, port, kafka)


@app.command()
def sink(
    out: Annotated[Path, typer.Option("--out", help="Directory for actions.jsonl and more.")],
    audit: Annotated[
        str | None, typer.Option("--audit", help="Audit store (default OUT/audit.sqlite).")
    ] = None,
    config: ConfigOpt = None,
) -> None:
    """Kafka's findings and actions to the audit trail, webhooks and OUT/actions.jsonl."""
    from pipeline.distributed.sink import main as run_sink

    settings = _settings(config)
    with reporting(*cannot_consume_from(settings.kafka.broker)):
        run_sink(settings, out, audit)


console_app = typer.Typer(
    invoke_without_command=True,
    help="The web console over a run's outputs: cases, decisions, look-ups.",
)
app.add_typer(console_app, name="console")


@console_app.callback()
def console(
    ctx: typer.Context,
    out: Annotated[
        Path | None, typer.Option("--out", help="The run's (or the sink's) output directory.")
    ] = None,
    audit: Annotated[
        str | None,
        typer.Option("--audit", help="Audit store (default OUT/audit.sqlite; or postgresql://)."),
    ] = None,
    config: ConfigOpt = None,
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8088,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    kafka: Annotated[
        bool, typer.Option("--kafka", help="Publish new actions on the actions topic.")
    ] = False,
) -> None:
    """Serve the console over OUT, following its files and trail as they grow; a login
    (the review token, or console.users) is needed for everything but /openapi.json."""
    import os

    if ctx.invoked_subcommand is not None:
        return
    if out is None:
        raise CommandError("lockstep console needs --out DIR: the outputs of a run or a sink")
    from pipeline.console.api import serve, unfit_vendor_assets
    from pipeline.core.settings import policy_path
    from pipeline.enforcement.policy import load_policy

    settings = _settings(config)
    token, secret = settings.review.token, settings.console.session_secret
    token = os.environ.get(token[4:], "") if token.startswith("env:") else token
    secret = os.environ.get(secret[4:], "") if secret.startswith("env:") else secret
    if not token and not settings.console.users:
        raise CommandError(
            f"nobody can log in: set {settings.review.token[4:] or 'review.token'} "
            "or configure console.users"
        )
    if not out.is_dir():
        raise CommandError(f"no directory {out} for the outputs")
    target = audit or str(out / "audit.sqlite")
    if "://" not in target and not Path(target).exists():
        raise CommandError(f"no audit store at {target}")
    if unfit := unfit_vendor_assets():  # the pages' charts would not load, or be unchecked
        raise CommandError(
            f"the console's {', '.join(unfit)} is missing or not the pinned one: run `make "
            "vendor` (python3 deploy/vendor.py, from npm), and build any wheel after it"
        )
    policy = load_policy(policy_path(settings))
    serve(out, target, settings, policy, token, secret, host, port, kafka)


@console_app.command("hash-password")
def console_hash_password(
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from standard input (one line).")
    ] = False,
) -> None:
    """Print a password's hash, for a user's `password` in console.users."""
    from pipeline.console.auth import hash_password

    if stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if not password:
        raise CommandError("an empty password is no password")
    print(hash_password(password))
