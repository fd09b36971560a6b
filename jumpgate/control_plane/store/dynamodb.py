"""The AWS state store: one DynamoDB table through pynamodb.

Layout: hash key ``pk`` is the tenant's partition (``/tenants/acme``), never one global
partition; range key ``sk`` is the key within it (``users/alice``). ``expires`` is the table's
TTL attribute (epoch seconds); because DynamoDB sweeps late and moto never, every read and
every condition treats an item past ``expires`` as absent. Reads are strongly consistent.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import boto3
import botocore.session
from pynamodb.attributes import BinaryAttribute, NumberAttribute, UnicodeAttribute
from pynamodb.connection import Connection
from pynamodb.exceptions import (
    DeleteError,
    DoesNotExist,
    PutError,
    TransactWriteError,
)
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from jumpgate.control_plane.clock import Clock, SystemClock
from jumpgate.control_plane.store.base import (
    MAX_PAGE,
    AtomicWriteFailed,
    CompareAndSwap,
    Create,
    Delete,
    Item,
    KeyExists,
    KeyNotFound,
    Op,
    Page,
    Put,
    RevisionMismatch,
    Store,
    check_key,
    check_ops,
    check_prefix,
    decode_cursor,
    encode_cursor,
    expiry_datetime,
    expiry_seconds,
    partition,
)
from jumpgate.control_plane.store.throttle import Retrier

_CONDITION_FAILED = "ConditionalCheckFailedException"


class _KV(Model):
    """Attribute layout shared by every table; ``model_for`` binds it to one table."""

    pk = UnicodeAttribute(hash_key=True)
    sk = UnicodeAttribute(range_key=True)
    value = BinaryAttribute(legacy_encoding=False)
    revision = UnicodeAttribute()
    expires = NumberAttribute(null=True)


def model_for(table_name: str, region: str, host: str | None = None) -> type[_KV]:
    """A model class bound to one table (pynamodb binds tables at class creation)."""
    return type(f"KV_{table_name}", (_KV,), {"Meta": table_meta(table_name, region, host)})


def table_meta(table_name: str, region: str, host: str | None) -> type:
    """pynamodb's ``Meta`` for a table; no retries of its own (``throttle.Retrier`` does them)."""
    return type(
        "Meta",
        (),
        {"table_name": table_name, "region": region, "host": host, "max_retry_attempts": 0},
    )


class SessionConnection(Connection):
    """pynamodb's connection on a botocore session it is given, its client made now.

    pynamodb makes a botocore session for each connection (and thread) and its client on the
    first request; each session loads the endpoint rules and DynamoDB's service model again,
    about 30 ms. A function makes one session for all its clients (``lambdas.runtime``) and
    every table it uses goes through one connection (``bind``), so a cold start loads them
    once, before the first request rather than during it.
    """

    def __init__(
        self, session: botocore.session.Session, *, region: str, host: str | None = None
    ) -> None:
        super().__init__(region=region, host=host, max_retry_attempts=0)
        self._shared = session
        _ = self.client  # made now, in the thread that opens the stores

    @property
    def session(self) -> botocore.session.Session:
        return self._shared


def connect(region: str, host: str | None = None) -> SessionConnection:
    """A connection on a session of its own (a daemon, a test: one per store)."""
    return SessionConnection(botocore.session.get_session(), region=region, host=host)


def bind(model: type[Model], connection: Connection) -> None:
    """Serve ``model``'s table through ``connection`` (pynamodb gives each model its own)."""
    table = model._get_connection()
    connection.add_meta_table(table.get_meta_table())
    table.connection = connection


def create_with_ttl(model: type[Model], region: str, host: str | None) -> bool:
    """Create ``model``'s table (on demand) with TTL on ``expires``; False if it existed."""
    if model.exists():
        return False
    model.create_table(billing_mode="PAY_PER_REQUEST", wait=True)
    client = boto3.client("dynamodb", region_name=region, endpoint_url=host)
    client.update_time_to_live(
        TableName=model.Meta.table_name,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"},
    )
    return True


def ensure_table(table_name: str, region: str, host: str | None = None) -> None:
    """Create the table if missing, with TTL on ``expires`` and point-in-time recovery.

    Production tables come from the infrastructure code; this serves local and dev use.
    """
    model = model_for(table_name, region, host)
    if not create_with_ttl(model, region, host):
        return
    client = boto3.client("dynamodb", region_name=region, endpoint_url=host)
    client.update_continuous_backups(
        TableName=table_name,
        PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True},
    )


