"""Fixtures every test folder shares. Each name means one thing:

=================  ==========================================================================
fixture            what it gives
=================  ==========================================================================
(autouse)          fake credentials and a region, no AWS/flag variables from the caller
``aws``            moto's in-process AWS (Lambda accepts Invoke without Docker)
``sent``           every Lambda Invoke request as it left boto3 (:class:`LambdaCapture`)
``lambda_client``  a boto3 Lambda client on ``aws`` whose requests land in ``sent``
``fifo_queue``     an SQS FIFO queue on ``aws`` with content-based deduplication
``s3``             a boto3 S3 client on ``aws`` with the bucket :data:`BUCKET`
``make_handler``   a handler built the way the engine builds one, on ``lambda_client``
``moto_server``    the URL of moto's threaded server on loopback (real HTTP)
``fault_server``   a scripted Lambda / SQS / S3 on loopback (:class:`FaultServer`)
``no_backoff``     botocore retries as configured, without the sleeps between them
``emf``            the EMF metric lines written during the test (:class:`EmfCapture`)
``mcp_clock``      the MCP session module's clock, moved by the test (:class:`SessionClock`)
``no_provider``    no OpenFeature provider registered, once-per-process setup forgotten
``run``            ``ai-agent-rollout`` run in process (:class:`Runner`)
``files``          the shipped phase files copied to ``tmp_path/flags``, by phase
``checkout``       a checkout of the project in ``tmp_path/repo`` (:func:`make_checkout`)
``live``           the production live file, once local, once on ``s3`` (:class:`LiveFile`)
``aws_server``     boto3 of the process (the CLI too) on ``moto_server``: the bucket, an alarm
``named_live``     the production live file seeded, local or on ``aws_server``'s S3, named in
                   ``ai-agent-rollout.toml`` of the test's working folder (its source)
=================  ==========================================================================

Helpers that are not fixtures are in :mod:`tests.support`.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from openfeature import api

from ai_agent_handler import AIAgentEventHandler, metrics
from ai_agent_handler.flag_file import default_provider
from tests.support import BUCKET, REGION, RUN
from tests.support.aws import EmfCapture, LambdaCapture, SessionClock
from tests.support.cli import Runner, copy_phase_files, make_checkout
from tests.support.fault_server import FaultServer
from tests.support.live import LiveFile, local_file, s3_object
from tests.support.rollout import KEY, create_alarm


@pytest.fixture(autouse=True)
def _aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and a region, so no test can ever reach a real AWS account."""
    for name in (
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "ROLLOUT_PHASE",
        "FLAG_SOURCE",
        "AI_AGENT_ROLLOUT_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


# -- moto in process ------------------------------------------------------------------------
#: One boto3 session for every test: moto drops boto3's default session when a mock starts,
#: and a new session loads each service model again (0.1-0.5 s per test).
_SESSION: list[boto3.session.Session] = []


@pytest.fixture
def aws() -> Iterator[None]:
    """moto's in-process AWS; Lambda accepts Invoke without Docker."""
    with mock_aws(config={"lambda": {"use_docker": False}}):
        if not _SESSION:
            _SESSION.append(boto3.session.Session())
        boto3.DEFAULT_SESSION = _SESSION[0]
        yield


@pytest.fixture
def sent(aws: None) -> LambdaCapture:
    return LambdaCapture()


@pytest.fixture
def lambda_client(sent: LambdaCapture) -> Any:
    return sent.attach(boto3.client("lambda", region_name=REGION))


@pytest.fixture
def fifo_queue(aws: None) -> Any:
    """A FIFO queue with content-based deduplication (as the task queue is configured)."""
    sqs = boto3.resource("sqs", region_name=REGION)
    return sqs.create_queue(
        QueueName="agent-tasks.fifo",
        Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "true"},
    )


