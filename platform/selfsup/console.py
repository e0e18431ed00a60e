"""The console a person reads, apart from the output of the libraries underneath.

:func:`to_log` sends everything the process writes to stdout and stderr (Python's streams and
the file descriptors beneath them, so Ray's C++ core and the worker output Ray forwards too) to a
log file, and hands back a stream to the real console for the lines meant for a person;
:func:`quiet` is how ``selfsup train`` and ``sweep`` use it (a header naming the log, ``--verbose``)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from selfsup import storage


def log_path(root: str, name: str, file: str) -> Path:
    """Where a command's Ray output goes: ``<root>/<name>/<file>`` beside the run's or sweep's
    checkpoints when the storage ``root`` is a local folder, else ``./selfsup-logs/<name>-<file>``."""
    if storage.is_local(root):
        return Path(storage.local_path(root)) / name / file
    return Path("selfsup-logs") / f"{name}-{file}"


_consoles: list[TextIO] = []


def current() -> TextIO:
    """The console: the stream :func:`to_log` handed out (the innermost one open), else stdout."""
    return _consoles[-1] if _consoles else sys.stdout


@contextlib.contextmanager
def to_log(path: str | Path) -> Iterator[TextIO]:
    """While open, stdout and stderr (descriptors 1 and 2) append to ``path``; yields the console
    (also :func:`current` meanwhile)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved, streams = (os.dup(1), os.dup(2)), (sys.stdout, sys.stderr)
    console = os.fdopen(os.dup(1), "w", buffering=1)
    with open(path, "a", buffering=1) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        # Python's streams too, for when they are not the descriptors (a test's capture, a notebook)
        sys.stdout = sys.stderr = log
        _consoles.append(console)
        try:
            yield console
        finally:
            _consoles.pop()
            sys.stdout, sys.stderr = streams
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            console.close()


@contextlib.contextmanager
def quiet(log: Path, header: str, verbose: bool = False) -> Iterator[TextIO]:
    """A command's console: with ``verbose``, stdout as it is; else ``header`` (which should name
    ``log``) is printed and everything else goes to ``log`` (:func:`to_log`). Yields the console."""
    if verbose:
        yield sys.stdout
        return
    log.parent.mkdir(parents=True, exist_ok=True)
    print(header, flush=True)
    with to_log(log) as console:
        yield console
