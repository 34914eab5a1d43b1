"""The terminal side of every command: one-line errors, exit codes, signals and a click ``Reporter``.

    with cli_errors(), stop_on_signals() as stop:
        summary = run_segment(job, ConsoleReporter(), stop)

- ``ClipxaiError``: ``error: <message>`` on stderr, exit ``error.exit_code`` (2;
  3 when weights could not be downloaded);
- ``OSError`` that escaped the checks (a full disk, a file removed mid-run):
  one line naming the file, exit 2;
- Ctrl-C or SIGTERM: ``stop_on_signals`` turns the first into a stop request the
  runner honours after the item in progress (it reports what was done, exit 130);
  a second one, or a signal outside such a block, ends the command at once
  (``interrupted``, exit 130). Never a traceback.

Signals are handled here, in the commands, and nowhere in the library.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from typing import Iterator

import click

from clipxai.common.report import Reporter
from clipxai.errors import ClipxaiError

EXIT_INTERRUPTED = 130
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def fail(message: str, code: int = 2):
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


@contextlib.contextmanager
def cli_errors(interrupted: str = "interrupted") -> Iterator[None]:
    """Errors of the block as one line and an exit status (module docstring)."""
    try:
        with _terminate_as_interrupt():
            yield
    except ClipxaiError as e:
        fail(str(e), e.exit_code)
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        fail(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        click.secho(interrupted, fg="red", err=True)
        sys.exit(EXIT_INTERRUPTED)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt inside the block, so ``kill`` cleans up like Ctrl-C. Main thread only."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """Inside the block the first Ctrl-C or SIGTERM sets the yielded event (runners stop after the image
    or frame in progress); a second one raises KeyboardInterrupt at once. Main thread only."""
    stop = threading.Event()

    def handler(signum, frame):
        if stop.is_set():
            raise KeyboardInterrupt(f"signal {signum}")
        stop.set()
        click.secho("stopping after the item in progress (again to stop at once)", fg="red", err=True)
    try:
        previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread
        yield stop
        return
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class ConsoleReporter(Reporter):
    """Reporter for the terminal: steps on stdout, notes and warnings on stderr, click progress bars
    (a counter line where the total is unknown)."""

    def step(self, message: str) -> None:
        click.echo(f"• {message}")

    def note(self, message: str) -> None:
        click.echo(f"  {message}", err=True)

    def warn(self, message: str) -> None:
        click.secho(f"WARNING: {message}", fg="red", bold=True, err=True)

    def table(self, lines: list[str]) -> None:
        click.echo("\n".join(["", *lines, ""]))

    @contextlib.contextmanager
    def progress(self, total: int | None, label: str):
        if not total:
            counter = _Counter(label)
            yield counter.advance
            counter.close()
            return
        with click.progressbar(length=total, label=f"  {label}", show_pos=True, show_eta=True,
                               item_show_func=lambda info: info, file=sys.stderr) as bar:
            yield lambda n=1, info=None: bar.update(n, info)


class _Counter:
    """``label: N, info`` rewritten on one stderr line at most twice a second."""

    def __init__(self, label: str):
        self.label, self.done, self.shown, self.clock = label, 0, 0.0, time.perf_counter

    def advance(self, n: int = 1, info: str | None = None) -> None:
        self.done += n
        now = self.clock()
        if now - self.shown >= 0.5:
            self.shown = now
            click.echo(f"\r  {self.label}: {self.done}" + (f", {info}" if info else ""), nl=False, err=True)

    def close(self) -> None:
        if self.done:
            click.echo(err=True)


COMMAND_EXIT_HELP = "Exit status: 0 all done, 1 some inputs failed (listed), 2 bad input, 130 interrupted."