class DynamoDBStore(Store):
    """State in a DynamoDB table; see the module docstring for the layout."""

    def __init__(
        self,
        table_name: str,
        *,
        region: str,
        host: str | None = None,
        clock: Clock | None = None,
        connection: Connection | None = None,
    ) -> None:
        self._model = model_for(table_name, region, host)
        self._connection = connection or connect(region, host)
        bind(self._model, self._connection)
        self._clock = clock or SystemClock()
        self._retry = Retrier(table_name)

    def _now(self) -> int:
        return int(self._clock.now().timestamp())

    def _live(self, row: _KV) -> bool:
        return row.expires is None or int(row.expires) > self._now()

    def _not_live(self) -> Any:
        m = self._model
        return m.pk.does_not_exist() | (m.expires.exists() & (m.expires <= self._now()))

    def _is_live(self) -> Any:
        m = self._model
        return m.pk.exists() & (m.expires.does_not_exist() | (m.expires > self._now()))

    def _row(self, pk: str, key: str, value: bytes, expires: datetime | None) -> _KV:
        return self._model(
            pk, key, value=value, revision=uuid.uuid4().hex, expires=expiry_seconds(expires)
        )

    @staticmethod
    def _item(row: _KV) -> Item:
        return Item(row.sk, bytes(row.value), row.revision, expiry_datetime(row.expires))

    def get(self, tenant: str, key: str) -> Item:
        try:
            pk, sk = partition(tenant), check_key(key)
            row = self._retry("get", lambda: self._model.get(pk, sk, consistent_read=True))
        except DoesNotExist:
            row = None
        if row is None or not self._live(row):
            raise KeyNotFound(f"{key} not found")
        return self._item(row)

    def put(self, tenant: str, key: str, value: bytes, *, expires: datetime | None = None) -> Item:
        row = self._row(partition(tenant), check_key(key), value, expires)
        self._retry("put", row.save)
        return self._item(row)

    def create(
        self, tenant: str, key: str, value: bytes, *, expires: datetime | None = None
    ) -> Item:
        row = self._row(partition(tenant), check_key(key), value, expires)
        try:
            self._retry("create", lambda: row.save(condition=self._not_live()))
        except PutError as exc:
            if exc.cause_response_code == _CONDITION_FAILED:
                raise KeyExists(f"{key} exists already") from exc
            raise
        return self._item(row)

    def compare_and_swap(
        self,
        tenant: str,
        key: str,
        value: bytes,
        *,
        revision: str,
        expires: datetime | None = None,
    ) -> Item:
        row = self._row(partition(tenant), check_key(key), value, expires)
        try:
            condition = self._is_live() & (self._model.revision == revision)
            self._retry("compare_and_swap", lambda: row.save(condition=condition))
        except PutError as exc:
            if exc.cause_response_code == _CONDITION_FAILED:
                self.get(tenant, key)  # KeyNotFound when absent, else it was the revision
                raise RevisionMismatch(f"{key} changed since it was read") from exc
            raise
        return self._item(row)

    def delete(self, tenant: str, key: str, *, revision: str | None = None) -> None:
        pk = partition(tenant)
        condition = self._is_live()
        if revision is not None:
            condition &= self._model.revision == revision
        try:
            row = self._model(pk, check_key(key))
            self._retry("delete", lambda: row.delete(condition=condition))
        except DeleteError as exc:
            if exc.cause_response_code == _CONDITION_FAILED:
                self.get(tenant, key)
                raise RevisionMismatch(f"{key} changed since it was read") from exc
            raise

    def list(
        self, tenant: str, prefix: str, *, limit: int = 100, cursor: str | None = None
    ) -> Page:
        pk, prefix = partition(tenant), check_prefix(prefix)
        limit = max(1, min(limit, MAX_PAGE))
        start = None
        if cursor:
            start = {"pk": {"S": pk}, "sk": {"S": decode_cursor(cursor, prefix)}}
        key_condition = self._model.sk.startswith(prefix) if prefix else None
        # Expired items are skipped here, not by a filter expression: a filtered query's
        # Limit counts items before the filter, which would make short pages.
        rows = self._model.query(
            pk,
            key_condition,
            consistent_read=True,
            last_evaluated_key=start,
            page_size=limit + 1,
        )
        items: list[Item] = []
        for row in self._retry.each("query", rows):
            if not self._live(row):
                continue
            if len(items) == limit:
                return Page(items, encode_cursor(items[-1].key))
            items.append(self._item(row))
        return Page(items, None)

    def dump(self) -> builtins.list[tuple[str, str, bytes]]:
        """Every raw item, expired or not: for operators' backups and the at-rest tests."""
        rows = sorted(self._model.scan(consistent_read=True), key=lambda r: (r.pk, r.sk))
        return [(r.pk, r.sk, bytes(r.value)) for r in rows]

    def atomic_write(self, tenant: str, ops: Sequence[Op]) -> None:
        pk = partition(tenant)
        check_ops(ops)
        try:
            self._retry("transact_write", lambda: self._transact(pk, ops))
        except TransactWriteError as exc:
            reasons = getattr(exc, "cancellation_reasons", None) or []
            failed = [
                op.key
                for op, reason in zip(_as_transacted(ops), reasons, strict=False)
                if reason is not None and reason.code == "ConditionalCheckFailed"
            ]
            where = f" on {failed[0]}" if failed else ""
            raise AtomicWriteFailed(
                f"atomic write failed: a condition did not hold{where}"
            ) from exc

    def _transact(self, pk: str, ops: Sequence[Op]) -> None:
        m = self._model
        with TransactWrite(connection=self._connection) as tx:
            for op in ops:
                match op:
                    case Put(key, value, expires):
                        tx.save(self._row(pk, key, value, expires))
                    case Create(key, value, expires):
                        tx.save(self._row(pk, key, value, expires), condition=self._not_live())
                    case CompareAndSwap(key, value, revision, expires):
                        tx.save(
                            self._row(pk, key, value, expires),
                            condition=self._is_live() & (m.revision == revision),
                        )
                    case Delete(key, revision):
                        condition = self._is_live()
                        if revision is not None:
                            condition &= m.revision == revision
                        tx.delete(m(pk, key), condition=condition)


def _as_transacted(ops: Sequence[Op]) -> list[Op]:
    """``ops`` in the order pynamodb sends them: condition checks, deletes, puts, updates."""
    return [op for op in ops if isinstance(op, Delete)] + [
        op for op in ops if not isinstance(op, Delete)
    ]