@pytest.fixture
def s3(aws: None) -> Any:
    client = boto3.client("s3", region_name=REGION)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def make_handler(lambda_client: Any) -> Any:
    """Build a handler the way the engine does, with the moto Lambda client injected."""

    def make(
        endpoint_id: str | None = "aws-prod",
        part_id: str | None = "acme-corp",
        run: dict[str, Any] | None = RUN,
        connection_id: str | None = "conn-1",
        **setting: Any,
    ) -> AIAgentEventHandler:
        setting.setdefault("stream_dispatch", "sync")
        handler = AIAgentEventHandler(
            logging.getLogger("test"), {"agent_name": "t"}, aws_lambda=lambda_client, **setting
        )
        handler.endpoint_id = endpoint_id
        handler.part_id = part_id
        handler.run = dict(run) if run is not None else None
        handler.connection_id = connection_id
        return handler

    return make


# -- AWS on loopback ------------------------------------------------------------------------
@pytest.fixture(scope="session")
def _moto_server_url() -> Iterator[str]:
    """moto's threaded server on 127.0.0.1, one for the whole run (see ``moto_server``)."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto_server(_moto_server_url: str) -> str:
    """moto's threaded server on 127.0.0.1 (a fresh, empty AWS per test)."""
    url = _moto_server_url
    # The server's backends are moto's process-wide ones: empty them for this test.
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"))
    return url


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    server = FaultServer()
    yield server
    server.close()


@pytest.fixture
def no_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore still decides what to retry and how often; only the sleeps between go.

    Keeps throttling cases (1 s, 2 s, 4 s backoff) fast without touching the decision.
    """
    from botocore.retries import standard

    monkeypatch.setattr(standard.ExponentialBackoff, "delay_amount", lambda self, ctx: 0)


# -- the library's process-wide state -------------------------------------------------------
@pytest.fixture
def emf() -> Iterator[EmfCapture]:
    """EMF lines go to a buffer for the test, and back to the default afterwards."""
    capture = EmfCapture()
    metrics.configure_metrics(stream=capture, enabled=True)
    yield capture
    metrics.configure_metrics()


@pytest.fixture
def no_provider() -> Iterator[None]:
    """No provider for any domain and a fresh once-per-process state (undo the plugin)."""
    api.clear_providers()
    default_provider.reset()
    yield
    api.clear_providers()
    default_provider.reset()


@pytest.fixture
def mcp_clock(monkeypatch: pytest.MonkeyPatch) -> SessionClock:
    """The MCP session module's clock, moved only by the test."""
    from ai_agent_handler.tools import session

    fake = SessionClock()
    monkeypatch.setattr(session, "_clock", fake)
    return fake


# -- operators ------------------------------------------------------------------------------
@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Runner:
    """``ai-agent-rollout`` in process: ``run("--file", path, "status").code``."""
    return Runner(capsys)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """The shipped phase files copied to ``tmp_path/flags``, by phase."""
    return copy_phase_files(tmp_path / "flags")


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout of the repository: pyproject.toml naming the project, flags/, a subfolder."""
    return make_checkout(tmp_path / "repo")


@pytest.fixture(params=["local", "s3"])
def live(request: pytest.FixtureRequest, tmp_path: Path) -> LiveFile:
    """The live production flag file, not created yet: ``tmp_path/live/production.flagd.json``,
    then the object :data:`~tests.support.live.PROD_KEY` in the ``s3`` bucket."""
    if request.param == "local":
        return local_file(tmp_path / "live")
    return s3_object(request.getfixturevalue("s3"))


@pytest.fixture
def aws_server(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every boto3 client of the process (the CLI's too) talks to moto's server: the bucket
    :data:`~tests.support.BUCKET` and the alarm :data:`~tests.support.rollout.ALARM` in OK."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    create_alarm()
    return moto_server


@pytest.fixture(params=["local", "s3"])
def named_live(
    request: pytest.FixtureRequest,
    aws_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    run: Runner,
) -> str:
    """The production live file seeded from the shipped one, ``live/production.flagd.json``
    or ``s3://ops-flags/ai-agent/production.flagd.json``, named in the working folder's
    ``ai-agent-rollout.toml`` (a relative path, as operators write it); its source."""
    local = request.param == "local"
    where = "live/production.flagd.json" if local else f"s3://{BUCKET}/{KEY}"
    (tmp_path / "live").mkdir()
    (tmp_path / "ai-agent-rollout.toml").write_text(f'[live]\nproduction = "{where}"\n')
    monkeypatch.chdir(tmp_path)
    source = str(tmp_path / where) if local else where
    assert run("--file", source, "seed", "--from", "production").code == 0
    return source
