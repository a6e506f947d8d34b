"""The floors pyproject.toml declares are at least the first releases with what the code uses.

The proof is ``python3 dev.py lowest`` (a CI step): it installs every runtime and test
dependency at exactly its declared floor, with urllib3 1.x, and runs the tests. This table
keeps a floor from being set below a feature the code needs, and the parsing that ``lowest``
derives its pins with honest. Each row was checked in the release itself: botocore's S3
service model in the wheel, the package's own source or metadata.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
import sys

import pytest
from packaging.version import Version

from tests.support import REPO
from tests.support.dev import load_dev

ROOT = REPO

#: (distribution, first release with it, what the code uses)
NEEDS = [
    ("botocore", "1.35.69", "S3 PutObject IfMatch: an operator's edit on the ETag it read"),
    ("boto3", "1.35.69", "the first boto3 requiring botocore 1.35.69 (PutObject IfMatch)"),
    ("botocore", "1.35.67", "S3 DeleteObject IfMatch: undoing a created flag file"),
    ("botocore", "1.35.2", "S3 PutObject IfNoneMatch: creating a flag file or audit record"),
    ("openfeature-sdk", "0.10.0", "api.set_provider_and_wait (default provider, plugin)"),
    ("openfeature-sdk", "0.8.2", "what openfeature-flagd-core 2.0.0 requires"),
    ("mcp", "1.24.0", "mcp.client.streamable_http.streamable_http_client"),
    ("pytest", "8.0.0", "the pytest plugin (a pytest11 entry point), tested at 8.0.0"),
    ("moto", "5.1.5", "put_object honours If-Match (the S3 conflict tests)"),
    ("moto", "5.0.13", "ThreadedMotoServer.get_host_and_port (the moto_server fixture)"),
    ("opentelemetry-sdk", "1.29.0", "what openfeature-hooks-opentelemetry 0.3.0 requires"),
    ("tomli", "1.1.0", "tomli.loads of a str and TOMLDecodeError (tomllib's API, Python 3.10)"),
]


dev = load_dev()


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pinned_by_lowest() -> list[str]:
    """The requirements ``dev.py lowest`` pins: the runtime ones and those of its extras."""
    return dev.declared() + [r for group in dev.LOWEST_EXTRAS for r in dev.declared(group)]


def declared_floors() -> dict[str, Version]:
    floors = {}
    for requirement in pinned_by_lowest():
        name, version, _ = dev.floor(requirement)
        floors[canonical(name)] = Version(version)
    return floors


@pytest.mark.parametrize(("name", "first", "use"), NEEDS, ids=[f"{n}>={v}" for n, v, _ in NEEDS])
def test_each_floor_is_at_least_the_first_release_with_what_the_code_uses(
    name: str, first: str, use: str
) -> None:
    floors = declared_floors()
    assert name in floors, f"{name} is used ({use}) but pyproject.toml does not declare it"
    assert floors[name] >= Version(first), f"{name}>={floors[name]}: {use} needs {first}"


def test_every_runtime_and_extra_dependency_is_pinned_to_its_floor_by_lowest() -> None:
    assert {"test", "flagd", "otel"} <= set(dev.LOWEST_EXTRAS)
    pins = dev.lowest_constraints().splitlines()
    assert "urllib3<2" in pins
    for requirement in pinned_by_lowest():
        name, version, marker = dev.floor(requirement)
        assert f"{name}=={version}{' ' + marker if marker else ''}" in pins
    assert "openfeature-flagd-core==2.0.0" in pins  # an exact pin is its own floor


@pytest.mark.parametrize(
    ("requirement", "expected"),
    [
        ("boto3>=1.35.69", ("boto3", "1.35.69", "")),
        ("mcp>=1.30,<2", ("mcp", "1.30", "")),
        ("moto[s3,server] >= 5.1.5", ("moto", "5.1.5", "")),
        ("openfeature-flagd-core==2.0.0", ("openfeature-flagd-core", "2.0.0", "")),
        ("x~=1.4; python_version < '3.11'", ("x", "1.4", "; python_version < '3.11'")),
    ],
)
def test_a_floor_is_read_from_its_requirement(
    requirement: str, expected: tuple[str, str, str]
) -> None:
    assert dev.floor(requirement) == expected


@pytest.mark.parametrize("requirement", ["boto3", "boto3<2", "x>1.0", "x==1.*", "x>=1,>=2"])
def test_a_requirement_without_exactly_one_floor_is_refused(requirement: str) -> None:
    with pytest.raises(ValueError, match="needs exactly one floor"):
        dev.floor(requirement)


TRICKY = """
[project]
name = "x"  # [not a header]
dependencies = [
    # a comment with "quotes" and ] brackets [
    "a>=1",  # trailing
    'b[c]>=2; sys_platform == "linux"',
    "c>=3 ; python_version < '3.11'", "d==4"
]

[project.optional-dependencies]
"test" = ["e>=5"]
other = [
]
[tool.x]
dependencies = ["not-this>=1"]
"""


@pytest.mark.parametrize("text", ["pyproject.toml", "tricky"])
def test_the_python_310_reader_reads_what_tomllib_reads(text: str) -> None:
    tomllib = pytest.importorskip("tomllib")
    source = (ROOT / "pyproject.toml").read_text() if text == "pyproject.toml" else TRICKY
    project = tomllib.loads(source)["project"]
    assert dev.toml_string_array(source, "project", "dependencies") == project["dependencies"]
    for group, requirements in project["optional-dependencies"].items():
        found = dev.toml_string_array(source, "project.optional-dependencies", group)
        assert found == requirements


def test_the_python_310_path_gives_the_same_pins(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = dev.lowest_constraints()
    monkeypatch.setattr(sys, "version_info", (3, 10, 0))
    assert dev.lowest_constraints() == expected


def test_every_extra_asked_of_an_installed_dependency_exists() -> None:
    """pip only warns about an extra a package does not provide (moto has no "lambda")."""
    for requirement in pinned_by_lowest():
        extras = re.search(r"\[([^\]]*)\]", requirement)
        if extras is None:
            continue
        name = dev.floor(requirement)[0]
        try:
            provided = importlib.metadata.metadata(name).get_all("Provides-Extra") or []
        except importlib.metadata.PackageNotFoundError:
            continue
        provided = {canonical(extra) for extra in provided}
        for extra in extras.group(1).split(","):
            assert canonical(extra.strip()) in provided, f"{name} has no extra {extra!r}"


def test_the_installed_botocore_has_the_s3_conditions_the_code_sends() -> None:
    """Under dev.py lowest this is botocore at its floor."""
    import botocore.session

    s3 = botocore.session.get_session().get_service_model("s3")

    def members(operation: str) -> set[str]:
        return set(s3.operation_model(operation).input_shape.members)

    assert {"IfMatch", "IfNoneMatch"} <= members("PutObject")
    assert "IfMatch" in members("DeleteObject")
    assert "IfNoneMatch" in members("GetObject")
