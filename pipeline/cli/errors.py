"""What a failed `lockstep` command says: one line on standard error, and an exit status.

A command does its work and lets exceptions rise; `ReportingGroup`, the app's command
group, turns the failures a user can act on into `lockstep: MESSAGE` and an exit status:
2 when what was asked cannot be done (a setting, a policy, an argument), 1 when something
failed while doing it (the input, a file, a broker). Any other exception is a bug and
keeps its traceback.

The project's own errors read the same in every command (`_project_errors`). An exception
that only means something where it is raised (an OSError while writing the outputs, a
Kafka error while consuming) is named by the command, with `reporting(...)` around the
work it concerns, using one of the failures below: what every exception says lives in
this module. A command's own checks raise `CommandError` with their words.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer
from typer.core import TyperGroup

if TYPE_CHECKING:
    from pathlib import Path


class CommandError(Exception):
    """A command's own check refused to go on: its message, and exit status `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Failure:
    """Exceptions of `kinds` (for which `applies`) read as `message(exc)`, exit `code`;
    a `message` of None exits without a word."""

    kinds: tuple[type[BaseException], ...]
    message: Callable[[Any], str] | None
    code: int
    applies: Callable[[Any], bool] = lambda exc: True

    def matches(self, exc: BaseException) -> bool:
        return isinstance(exc, self.kinds) and self.applies(exc)


@functools.cache
def _project_errors() -> tuple[Failure, ...]:
    """The project's errors, whichever command meets them. Imported at the first failure
    only: a command that starts imports none of the modules they come from."""
    from pipeline.core.settings import ConfigError
    from pipeline.core.sources import InputError
    from pipeline.enforcement.audit import AuditError, AuditStoreLost, UnstorableRecord
    from pipeline.enforcement.policy import PolicyError
    from pipeline.outputs.kafka_publish import PublishError

    return (
        Failure((ConfigError, PolicyError, AuditError), str, 2),
        Failure((InputError, PublishError, UnstorableRecord, AuditStoreLost), str, 1),
    )


def _strerror(exc: OSError) -> str:
    return str(exc.strerror or exc)


def cannot_write_to(out: Path) -> Failure:
    """Writing a run's outputs under `out` failed."""
    return Failure((OSError,), lambda exc: f"cannot write to {out}: {_strerror(exc)}", 1)


CANNOT_WRITE = Failure((OSError,), lambda exc: f"cannot write: {_strerror(exc)}", 1)
CANNOT_READ = Failure((OSError,), lambda exc: f"cannot read {exc.filename}: {exc.strerror}", 1)
BAD_ARGUMENT = Failure((ValueError,), str, 2)  # a value given on the command line
BAD_FILE = Failure((ValueError,), str, 1)  # a file that does not hold what it should
OS_ERROR = Failure((OSError,), str, 1)
INTERRUPTED = Failure((KeyboardInterrupt,), None, 130)  # Ctrl-C ends a live run: 128 + SIGINT


def metrics_port_taken(port: int) -> Failure:
    """The metrics server could not listen on `port` (0: no metrics server)."""
    return Failure(
        (OSError,),
        lambda exc: f"cannot serve metrics on port {port}: {_strerror(exc)}",
        2,
        lambda exc: bool(port) and "address" in str(exc).lower(),
    )


def cannot_produce_to(broker: str) -> Failure:
    """Anything that stops `produce`: the broker is down, or refuses."""
    return Failure((Exception,), lambda exc: f"cannot produce to {broker}: {exc}", 1)


def cannot_consume_from(broker: str) -> tuple[Failure, ...]:
    """Kafka is unreachable, or refuses (RuntimeError: the topics are missing)."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    return (
        Failure((KafkaConnectionError,), lambda exc: f"cannot reach Kafka at {broker}", 1),
        Failure((KafkaError, RuntimeError), lambda exc: f"cannot read Kafka at {broker}: {exc}", 1),
    )


@contextmanager
def reporting(*failures: Failure) -> Iterator[None]:
    """Report a `CommandError`, the project's errors, then `failures` (the first that
    matches), as one line and an exit status; let typer's own exits and anything else
    through."""
    try:
        yield
    except CommandError as exc:
        _say(str(exc))
        raise typer.Exit(exc.code) from None
    except (typer.Exit, typer.Abort):  # RuntimeErrors: a command's own ways out
        raise
    except BaseException as exc:
        failure = next((f for f in (*_project_errors(), *failures) if f.matches(exc)), None)
        if failure is None:
            raise
        if failure.message is not None:
            _say(failure.message(exc))
        raise typer.Exit(failure.code) from None


def _say(message: str) -> None:
    from rich.console import Console

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"lockstep: {message}", markup=False, soft_wrap=True
    )


class ReportingGroup(TyperGroup):
    """The `lockstep` group: every command, and every subcommand, runs inside `reporting`."""

    def invoke(self, ctx: typer.Context) -> Any:
        with reporting():
            return super().invoke(ctx)
