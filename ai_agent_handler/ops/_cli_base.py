"""What every ``ai-agent-rollout`` command shares: exit codes, the one-line error, the actor."""

from __future__ import annotations

import argparse
import functools
import getpass
import os
from collections.abc import Callable
from typing import TypeVar

from .. import _aws
from ..exceptions import (
    BackfillError,
    ConflictError,
    FlagConfigError,
    FlagEditError,
    FlagFileError,
    MetricsError,
    PartitionKeyError,
    RampError,
    StoreError,
)

_T = TypeVar("_T")

PROG = "ai-agent-rollout"
ACTOR_ENV = "AI_AGENT_ROLLOUT_ACTOR"

#: Done, or nothing to do (an edit that changes nothing, a file already seeded, a tick
#: that holds).
EXIT_OK = 0
#: Reading or writing failed (missing file or folder, permission, AWS error); nothing written.
EXIT_ERROR = 1
#: The command line is wrong (nothing was read or written).
EXIT_USAGE = 2
#: The flag file is invalid, or the edit would make it invalid / cannot apply; nothing written.
EXIT_INVALID = 3
#: Someone else changed the file meanwhile (S3 ETag) or holds the lock; nothing written.
EXIT_CONFLICT = 4
#: The answer is "no": the ramp stopped short (paused or aborted), or the flag cannot be
#: retired yet (``retire-check``).
EXIT_NOT_DONE = 5
#: ``ramp status --wait`` / ``ramp run``: the ramp was still running when ``--timeout`` ran out.
EXIT_TIMEOUT = 6


#: The exit code of each error a command ends with: the first entry it is an instance of.
#: A :class:`CliError` carries its own.
EXIT_CODES: tuple[tuple[type[Exception], int], ...] = (
    (ConflictError, EXIT_CONFLICT),
    (StoreError, EXIT_ERROR),
    (MetricsError, EXIT_ERROR),
    (BackfillError, EXIT_ERROR),
    (FlagFileError, EXIT_INVALID),
    (FlagEditError, EXIT_INVALID),
    (RampError, EXIT_INVALID),
    (FlagConfigError, EXIT_USAGE),
    (PartitionKeyError, EXIT_USAGE),
)


#: The command-line option of each parameter a library error may ask for (others: the
#: parameter's name as an option, ``lock_timeout`` -> ``--lock-timeout``).
OPTIONS = {"source": "--file", "phase": "--metrics-phase"}


def with_options(err: Exception) -> str:
    """The error's message and, when it names the arguments that would let the call go
    through, those as options: ``... (--metrics-phase NAME)``."""
    wanted = [
        f"{OPTIONS.get(name, '--' + name.replace('_', '-'))} {value}".strip()
        for name, value in getattr(err, "options", {}).items()
    ]
    return f"{err} (run it with {' '.join(wanted)})" if wanted else str(err)


def exit_code(err: Exception) -> int | None:
    """The exit code ``err`` ends a command with; None for an error not in the table."""
    if isinstance(err, CliError):
        return err.code
    return next((code for kind, code in EXIT_CODES if isinstance(err, kind)), None)


class CliError(Exception):
    """An error reported as one line on stderr with its exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def actor() -> str:
    """Who runs the command, for the audit record: ``$AI_AGENT_ROLLOUT_ACTOR``, else the OS user."""
    named = os.environ.get(ACTOR_ENV)
    if named:
        return named
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return f"uid:{os.getuid()}"


def printable(text: str) -> str:
    """``text`` safe to show on a terminal: every non-printable character (C0 and C1
    controls such as ESC, line and paragraph separators, bidi and other format characters)
    written as an escape the way ``repr`` does (``\\x1b``, ``\\u202e``)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


def location(text: str) -> str:
    """A ``--file``/``FILE`` value: a path, or an S3 URI in its one spelling
    (``S3://b/k`` is ``s3://b/k``; ``s3:/b/k`` and other malformed ones are refused, exit 2)."""
    if not _aws.is_s3_uri(text):
        return text
    try:
        return _aws.s3_uri(text)
    except FlagConfigError as err:
        raise CliError(str(err), EXIT_USAGE) from err


def argument_type(parse: Callable[[str], _T], *errors: type[Exception]) -> Callable[[str], _T]:
    """``parse`` as an argparse ``type=``: its ``errors`` (default :class:`ValueError`) become
    :class:`argparse.ArgumentTypeError`, so the usage error shows their message as it is."""
    caught = errors or (ValueError,)

    @functools.wraps(parse)
    def convert(text: str) -> _T:
        try:
            return parse(text)
        except caught as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    return convert


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type=`` for a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise ValueError(f"must be {minimum} or more, got {value}")
        return value

    return argument_type(parse)
