"""Exceptions in one line, for the one-line errors and warnings every layer prints (the data and
model stack, the engine, tracking and the launcher alike), and the two errors the CLI turns into
that line with exit 2. Imports nothing, so that ``selfsup --help`` imports neither torch, Ray nor
MLflow."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration problem, reported as one line: ``FILE: key.path: what is wrong``."""


class DataError(ValueError):
    """A dataset problem, reported as one line naming the file and the key."""


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type's name when the message is empty."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` of ``exc`` and of its root cause, when it wraps one
    (compiler errors run to pages, and their first line names only the backend)."""
    parts, seen = [], exc
    while seen is not None:
        text = str(seen).strip().splitlines()
        parts.append(f"{type(seen).__name__}: {text[0] if text else ''}".rstrip(": "))
        seen = seen.__cause__ or getattr(seen, "inner_exception", None)  # Dynamo's BackendCompilerFailed
    return parts[0] if len(parts) == 1 else f"{parts[0]} ({parts[-1]})"
