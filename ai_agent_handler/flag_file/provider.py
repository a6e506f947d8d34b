"""``FlagFileProvider``: an OpenFeature provider for flagd-format flag files, live reloaded.

Rules are evaluated by flagd's own Python evaluator (``openfeature-flagd-core``), so
``fractional``, ``starts_with``, ``ends_with``, ``sem_ver``, ``in`` and ``$ref`` behave
exactly as in flagd and every other flagd SDK of the same evaluator generation.

Freshness is checked when a flag is evaluated, at most once per ``min_interval`` (local
file: every evaluation, one ``stat``; S3: 5 s by default), so it works in a Lambda whose
background threads are frozen between invocations. A check that may find something new
(a changed ``stat`` signature, an S3 interval) reads, parses and validates on its own
thread; the evaluation that started it waits for it at most ``refresh_wait`` (sized to the
source: 5 ms for a file, 250 ms for S3, so the first run after a change uses it) and
otherwise goes on with the flags it has (stale while revalidate); other evaluations meanwhile
do not wait. One check runs at a time, bounded by the
source's ``timeout``. A check that finds a new valid version swaps it in and emits
``PROVIDER_CONFIGURATION_CHANGED`` with the changed flag keys.

Faults (unreadable, missing, invalid file, S3 errors, a check past its deadline) keep the
last good flags: the provider logs each distinct fault once, emits ``PROVIDER_ERROR`` and
keeps serving; the next good version brings it back (``PROVIDER_READY``). It never raises
into the caller beyond what OpenFeature turns into the caller's default. A forked child
starts with its own lock and checks.

Cold start: when the live source cannot be read at :meth:`initialize` (within its
``timeout``), the provider loads ``fallback_path`` (the phase file shipped with the
package), logs an error and keeps trying the live source on later evaluations.

:attr:`FlagFileProvider.serving` says where the flags served came from (the handler's
decision record carries it; resolutions keep flagd's metadata as it is): ``flag_source`` is
``"live"`` (the live source), ``"shipped"`` (the source is the phase file shipped with the
package) or ``"fallback"`` (the shipped file, served because the live source could not be
read at start); ``flag_source_fault``, present while the source is faulty, says why the
flags served may be stale or the fallback.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.provider import AbstractProvider, Metadata

from ..exceptions import FlagFileError, SourceUnavailable
from .document import fingerprint, flag_set_version, parse
from .sources import FlagSource, open_source

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

_Event = tuple[ProviderEvent, ProviderEventDetails]


#: Seconds a run waits for a due freshness check before deciding on the flags it has, for a
#: source that names no ``refresh_wait`` of its own (the library's sources do).
DEFAULT_REFRESH_WAIT = 0.005

#: ``flag_source`` values: the flags came from the live source ...
LIVE: Final = "live"
#: ... from the source, which is the phase file shipped with the package ...
SHIPPED: Final = "shipped"
#: ... or from the shipped file, because the live source could not be read at start.
FALLBACK: Final = "fallback"


class FlagFileProvider(AbstractProvider):
    """OpenFeature provider for a flagd-format flag file at a path or ``s3://bucket/key``.

    ``source``: a filesystem path, an ``s3://`` URI or a :class:`~.sources.FlagSource`.
    ``s3_client``: boto3 S3 client for an ``s3://`` source (built lazily when omitted).
    ``min_interval``: seconds between freshness checks (default per source kind).
    ``refresh_wait``: seconds an evaluation waits for a check it started (default: the
    source's, 5 ms for a file and 250 ms for S3); a check that takes longer goes on in the
    background and the evaluation uses the flags it has. ``timeout``: seconds one check may
    take before it counts as a fault (default per source kind: local 2 s, S3 5 s); also how
    long :meth:`initialize` waits for the live source before serving ``fallback_path``.
    ``fallback_path``: file loaded when the source cannot be read at start.
    ``strict``: check files with this library's phase-file rules
    (:func:`~.document.validate`); ``False`` accepts any file flagd accepts.
    ``source_role``: what ``flag_source`` says while the source's flags are served:
    ``"live"`` (default) or ``"shipped"`` (the source is itself the shipped phase file).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | FlagSource,
        *,
        s3_client: S3Client | None = None,
        min_interval: float | None = None,
        refresh_wait: float | None = None,
        timeout: float | None = None,
        fallback_path: str | os.PathLike[str] | None = None,
        expected_bucket_owner: str | None = None,
        strict: bool = True,
        source_role: Literal["live", "shipped"] = LIVE,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__()
        self._source = open_source(
            source,
            s3_client=s3_client,
            min_interval=min_interval,
            expected_bucket_owner=expected_bucket_owner,
        )
        # A cheap "may it have changed?" the evaluation may ask itself (a local stat).
        self._changed: Callable[[], bool] | None = getattr(self._source, "changed", None)
        self._refresh_wait: float = (
            refresh_wait
            if refresh_wait is not None
            else getattr(self._source, "refresh_wait", DEFAULT_REFRESH_WAIT)
        )
        self._timeout = timeout if timeout is not None else getattr(self._source, "timeout", 5.0)
        self._fallback = Path(fallback_path) if fallback_path is not None else None
        self._strict = strict
        self._logger = logger or logging.getLogger(__name__)
        self._core = FlagdCore()
        self._init_state()
        self._loaded: str | None = None  # fingerprint of the flags in self._core
        self._loaded_from: str | None = None
        self._version: str | None = None
        self._fault: str | None = None
        self._role = source_role
        # What `serving` reports: where the flags served came from.
        self._serving: dict[str, str] = {}
        _live.add(self)
        _install_fork_hook()

    def _init_state(self) -> None:
        # Also the state a forked child starts with: the parent's lock may have been held,
        # and its check thread does not exist in the child.
        self._lock = threading.Lock()  # guards the state below and the flags' swap
        self._next_check = 0.0  # time.monotonic() of the next freshness check
        self._job: _Check | None = None  # the check running in the background, if any

    # -- what operators and tests can look at --------------------------------------------
    @property
    def source(self) -> FlagSource:
        """Where the live flag file is read from."""
        return self._source

    @property
    def refresh_wait(self) -> float:
        """Seconds the run that starts a freshness check waits for its answer."""
        return self._refresh_wait

    @property
    def loaded_from(self) -> str | None:
        """The source name or fallback path the current flags came from."""
        return self._loaded_from

    @property
    def version(self) -> str | None:
        """``metadata.version`` of the flags being served."""
        return self._version

    @property
    def fault(self) -> str | None:
        """The current fault (the flags served are the last good ones), or None."""
        return self._fault

    @property
    def serving(self) -> Mapping[str, str]:
        """``flag_source`` (``live``, ``shipped`` or ``fallback``) and, while the source is
        faulty, ``flag_source_fault``: where the flags served come from, and why."""
        return dict(self._serving)

    def _note_serving(self) -> None:
        # Under the lock, whenever _loaded_from or _fault changes.
        if self._loaded_from is None:
            serving: dict[str, str] = {}
        elif self._fallback is not None and self._loaded_from == str(self._fallback):
            serving = {"flag_source": FALLBACK}
        else:
            serving = {"flag_source": self._role}
        if self._fault is not None:
            serving["flag_source_fault"] = self._fault
        self._serving = serving

    @property
    def flag_set_metadata(self) -> Mapping[str, float | int | str | bool]:
        """The loaded file's top-level ``metadata`` (also merged into each flag's metadata)."""
        return self._core.get_flag_set_metadata()

    # -- OpenFeature lifecycle -----------------------------------------------------------
    def get_metadata(self) -> Metadata:
        """Provider name as OpenFeature reports it."""
        return Metadata(name="FlagFileProvider")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Load the live source, or the fallback file when the source cannot be read.

        Waits at most ``timeout`` for the live source; one that answers later still
        replaces the fallback when its answer is good.
        """
        with self._lock:
            job = self._start_check(cold=True)
            self._next_check = time.monotonic() + self._source.min_interval
        job.done.wait(self._timeout)
        with self._lock:
            if self._loaded is not None:
                return  # the live source answered (a late answer may come after a fallback)
            err = job.error or SourceUnavailable(
                f"{self._source.name}: no answer within {self._timeout:g} s"
            )
            self._cold_start_fallback(err)
            # Set after the fallback is applied: serving it does not clear the fault.
            self._fault = _one_line(err)
            self._note_serving()

    def _cold_start_fallback(self, err: Exception) -> None:
        if self._fallback is None:
            self._fault = _one_line(err)
            self._logger.error(
                "flag source %s unreadable at start: %s", self._source.name, self._fault
            )
            raise ProviderNotReadyError(self._fault) from None
        try:
            doc = parse(
                self._fallback.read_bytes(), source=str(self._fallback), strict=self._strict
            )
        except (OSError, FlagFileError) as fallback_err:
            self._logger.error(
                "flag source %s unreadable at start (%s) and fallback %s unusable: %s",
                self._source.name,
                _one_line(err),
                self._fallback,
                fallback_err,
            )
            self._fault = _one_line(err)
            raise ProviderNotReadyError(f"{self._fault}; fallback: {fallback_err}") from None
        self._apply(doc, str(self._fallback), [])
        self._logger.error(
            "flag source %s unreadable at start: %s; serving the shipped file %s (version %s) "
            "and retrying the source",
            self._source.name,
            _one_line(err),
            self._fallback,
            self._version,
        )

    # -- freshness ---------------------------------------------------------------------------
    def _evaluator(self) -> FlagdCore:
        # Fast path: one clock read and a compare; no lock, no stat.
        if time.monotonic() >= self._next_check:
            self._refresh()
        if self._loaded is None:
            raise ProviderNotReadyError(self._fault or "no flags loaded")
        return self._core

    def _refresh(self) -> None:
        """A due freshness check, from an evaluation: it never waits on the source for
        more than ``refresh_wait``.

        A source with a cheap ``changed()`` (a local file: one ``stat``) is asked here; the
        fetch, parse and validation run on a check thread the evaluation waits for at most
        ``refresh_wait``, then it goes on with the flags it has (stale while revalidate).
        While a check runs no other starts; one still running after ``timeout`` is a fault.
        """
        # A thread that finds another one checking evaluates with the current flags.
        if not self._lock.acquire(blocking=False):
            return
        events: list[_Event] = []
        job: _Check | None = None
        try:
            now = time.monotonic()
            if now < self._next_check:
                return
            self._next_check = now + self._source.min_interval
            running = self._job
            if running is not None and not running.done.is_set():
                if now - running.started > self._timeout:
                    message = f"{self._source.name}: no answer within {self._timeout:g} s"
                    self._report_fault(SourceUnavailable(message), events)
                return
            changed = self._changed
            if changed is not None:
                try:
                    if not changed():
                        return
                except Exception as err:  # FlagSourceError, or a source breaking its contract
                    self._report_fault(err, events)
                    return
            job = self._start_check(cold=False)
        finally:
            self._lock.release()
            for event, details in events:  # outside the lock: handlers may evaluate flags
                self.emit(event, details)
        job.done.wait(self._refresh_wait)

    def _start_check(self, *, cold: bool) -> _Check:
        # Under the lock. A daemon thread per check: checks are rare (a change, a rehash,
        # an S3 interval), and no thread outlives its check.
        job = self._job = _Check(time.monotonic())
        thread = threading.Thread(
            target=self._run_check, args=(job, cold), name="ai-agent-flag-check", daemon=True
        )
        thread.start()
        return job

    def _run_check(self, job: _Check, cold: bool) -> None:
        """Fetch and parse off the evaluation path; swap the flags in under the lock."""
        events: list[_Event] = []
        try:
            data = self._source.fetch()
            doc = (
                None if data is None else parse(data, source=self._source.name, strict=self._strict)
            )
        except Exception as err:  # every fault of a source or a document: last good flags
            job.error = err
            if not (cold and self._loaded is None):  # a cold start reports it in initialize
                with self._lock:
                    self._report_fault(err, events)
        else:
            if doc is not None:
                with self._lock:
                    self._apply(doc, self._source.name, events)
        finally:
            # The events first: an evaluation that waited for this check then finds the
            # provider's status (ERROR, READY again) as the check left it.
            try:
                for event, details in events:
                    self.emit(event, details)
            finally:
                job.done.set()

    def _apply(self, doc: dict[str, Any], origin: str, events: list[_Event]) -> None:
        digest = fingerprint(doc)
        version = flag_set_version(doc)
        if digest != self._loaded:
            first = self._loaded is None
            changed = self._core.set_flags_and_get_changed_keys(doc)
            self._loaded, self._version = digest, version
            self._logger.info(
                "flags loaded from %s (version %s, changed: %s)",
                origin,
                version,
                ", ".join(sorted(changed)) or "none",
            )
            if not first:
                events.append(
                    (
                        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
                        ProviderEventDetails(
                            flags_changed=sorted(changed), metadata=_event_metadata(origin, version)
                        ),
                    )
                )
        self._loaded_from = origin
        self._note_serving()
        if self._fault is not None:
            self._logger.warning(
                "flag source %s readable again (version %s); fault cleared: %s",
                origin,
                version,
                self._fault,
            )
            self._fault = None
            self._note_serving()
            events.append(
                (
                    ProviderEvent.PROVIDER_READY,
                    ProviderEventDetails(metadata=_event_metadata(origin, version)),
                )
            )

    def _report_fault(self, err: Exception, events: list[_Event]) -> None:
        message = _one_line(err)
        if message == self._fault:
            return  # once per distinct fault
        self._fault = message
        self._note_serving()
        self._logger.error(
            "flag source fault, keeping the last good flags (version %s from %s): %s",
            self._version,
            self._loaded_from,
            message,
        )
        code = ErrorCode.PARSE_ERROR if isinstance(err, FlagFileError) else ErrorCode.GENERAL
        events.append(
            (
                ProviderEvent.PROVIDER_ERROR,
                ProviderEventDetails(
                    message=message,
                    error_code=code,
                    metadata=_event_metadata(self._loaded_from, self._version),
                ),
            )
        )

    # -- evaluation ----------------------------------------------------------------------
    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """Resolve a boolean flag (checks freshness first, rate-limited)."""
        return self._evaluator().resolve_boolean_value(flag_key, default_value, evaluation_context)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """Resolve a string flag (checks freshness first, rate-limited)."""
        return self._evaluator().resolve_string_value(flag_key, default_value, evaluation_context)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """Resolve an integer flag (checks freshness first, rate-limited)."""
        return self._evaluator().resolve_integer_value(flag_key, default_value, evaluation_context)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """Resolve a float flag (checks freshness first, rate-limited)."""
        return self._evaluator().resolve_float_value(flag_key, default_value, evaluation_context)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        """Resolve an object flag (checks freshness first, rate-limited)."""
        return self._evaluator().resolve_object_value(flag_key, default_value, evaluation_context)


def _event_metadata(origin: str | None, version: str | None) -> dict[str, bool | str | int | float]:
    metadata: dict[str, bool | str | int | float] = {}
    if origin is not None:
        metadata["source"] = origin
    if version is not None:
        metadata["version"] = version
    return metadata


class _Check:
    """One freshness check running on its own thread."""

    __slots__ = ("done", "error", "started")

    def __init__(self, started: float) -> None:
        self.started = started
        self.done = threading.Event()
        self.error: Exception | None = None


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 500 else text[:497] + "..."


# -- process life --------------------------------------------------------------------------
_live: weakref.WeakSet[FlagFileProvider] = weakref.WeakSet()
_fork_hook = False


def _install_fork_hook() -> None:
    global _fork_hook
    if not _fork_hook and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)
        _fork_hook = True


def _after_fork_in_child() -> None:
    # A fork taken while another thread held a provider's lock (in a check) would leave
    # the child's lock held forever and its flags frozen: start each provider afresh.
    for provider in list(_live):
        provider._init_state()
