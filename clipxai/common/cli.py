"""How every clipxai command turns an error into one line and an exit status.

    with cli_errors():
        result = run(...)

- ``ClipxaiError``: ``error: <message>`` on stderr, exit ``error.exit_code`` (2;
  3 when weights could not be downloaded);
- ``OSError`` that escaped the checks (a full disk, a file removed mid-run):
  one line naming the file, exit 2;
- Ctrl-C or SIGTERM (see ``terminate_as_interrupt``): ``interrupted``, exit 130.

Never a traceback.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from typing import Iterator

import click

from clipxai.errors import ClipxaiError

EXIT_INTERRUPTED = 130


def fail(message: str, code: int = 2):
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


@contextlib.contextmanager
def cli_errors(interrupted: str = "interrupted") -> Iterator[None]:
    try:
        with terminate_as_interrupt():
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
def terminate_as_interrupt() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt inside the block, so ``kill`` cleans up like Ctrl-C
    (temporary files removed by their ``finally``/``except`` blocks). Main thread only."""
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
def deferred_interrupts() -> Iterator[None]:
    """Ctrl-C and SIGTERM inside the block take effect at its end (as KeyboardInterrupt), so a step that
    writes two things (a video frame and its JSON line) is never cut between them. Main thread only."""
    caught = []

    def handler(signum, frame):
        caught.append(signum)
    try:
        previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if caught:
        raise KeyboardInterrupt(f"signal {caught[0]}")
