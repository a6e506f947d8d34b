"""DynamoDB tables shaped like the receivers': before and after the key migration.

* legacy (the engine's tables before): partition key ``endpoint_id``, sort key ``sk``;
* engine (after): partition key ``partition_key`` (``endpoint_id#part_id``), sort key
  ``sk``, ``endpoint_id`` and ``part_id`` plain attributes with a local secondary index on
  each;
* receiver (the example agent task function's table): ``pk``/``sk``, both keys in ``pk``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

PAGE = 25  # BatchWriteItem's limit


def _key_schema(hash_key: str, range_key: str = "sk") -> dict[str, Any]:
    return {
        "KeySchema": [
            {"AttributeName": hash_key, "KeyType": "HASH"},
            {"AttributeName": range_key, "KeyType": "RANGE"},
        ],
        "AttributeDefinitions": [
            {"AttributeName": hash_key, "AttributeType": "S"},
            {"AttributeName": range_key, "AttributeType": "S"},
        ],
    }


def create_legacy(client: Any, name: str) -> None:
    """Partition key ``endpoint_id``, sort key ``sk``."""
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **_key_schema("endpoint_id"))


def create_engine(client: Any, name: str) -> None:
    """Partition key ``partition_key``, sort key ``sk``, local secondary indexes on
    ``endpoint_id`` and ``part_id``."""
    schema = _key_schema("partition_key")
    schema["AttributeDefinitions"] += [
        {"AttributeName": "endpoint_id", "AttributeType": "S"},
        {"AttributeName": "part_id", "AttributeType": "S"},
    ]
    indexes = [
        {
            "IndexName": f"{attribute}-index",
            "KeySchema": [
                {"AttributeName": "partition_key", "KeyType": "HASH"},
                {"AttributeName": attribute, "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        }
        for attribute in ("endpoint_id", "part_id")
    ]
    client.create_table(
        TableName=name, BillingMode="PAY_PER_REQUEST", LocalSecondaryIndexes=indexes, **schema
    )


def create_receiver(client: Any, name: str) -> None:
    """The example receiver's table: ``pk`` (either key) and ``sk``."""
    client.create_table(TableName=name, BillingMode="PAY_PER_REQUEST", **_key_schema("pk"))


def legacy_items(
    count: int, *, endpoints: int = 20, key: str = "endpoint_id", rich: bool = True
) -> Iterator[dict[str, Any]]:
    """``count`` items in wire form over ``endpoints`` legacy keys ``tenant-<n>``: a string
    and a number each, and with ``rich`` a binary, a set, a map and a list too (moto
    answers those slowly: large tables leave them out)."""
    for n in range(count):
        item = {
            key: {"S": f"tenant-{n % endpoints}"},
            "sk": {"S": f"agent#{n:06d}"},
            "name": {"S": f"agent {n}"},
            "size": {"N": str(n * 3)},
        }
        if rich:
            item.update(
                blob={"B": n.to_bytes(4, "big")},
                tags={"SS": [f"t{n % 3}", "all"]},
                config={"M": {"model": {"S": "gpt"}, "temperature": {"N": "0.5"}}},
                steps={"L": [{"S": "a"}, {"N": str(n)}]},
            )
        yield item


def parts(endpoints: int = 20) -> dict[str, tuple[str, str]]:
    """The mapping of :func:`legacy_items`' keys: ``tenant-<n>`` ->
    (``aws-prod-<n % 2>``, ``tenant-<n>``)."""
    return {f"tenant-{n}": (f"aws-prod-{n % 2}", f"tenant-{n}") for n in range(endpoints)}


def put_all(client: Any, table: str, items: Iterable[Mapping[str, Any]]) -> int:
    """Every item, with ``BatchWriteItem`` (unprocessed items sent again); how many."""
    batch: list[Mapping[str, Any]] = []
    count = 0

    def flush() -> None:
        requests = [{"PutRequest": {"Item": dict(item)}} for item in batch]
        while requests:
            left = client.batch_write_item(RequestItems={table: requests})
            requests = left.get("UnprocessedItems", {}).get(table, [])
        batch.clear()

    for item in items:
        batch.append(item)
        count += 1
        if len(batch) == PAGE:
            flush()
    if batch:
        flush()
    return count


def scan_all(client: Any, table: str) -> list[dict[str, Any]]:
    """Every item of ``table`` (wire form)."""
    items: list[dict[str, Any]] = []
    start: dict[str, Any] | None = None
    while True:
        kw: dict[str, Any] = {"TableName": table}
        if start is not None:
            kw["ExclusiveStartKey"] = start
        answer = client.scan(**kw)
        items += answer["Items"]
        start = answer.get("LastEvaluatedKey")
        if start is None:
            return items
