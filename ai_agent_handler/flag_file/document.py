"""Flag files in flagd format: decoding and validation, no I/O.

A flag file is what operators edit (``flags/<phase>.flagd.json``, an S3 object, a file an
AppConfig agent writes). Before a new version replaces the flags a process evaluates, it
must pass :func:`validate`; :func:`parse` turns raw bytes into a checked document or raises
:class:`FlagFileError` with a one-line reason.

Two levels of checking:

* :func:`flagd_problems` -- what flagd itself refuses: not an object, no ``flags`` object, a
  flag without a valid ``state`` or ``variants``, a ``defaultVariant`` that is not a
  variant, variants of mixed JSON types, a non-object ``targeting``. Any flagd file that
  flagd loads passes it.
* :func:`validate` -- the rules for this library's phase files on top of that:
  ``metadata.version`` present, every ``$ref`` resolvable, and for :data:`FLAG_KEY` the
  variants ``{"composite": true, "legacy": false}`` and a targeting rule that can only
  return those variant names (checked statically and by evaluating sample contexts with
  flagd's own evaluator).
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError

from ..decision import VARIANTS
from ..exceptions import FlagFileError
from ..settings import FLAG_KEY, PHASES

#: The ``$schema`` of a flagd flag file.
SCHEMA = "https://flagd.dev/schema/v0/flags.json"

_STATES = ("ENABLED", "DISABLED")
# flagd-core passes every property of a flag to its Flag dataclass; anything else is refused.
_FLAG_PROPERTIES = {"state", "variants", "defaultVariant", "targeting", "metadata"}
_IGNORED_FLAG_PROPERTIES = {"source", "selector"}
_SAMPLE_ENDPOINTS = 24

#: Deepest nesting of JSON objects and arrays in a flag file, and in a targeting rule with
#: its ``$ref`` s expanded. Real rules are a handful of levels deep.
MAX_DEPTH = 64
#: Most JSON objects and arrays one flag's targeting may have with its ``$ref`` s expanded:
#: what flagd walks per evaluation. An allow-list is one array, however long.
MAX_RULE_NODES = 2000
#: Longest chain of ``$evaluators`` referring to one another.
MAX_REF_CHAIN = 32
# Strings sampled from a long array (an allow-list): every element takes the same branch.
_LONG_ARRAY = 16
_SAMPLE_PER_ARRAY = 8


def parse(data: bytes | str, *, source: str = "<memory>", strict: bool = True) -> dict[str, Any]:
    """Decode UTF-8 JSON and check it; return the document or raise :class:`FlagFileError`.

    ``strict`` applies :func:`validate` (this library's phase files); ``strict=False`` only
    :func:`flagd_problems` (any file flagd accepts). The message starts with ``source``.

    Any exception a document can cause while being checked becomes a
    :class:`FlagFileError` too, and checking is bounded: nesting deeper than
    :data:`MAX_DEPTH`, a targeting rule larger than :data:`MAX_RULE_NODES` with its
    ``$ref`` s expanded or a ``$ref`` chain longer than :data:`MAX_REF_CHAIN` is refused
    before anything walks or evaluates it, and the time taken is linear in the file.
    """
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            # utf-8-sig: a BOM some editors write is not a reason to refuse the file.
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise FlagFileError(
                f"{source}: not UTF-8 text (bad byte at offset {err.start})"
            ) from err
    else:
        text = data
    if not text.strip():
        raise FlagFileError(f"{source}: empty document")
    try:
        doc = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as err:
        raise FlagFileError(
            f"{source}: invalid JSON at line {err.lineno} column {err.colno}: {err.msg}"
        ) from err
    except ValueError as err:  # raised by the hooks above
        raise FlagFileError(f"{source}: invalid JSON: {err}") from err
    except RecursionError:  # the decoder's own guard, far past MAX_DEPTH
        raise FlagFileError(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    try:
        problems = validate(doc) if strict else flagd_problems(doc)
    except Exception as err:  # a document must never raise anything but FlagFileError
        raise FlagFileError(
            f"{source}: cannot be checked: {type(err).__name__}: {_clip(str(err))}"
        ) from None
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise FlagFileError(f"{source}: {problems[0]}{more}", problems)
    assert isinstance(doc, dict)  # validated above
    return doc


def serialize(doc: Mapping[str, Any]) -> bytes:
    """The bytes a flag file is written as: two-space JSON, short arrays and objects inline.

    The files are reviewed in diffs: one allow-listed endpoint is one changed line, and
    the targeting rule stays readable instead of one token per line.
    """
    return (_pretty(doc, 0) + "\n").encode("utf-8")


def _pretty(value: object, indent: int, width: int = 96) -> str:
    inline = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if not isinstance(value, (dict, list)) or not value or indent + len(inline) <= width:
        return inline
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [
            f"{pad}{json.dumps(k, ensure_ascii=False)}: {_pretty(v, indent + 2, width)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _pretty(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def fingerprint(doc: Mapping[str, Any]) -> str:
    """A digest of the document's content: equal for files that differ only in layout."""
    canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def flag_set_version(doc: Mapping[str, Any]) -> str | None:
    """``metadata.version`` as a string, or None."""
    metadata = doc.get("metadata")
    if not isinstance(metadata, Mapping) or metadata.get("version") is None:
        return None
    return str(metadata["version"])


# -- flagd's own rules -------------------------------------------------------------------


def flagd_problems(doc: object) -> list[str]:
    """Every reason flagd would refuse ``doc``; empty when flagd loads it.

    A document past this library's bounds (:data:`MAX_DEPTH`, :data:`MAX_RULE_NODES`,
    :data:`MAX_REF_CHAIN`) is refused too, with only that problem.
    """
    bounds = _bounds_problems(doc)
    if bounds:
        return bounds
    return _flagd_rules(doc)


def _flagd_rules(doc: object) -> list[str]:
    if not isinstance(doc, dict):
        return [f"the document must be a JSON object, not {_json_type(doc)}"]
    problems: list[str] = []
    flags = doc.get("flags")
    if not isinstance(flags, dict):
        problems.append(
            "flags is missing"
            if flags is None
            else f"flags must be an object, not {_json_type(flags)}"
        )
        flags = {}
    evaluators = doc.get("$evaluators", {})
    if not isinstance(evaluators, dict):
        problems.append(f"$evaluators must be an object, not {_json_type(evaluators)}")
    problems += _metadata_problems("metadata", doc.get("metadata", {}))
    for key, flag in flags.items():
        problems += _flag_problems(key, flag)
    if not problems:
        # Whatever flagd-core still refuses (it is the evaluator the provider uses).
        try:
            FlagdCore().set_flags(copy.deepcopy(doc))
        except Exception as err:  # flagd-core raises ParseError and plain errors alike
            problems.append(f"flagd refuses the document: {err or type(err).__name__}")
    return problems


def _flag_problems(key: str, flag: object) -> list[str]:
    where = f"flags.{key}"
    if not key:
        return ["flags has an empty flag key"]
    if not isinstance(flag, dict):
        return [f"{where} must be an object, not {_json_type(flag)}"]
    problems = [
        f"{where}.{name} is not a flag property"
        for name in flag
        if name not in _FLAG_PROPERTIES | _IGNORED_FLAG_PROPERTIES
    ]
    state = flag.get("state")
    if state not in _STATES:
        problems.append(f"{where}.state {_show(state)} is not ENABLED or DISABLED")
    variants = flag.get("variants")
    if not isinstance(variants, dict) or not variants:
        problems.append(f"{where}.variants must be a non-empty object")
        variants = {}
    else:
        types = sorted({_json_type(value) for value in variants.values()})
        if len(types) > 1:
            problems.append(f"{where}.variants mix JSON types ({', '.join(types)})")
    default = flag.get("defaultVariant")
    if default is not None and (not isinstance(default, str) or default not in variants):
        problems.append(f"{where}.defaultVariant {_show(default)} is not a variant")
    targeting = flag.get("targeting")
    if "targeting" in flag and not isinstance(targeting, dict):
        problems.append(f"{where}.targeting must be an object, not {_json_type(targeting)}")
    problems += _metadata_problems(f"{where}.metadata", flag.get("metadata", {}))
    return problems


def _metadata_problems(where: str, metadata: object) -> list[str]:
    if not isinstance(metadata, dict):
        return [f"{where} must be an object, not {_json_type(metadata)}"]
    return [
        f"{where}.{name} must be a string, number or boolean, not {_json_type(value)}"
        for name, value in metadata.items()
        if not isinstance(value, (str, int, float, bool))
    ]


# -- this library's rules ----------------------------------------------------------------


def validate(doc: object) -> list[str]:
    """Every problem of a phase file for this library; empty when it is valid.

    :func:`flagd_problems`, then: ``metadata.version`` (an integer or a string), ``$ref``
    names that exist in ``$evaluators``, and :data:`FLAG_KEY` present with exactly the
    variants ``composite`` (true) and ``legacy`` (false), whose ``defaultVariant`` and
    every targeting result are one of them.
    """
    bounds = _bounds_problems(doc)
    if bounds:
        return bounds
    problems = _flagd_rules(doc)
    if not isinstance(doc, dict):
        return problems
    metadata = doc.get("metadata")
    version = metadata.get("version") if isinstance(metadata, dict) else None
    if version is None:
        problems.append("metadata.version is missing")
    elif isinstance(version, bool) or not isinstance(version, (int, str)) or version == "":
        problems.append(f"metadata.version {_show(version)} must be an integer or a string")
    evaluators = doc.get("$evaluators", {})
    names = set(evaluators) if isinstance(evaluators, dict) else set()
    flags = doc.get("flags")
    if not isinstance(flags, dict):
        return problems
    for key, flag in flags.items():
        if isinstance(flag, dict):
            problems += [
                f"flags.{key}.targeting refers to $ref {_show(ref)} which is not in $evaluators"
                for ref in _refs(flag.get("targeting"))
                if not isinstance(ref, str) or ref not in names
            ]
    if isinstance(evaluators, dict):
        problems += [
            f"$evaluators.{name} refers to $ref {_show(ref)} which is not in $evaluators"
            for name, rule in evaluators.items()
            for ref in _refs(rule)
            if not isinstance(ref, str) or ref not in names
        ]
    flag = flags.get(FLAG_KEY)
    if flag is None:
        problems.append(f"flags.{FLAG_KEY} is missing")
    elif isinstance(flag, dict):
        problems += _partition_flag_problems(
            flag, evaluators if isinstance(evaluators, dict) else {}
        )
    if not problems:
        problems += _sampled_problems(doc)
    return problems


def _partition_flag_problems(flag: dict[str, Any], evaluators: dict[str, Any]) -> list[str]:
    where = f"flags.{FLAG_KEY}"
    variants = flag.get("variants")
    if variants != VARIANTS or not all(isinstance(v, bool) for v in variants.values()):
        return [f'{where}.variants must be exactly {{"composite": true, "legacy": false}}']
    targeting = flag.get("targeting")
    if not isinstance(targeting, dict):
        return []
    return [
        f"{where}.targeting{path} can return {_show(leaf)}, which is not a variant"
        for path, leaf in _results(_resolve_refs(targeting, evaluators), "")
        if leaf is not None and _variant_name(leaf) not in VARIANTS
    ]


def _sampled_problems(doc: dict[str, Any]) -> list[str]:
    """Evaluate :data:`FLAG_KEY` for sample endpoints with flagd's evaluator.

    Catches results the static walk cannot see (a ``var`` or ``cat`` returning a name, a
    condition used as a result). The allow-listed endpoints are always in the sample.
    """
    core = FlagdCore()
    core.set_flags(copy.deepcopy(doc))
    evaluators = doc.get("$evaluators")
    rules = [doc["flags"][FLAG_KEY].get("targeting")]
    if isinstance(evaluators, dict):
        rules += evaluators.values()
    listed = sorted({s for rule in rules for s in _sample_strings(rule) if s})
    endpoints = listed + [f"sample-endpoint-{i}" for i in range(_SAMPLE_ENDPOINTS)]
    for i, endpoint in enumerate(endpoints):
        attributes: dict[str, Any] = {"endpoint_id": endpoint, "phase": PHASES[i % len(PHASES)]}
        if i % 2:
            attributes["part_id"] = f"sample-part-{i}"
        context = EvaluationContext(targeting_key=endpoint, attributes=attributes)
        try:
            core.resolve_boolean_value(FLAG_KEY, False, context)
        except OpenFeatureError as err:
            return [
                f"flags.{FLAG_KEY}.targeting fails for endpoint {endpoint!r}: "
                f"{err.error_message or err.error_code.value}"
            ]
    return []


# -- JsonLogic walking -------------------------------------------------------------------


def _results(rule: object, path: str) -> Iterator[tuple[str, object]]:
    """(path, leaf) for every constant a rule can return as its result.

    Follows ``if`` branches and ``fractional`` bucket names; other operators compute
    their result at evaluation time (left to :func:`_sampled_problems`).
    """
    if not isinstance(rule, dict):
        if not isinstance(rule, list):
            yield path, rule
        return
    if len(rule) != 1:
        return
    ((op, args),) = rule.items()
    if not isinstance(args, list):
        return
    if op in ("if", "?:"):
        last = len(args) - 1
        for i, arg in enumerate(args):
            if i % 2 == 1 or (i == last and len(args) % 2 == 1 and i > 0):
                yield from _results(arg, f"{path}.if[{i}]")
    elif op == "fractional":
        for i, bucket in enumerate(args):
            if isinstance(bucket, list) and bucket:
                yield from _results(bucket[0], f"{path}.fractional[{i}]")


def _refs(rule: object) -> Iterator[object]:
    if isinstance(rule, dict):
        if set(rule) == {"$ref"}:
            yield rule["$ref"]
            return
        for value in rule.values():
            yield from _refs(value)
    elif isinstance(rule, list):
        for value in rule:
            yield from _refs(value)


def _resolve_refs(rule: object, evaluators: Mapping[str, Any], depth: int = 0) -> object:
    if depth > 16:  # a cycle of $refs; flagd leaves it unresolved too
        return rule
    if isinstance(rule, dict):
        ref = rule.get("$ref") if len(rule) == 1 else None
        if isinstance(ref, str) and ref in evaluators:
            return _resolve_refs(evaluators[ref], evaluators, depth + 1)
        return {k: _resolve_refs(v, evaluators, depth) for k, v in rule.items()}
    if isinstance(rule, list):
        return [_resolve_refs(v, evaluators, depth) for v in rule]
    return rule


def _sample_strings(rule: object) -> Iterator[str]:
    """The strings of a rule worth evaluating as endpoint ids.

    Every string compared on its own (it may pick a branch), and from a long array -- an
    allow-list, whose elements all take the same branch -- an even spread including its
    first and last element, so the sample is bounded whatever the list's length.
    """
    stack = [rule]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            yield value
        elif isinstance(value, dict):
            # A "var" names a context attribute: not a value.
            stack.extend(v for op, v in value.items() if op != "var")
        elif isinstance(value, list):
            if len(value) > _LONG_ARRAY:
                last = len(value) - 1
                picks = {
                    round(i * last / (_SAMPLE_PER_ARRAY - 1)) for i in range(_SAMPLE_PER_ARRAY)
                }
                yield from (value[i] for i in sorted(picks) if isinstance(value[i], str))
                stack.extend(v for v in value if not isinstance(v, str))
            else:
                stack.extend(value)


# -- bounds ------------------------------------------------------------------------------


class _ChainTooLong(Exception):
    pass


def _bounds_problems(doc: object) -> list[str]:
    """The first bound ``doc`` breaks, checked without recursion; empty when within them."""
    where = too_deep(doc)
    if where is not None:
        return [f"nested deeper than {MAX_DEPTH} levels (at {where})"]
    if not isinstance(doc, dict) or not isinstance(doc.get("flags"), dict):
        return []
    evaluators = doc.get("$evaluators")
    cost = _RuleCost(evaluators if isinstance(evaluators, dict) else {})
    for key, flag in doc["flags"].items():
        if not isinstance(flag, dict) or "targeting" not in flag:
            continue
        where = f"flags.{_clip(str(key), 60)}.targeting"
        try:
            nodes, depth = cost.of(flag["targeting"], ())
        except _ChainTooLong as err:
            return [f"{where}: $ref chain longer than {MAX_REF_CHAIN} evaluators ({err})"]
        if nodes > MAX_RULE_NODES:
            return [
                f"{where} has {nodes} objects and arrays with its $refs expanded "
                f"(limit {MAX_RULE_NODES}); simplify the rule or its $evaluators"
            ]
        if depth > MAX_DEPTH:
            return [
                f"{where} is nested {depth} levels deep with its $refs expanded (limit {MAX_DEPTH})"
            ]
    return []


def too_deep(doc: object, *, limit: int = MAX_DEPTH) -> str | None:
    """Where the nesting of objects and arrays passes ``limit`` levels (a JSON path, clipped),
    or None; checked without recursion, so any document Python holds can be asked."""
    stack: list[tuple[object, int, str]] = [(doc, 1, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > limit:
            return _clip(path, 80) or "the top level"
        if isinstance(value, dict):
            stack.extend(
                (v, depth + 1, f"{path}.{k}" if path else str(k))
                for k, v in value.items()
                if isinstance(v, (dict, list))
            )
        elif isinstance(value, list):
            stack.extend(
                (v, depth + 1, f"{path}[{i}]")
                for i, v in enumerate(value)
                if isinstance(v, (dict, list))
            )
    return None


class _RuleCost:
    """Objects and arrays, and depth, of a rule with its ``$ref`` s expanded, in linear time.

    Each evaluator is measured once (memoised), so a chain that doubles at every level is
    measured, not expanded. A cycle counts as the unresolved ``$ref`` flagd leaves in place.
    """

    def __init__(self, evaluators: dict[str, Any]) -> None:
        self.evaluators = evaluators
        self.memo: dict[str, tuple[int, int]] = {}

    def of(self, rule: object, chain: tuple[str, ...]) -> tuple[int, int]:
        nodes = depth = 0
        stack: list[tuple[object, int]] = [(rule, 1)]
        while stack:
            value, level = stack.pop()
            if isinstance(value, dict):
                ref = value.get("$ref") if len(value) == 1 else None
                if isinstance(ref, str) and ref in self.evaluators and ref not in chain:
                    ref_nodes, ref_depth = self._evaluator(ref, chain)
                    nodes += ref_nodes
                    depth = max(depth, level - 1 + ref_depth)
                    continue
                nodes += 1
                depth = max(depth, level)
                stack.extend((v, level + 1) for v in value.values() if isinstance(v, (dict, list)))
            elif isinstance(value, list):
                nodes += 1
                depth = max(depth, level)
                stack.extend((v, level + 1) for v in value if isinstance(v, (dict, list)))
        return nodes, depth

    def _evaluator(self, name: str, chain: tuple[str, ...]) -> tuple[int, int]:
        known = self.memo.get(name)
        if known is not None:
            return known
        if len(chain) >= MAX_REF_CHAIN:
            raise _ChainTooLong(" -> ".join(_clip(n, 20) for n in (*chain[:3], "...", name)))
        result = self.of(self.evaluators[name], (*chain, name))
        self.memo[name] = result
        return result


# -- small helpers -----------------------------------------------------------------------


def _variant_name(leaf: object) -> str:
    # flagd turns a non-string targeting result into a variant name this way.
    if isinstance(leaf, bool):
        return str(leaf).lower()
    return leaf if isinstance(leaf, str) else str(leaf)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _clip(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show(value: object) -> str:
    if isinstance(value, str):
        return repr(value)
    return json.dumps(value, default=repr)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")
