"""``FlagFileProvider``: an OpenFeature provider for flagd-format flag files, live reloaded.

Rules are evaluated by flagd's own Python evaluator (``openfeature-flagd-core``), so
``fractional``, ``starts_with``, ``ends_with``, ``sem_ver``, ``in`` and ``$ref`` behave
exactly as in flagd and every other flagd SDK of the same evaluator generation.

Freshness is checked when a flag is evaluated, at most once per ``min_interval`` (local
file: 0.1 s, S3: 5 s by default), so it works in a Lambda whose background threads are
frozen between invocations; within the interval an evaluation costs one clock read more
than flagd-core alone. A check that finds a new valid version swaps it in and emits
``PROVIDER_CONFIGURATION_CHANGED`` with the changed flag keys.

Faults (unreadable, missing, invalid file, S3 errors) keep the last good flags: the
provider logs each distinct fault once, emits ``PROVIDER_ERROR`` and keeps serving; the
next good version brings it back (``PROVIDER_READY``). It never raises into the caller
beyond what OpenFeature turns into the caller's default.

Cold start: when the live source cannot be read at :meth:`initialize`, the provider loads
``fallback_path`` (the phase file shipped with the package), logs an error and keeps
trying the live source on later evaluations.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent, ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType
from openfeature.provider import AbstractProvider, Metadata

from ..exceptions import FlagFileError, FlagSourceError
from .document import fingerprint, flag_set_version, parse
from .sources import FlagSource, open_source

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["FlagFileProvider"]

_Event = tuple[ProviderEvent, ProviderEventDetails]


class FlagFileProvider(AbstractProvider):
    """OpenFeature provider for a flagd-format flag file at a path or ``s3://bucket/key``.

    ``source``: a filesystem path, an ``s3://`` URI or a :class:`~.sources.FlagSource`.
    ``s3_client``: boto3 S3 client for an ``s3://`` source (built lazily when omitted).
    ``min_interval``: seconds between freshness checks (default per source kind).
    ``fallback_path``: file loaded when the source cannot be read at start.
    ``strict``: check files with this library's phase-file rules
    (:func:`~.document.validate`); ``False`` accepts any file flagd accepts.
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | FlagSource,
        *,
        s3_client: S3Client | None = None,
        min_interval: float | None = None,
        fallback_path: str | os.PathLike[str] | None = None,
        expected_bucket_owner: str | None = None,
        strict: bool = True,
        logger: logging.Logger | None = None,
    ) -> None:
        super().__init__()
        self._source = open_source(
            source,
            s3_client=s3_client,
            min_interval=min_interval,
            expected_bucket_owner=expected_bucket_owner,
        )
        self._fallback = Path(fallback_path) if fallback_path is not None else None
        self._strict = strict
        self._logger = logger or logging.getLogger(__name__)
        self._core = FlagdCore()
        self._lock = threading.Lock()  # one freshness check at a time
        self._next_check = 0.0  # time.monotonic() of the next freshness check
        self._loaded: str | None = None  # fingerprint of the flags in self._core
        self._loaded_from: str | None = None
        self._version: str | None = None
        self._fault: str | None = None

    # -- what operators and tests can look at --------------------------------------------
    @property
    def source(self) -> FlagSource:
        """Where the live flag file is read from."""
        return self._source

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
    def flag_set_metadata(self) -> Mapping[str, float | int | str | bool]:
        """The loaded file's top-level ``metadata`` (also merged into each flag's metadata)."""
        return self._core.get_flag_set_metadata()

    # -- OpenFeature lifecycle -----------------------------------------------------------
    def get_metadata(self) -> Metadata:
        """Provider name as OpenFeature reports it."""
        return Metadata(name="FlagFileProvider")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        """Load the live source, or the fallback file when the source cannot be read."""
        with self._lock:
            events: list[_Event] = []
            try:
                self._check(events, raise_fault=True)
            except (FlagSourceError, FlagFileError) as err:
                self._cold_start_fallback(err)
                # Set after the fallback is applied: serving it does not clear the fault.
                self._fault = str(err)
            finally:
                self._next_check = time.monotonic() + self._source.min_interval

    def _cold_start_fallback(self, err: Exception) -> None:
        if self._fallback is None:
            self._fault = str(err)
            self._logger.error("flag source %s unreadable at start: %s", self._source.name, err)
            raise ProviderNotReadyError(str(err)) from err
        try:
            doc = parse(
                self._fallback.read_bytes(), source=str(self._fallback), strict=self._strict
            )
        except (OSError, FlagFileError) as fallback_err:
            self._logger.error(
                "flag source %s unreadable at start (%s) and fallback %s unusable: %s",
                self._source.name,
                err,
                self._fallback,
                fallback_err,
            )
            self._fault = str(err)
            raise ProviderNotReadyError(f"{err}; fallback: {fallback_err}") from err
        self._apply(doc, str(self._fallback), [])
        self._logger.error(
            "flag source %s unreadable at start: %s; serving the shipped file %s (version %s) "
            "and retrying the source",
            self._source.name,
            err,
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
        # A thread that finds another one checking evaluates with the current flags
        # rather than queueing behind a slow S3 call.
        if not self._lock.acquire(blocking=False):
            return
        events: list[_Event] = []
        try:
            if time.monotonic() >= self._next_check:
                try:
                    self._check(events)
                except Exception as err:  # a source that breaks its contract: still a fault
                    self._report_fault(err, events)
                self._next_check = time.monotonic() + self._source.min_interval
        finally:
            self._lock.release()
        for event, details in events:  # outside the lock: handlers may evaluate flags
            self.emit(event, details)

    def _check(self, events: list[_Event], *, raise_fault: bool = False) -> None:
        """Fetch the source; load a new valid version or record the fault."""
        try:
            data = self._source.fetch()
            if data is None:
                return
            doc = parse(data, source=self._source.name, strict=self._strict)
        except (FlagSourceError, FlagFileError) as err:
            if raise_fault:
                raise
            self._report_fault(err, events)
            return
        self._apply(doc, self._source.name, events)

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
        if self._fault is not None:
            self._logger.warning(
                "flag source %s readable again (version %s); fault cleared: %s",
                origin,
                version,
                self._fault,
            )
            self._fault = None
            events.append(
                (
                    ProviderEvent.PROVIDER_READY,
                    ProviderEventDetails(metadata=_event_metadata(origin, version)),
                )
            )

    def _report_fault(self, err: Exception, events: list[_Event]) -> None:
        message = str(err)
        if message == self._fault:
            return  # once per distinct fault
        self._fault = message
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
