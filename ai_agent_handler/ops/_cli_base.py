"""What every ``ai-agent-rollout`` command shares: exit codes, the one-line error, the actor."""

from __future__ import annotations

import getpass
import os

from .. import _aws
from ..exceptions import FlagConfigError

__all__ = [
    "ACTOR_ENV",
    "EXIT_CONFLICT",
    "EXIT_ERROR",
    "EXIT_INVALID",
    "EXIT_NOT_DONE",
    "EXIT_OK",
    "EXIT_TIMEOUT",
    "EXIT_USAGE",
    "PROG",
    "CliError",
    "actor",
    "location",
    "printable",
]

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
