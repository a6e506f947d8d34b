"""Reading what the fleet reported to CloudWatch: counter sums and alarm states (the I/O edge).

The handlers' EMF counters (:mod:`ai_agent_handler.metrics`) and the receivers' read counters
(:mod:`ai_agent_handler.receiver`) land in the namespace ``ai_agent_handler`` with the
dimensions ``phase`` and ``key_scheme``. :func:`counter_sums` adds them up over a window
with plain ``GetMetricStatistics`` (``Sum``) calls, one per metric and key scheme; ratios are
worked out from those sums by the caller, not by CloudWatch metric math.
:func:`alarm_states` reads named alarms (metric and composite). Both raise
:class:`MetricsError` with one line when CloudWatch cannot be read, so the caller can hold
rather than decide on missing evidence.

The client is boto3's own (environment, profile, role, ``AWS_ENDPOINT_URL``); the operator
needs ``cloudwatch:GetMetricStatistics`` and ``cloudwatch:DescribeAlarms``.
"""

from __future__ import annotations

import datetime
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .. import _aws
from ..exceptions import MetricsError
from ..metrics import METRICS_NAMESPACE
from . import times
from .times import Window

if TYPE_CHECKING:
    from mypy_boto3_cloudwatch import CloudWatchClient

KEY_SCHEMES = ("composite", "legacy")

#: CloudWatch keeps one-minute data for 15 days, five-minute data for 63 days, then hours:
#: a query reaching further back must use a period of that resolution.
_RESOLUTIONS = ((15, 60), (63, 300), (455, 3600))
_MAX_DATAPOINTS = 1440


def period_for(window: Window, now: datetime.datetime) -> int:
    """The smallest period CloudWatch accepts for ``window``: a multiple of the resolution
    its start still has, at most 1,440 data points."""
    age_days = (now - window.start).total_seconds() / 86400
    step = _RESOLUTIONS[-1][1]
    for days, resolution in _RESOLUTIONS:
        if age_days <= days:
            step = resolution
            break
    needed = max(window.seconds, 1.0) / _MAX_DATAPOINTS
    return max(step, math.ceil(needed / step) * step)


def counter_sums(
    client: CloudWatchClient,
    *,
    phase: str,
    metrics: Iterable[str],
    window: Window,
    namespace: str = METRICS_NAMESPACE,
    schemes: Sequence[str] = KEY_SCHEMES,
    now: datetime.datetime | None = None,
    deadline: float | None = None,
) -> dict[str, dict[str, float]]:
    """``{metric: {key_scheme: sum}}`` of each counter of ``phase`` over ``window``.

    A counter nobody reported sums to 0 (CloudWatch returns no data points for it).
    Raises :class:`MetricsError` when a read fails, or when ``deadline`` (a
    ``time.monotonic()`` value) has passed before the next read.
    """
    series = counter_series(
        client,
        phase=phase,
        metrics=metrics,
        window=window,
        namespace=namespace,
        schemes=schemes,
        now=now,
        deadline=deadline,
    )
    return {
        metric: {scheme: float(sum(points.values())) for scheme, points in per_scheme.items()}
        for metric, per_scheme in series.items()
    }


def counter_series(
    client: CloudWatchClient,
    *,
    phase: str,
    metrics: Iterable[str],
    window: Window,
    namespace: str = METRICS_NAMESPACE,
    schemes: Sequence[str] = KEY_SCHEMES,
    now: datetime.datetime | None = None,
    deadline: float | None = None,
) -> dict[str, dict[str, dict[datetime.datetime, float]]]:
    """``{metric: {key_scheme: {period start: sum}}}`` of each counter of ``phase`` over
    ``window``, in periods of :func:`period_for` (at most 1,440 per series); a period
    nobody reported in is absent. Raises :class:`MetricsError` as :func:`counter_sums`."""
    period = period_for(window, now or times.utcnow())
    series: dict[str, dict[str, dict[datetime.datetime, float]]] = {}
    for metric in metrics:
        for scheme in schemes:
            if deadline is not None and time.monotonic() > deadline:
                raise MetricsError(
                    f"reading {namespace} from CloudWatch took too long (past its deadline); "
                    f"{metric} (key_scheme={scheme}) not read"
                )
            try:
                response = client.get_metric_statistics(
                    Namespace=namespace,
                    MetricName=metric,
                    Dimensions=[
                        {"Name": "phase", "Value": phase},
                        {"Name": "key_scheme", "Value": scheme},
                    ],
                    StartTime=window.start,
                    EndTime=window.end,
                    Period=period,
                    Statistics=["Sum"],
                )
            except _aws.ERRORS as err:
                raise MetricsError(
                    f"cannot read {namespace}/{metric} (phase={phase}, key_scheme={scheme}) "
                    f"from CloudWatch: {_aws.describe(err)}"
                ) from err
            points = series.setdefault(metric, {}).setdefault(scheme, {})
            for point in response["Datapoints"]:
                stamp = point.get("Timestamp")
                moment = times.utc(stamp) if stamp is not None else window.start
                points[moment] = points.get(moment, 0.0) + float(point.get("Sum", 0.0))
    return series


def alarm_states(client: CloudWatchClient, names: Sequence[str]) -> dict[str, str | None]:
    """``{name: state}`` of each named alarm (metric or composite): ``OK``, ``ALARM`` or
    ``INSUFFICIENT_DATA``; None for an alarm that does not exist.

    Raises :class:`MetricsError` when the alarms cannot be read.
    """
    found: dict[str, str | None] = dict.fromkeys(names)
    if not names:
        return found
    try:
        for start in range(0, len(names), 100):  # DescribeAlarms takes 100 names at most
            response = client.describe_alarms(
                AlarmNames=list(names[start : start + 100]),
                AlarmTypes=["MetricAlarm", "CompositeAlarm"],
            )
            alarms: list[Mapping[str, Any]] = [
                *response.get("MetricAlarms", []),
                *response.get("CompositeAlarms", []),
            ]
            for alarm in alarms:
                if alarm.get("AlarmName") in found:
                    found[str(alarm["AlarmName"])] = str(alarm.get("StateValue"))
    except _aws.ERRORS as err:
        raise MetricsError(f"cannot read the alarms from CloudWatch: {_aws.describe(err)}") from err
    return found
