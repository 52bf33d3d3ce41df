"""OPC UA source (asyncua): one subscription, monitored items grouped by sampling interval and deadband, a
session kept alive and re-established with backoff; after a reconnect, what the server historized while the
gateway was away is read back (HistoryRead). Bad values become dead letters, Uncertain ones are marked."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.common.node import Node
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.uaerrors import UaStatusCodeError

from linewatch.core.stats import StatsCounter
from linewatch.services.gateway.frames import Assembler, Point
from linewatch.services.gateway.settings import OpcUaSettings

log = logging.getLogger(__name__)


def node_path(address: str) -> list[str] | None:
    """A browse path from Objects ("/2:Mill01/2:Speed") as asyncua's get_child wants it; None for a NodeId."""
    if not address.startswith("/"):
        return None
    return [part for part in address.split("/") if part]


class OpcUaSource:
    def __init__(
        self,
        settings: OpcUaSettings,
        points: dict[str, Point],
        assembler: Assembler,
        stats: StatsCounter,
        positions: Callable[[], dict[str, datetime]],
    ) -> None:
        assert settings.endpoint is not None
        self.settings = settings
        self.endpoint = settings.endpoint
        self.points = points
        self.assembler = assembler
        self.stats = stats
        self._positions = positions
        self._by_node: dict[ua.NodeId, Point] = {}
        # Where reading back starts, per unit, until a read-back has gone through: a session lost half way through
        # must not start again from the values the new subscription has flushed meanwhile.
        self._unread: dict[str, datetime] = {}
        self.connected = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                await self._session(stop)
                backoff = 1.0
            except Exception as exc:  # the server away, refusing us, or the session lost: try again later
                self.connected.clear()
                self.stats.counters["opcua_reconnects"] += 1
                log.warning(
                    "OPC UA session lost or refused; reconnecting",
                    extra={"endpoint": self.endpoint, "error": f"{type(exc).__name__}: {exc}", "retry_in_s": backoff},
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(self.settings.max_backoff_s, 2 * backoff)

    async def _session(self, stop: asyncio.Event) -> None:
        client = Client(self.endpoint, timeout=self.settings.timeout_s)
        client.session_timeout = int(self.settings.session_timeout_s * 1000)
        client.application_uri = self.settings.application_uri
        if self.settings.security_policy != "None":
            s = self.settings
            if s.certificate is None or s.private_key is None:
                raise ValueError(
                    "security policy Basic256Sha256 needs LINEWATCH_OPCUA__CERTIFICATE and LINEWATCH_OPCUA__PRIVATE_KEY"
                )
            parts = [s.security_policy, s.security_mode, str(s.certificate), str(s.private_key)]
            if s.server_certificate is not None:
                parts.append(str(s.server_certificate))
            await client.set_security_string(",".join(parts))
        if self.settings.username:
            client.set_user(self.settings.username)
            if self.settings.password is not None:
                client.set_password(self.settings.password.get_secret_value())
        async with client:
            # Taken before subscribing: what this session receives must not move the start of the read-back.
            for unit, ts in self._positions().items():
                self._unread[unit] = min(ts, self._unread.get(unit, ts))
            nodes = await self._resolve(client)
            subscription = await client.create_subscription(self.settings.publishing_interval_ms, _Handler(self))
            await self._monitor(subscription, nodes)
            self.connected.set()
            log.info("OPC UA connected", extra={"endpoint": self.endpoint, "monitored": len(nodes)})
            if self.settings.backfill:
                await self._backfill(nodes)
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.keepalive_s)
                await client.check_connection()  # raises once the session or its channel is gone
        self.connected.clear()

    async def _resolve(self, client: Client) -> dict[str, Node]:
        nodes: dict[str, Node] = {}
        self._by_node = {}
        for address, point in self.points.items():
            path = node_path(address)
            try:
                node = await client.nodes.objects.get_child(path) if path else client.get_node(address)
                if path is None:
                    await node.read_browse_name()  # a NodeId the server does not have fails here, not later
            except Exception as exc:
                self.stats.counters["opcua_unknown_nodes"] += 1
                log.error(
                    "OPC UA address not found on the server: sensor not read",
                    extra={"address": address, "sensor": f"{point.equipment.id}.{point.sensor}", "error": str(exc)},
                )
                continue
            nodes[address] = node
            self._by_node[node.nodeid] = point
        return nodes

    async def _monitor(self, subscription: Any, nodes: dict[str, Node]) -> None:
        groups: dict[tuple[float, float], list[Node]] = defaultdict(list)
        for address, node in nodes.items():
            point = self.points[address]
            groups[(point.period_s, point.deadband)].append(node)
        for (period_s, deadband), members in groups.items():
            value_filter = None
            if deadband > 0:
                value_filter = ua.DataChangeFilter(
                    Trigger=ua.DataChangeTrigger.StatusValueTimestamp,
                    DeadbandType=ua.DeadbandType.Absolute,
                    DeadbandValue=deadband,
                )
            # The public helpers cannot give a sampling interval and a deadband filter together.
            requests = [
                subscription._make_monitored_item_request(
                    node,
                    AttributeIds.Value,
                    value_filter,
                    self.settings.queue_size,
                    ua.MonitoringMode.Reporting,
                    period_s * 1000,
                )
                for node in members
            ]
            for node, result in zip(members, await subscription.create_monitored_items(requests), strict=True):
                if isinstance(result, ua.StatusCode):
                    self.stats.counters["opcua_monitor_refused"] += 1
                    log.error(
                        "OPC UA server refused to monitor a node", extra={"node": str(node), "status": result.name}
                    )

    async def _backfill(self, nodes: dict[str, Node]) -> None:
        """Values the server historized since the newest sample of each unit that had reached the buffer when the
        session began."""
        positions = self._unread
        now = datetime.now(UTC)
        earliest = now - timedelta(seconds=self.settings.max_backfill_s)
        read = 0
        for address, node in nodes.items():
            point = self.points[address]
            since = positions.get(point.equipment.id)
            if since is None:
                continue
            try:
                history = await node.read_raw_history(max(since, earliest), now)
            except UaStatusCodeError as exc:
                log.warning(
                    "no history on the OPC UA server: what changed while away is not read back",
                    extra={"endpoint": self.endpoint, "status": type(exc).__name__},
                )
                break
            for value in history:
                self.take(point, value, f"opcua:{address}")
            read += len(history)
        self._unread = {}
        self.stats.counters["opcua_backfilled"] += read
        if read:
            log.info("read back what the server kept while the gateway was away", extra={"values": read})

    def take(self, point: Point, value: ua.DataValue, source: str) -> None:
        status = value.StatusCode or ua.StatusCode()
        ts = value.SourceTimestamp or value.ServerTimestamp or datetime.now(UTC)
        ts = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)
        sensor = f"{point.equipment.id}.{point.sensor}"
        if status.is_bad():
            detail = f"{sensor} at {ts.isoformat()}: {status.name}"
            self.assembler.reject(source, "opcua_bad_status", detail, detail.encode(), point.equipment.id)
            return
        number = value.Value.Value if value.Value is not None else None
        if isinstance(number, bool) or not isinstance(number, int | float):
            detail = f"{sensor} at {ts.isoformat()}: {number!r}"
            self.assembler.reject(source, "not_a_number", detail, detail.encode(), point.equipment.id)
            return
        uncertain = {point.sensor} if status.is_uncertain() else None
        self.stats.counters["values_in"] += 1
        self.assembler.add(point.equipment.id, ts, {point.sensor: float(number)}, uncertain)


class _Handler:
    """asyncua calls this for every notification, on the client's loop."""

    def __init__(self, source: OpcUaSource) -> None:
        self._source = source

    def datachange_notification(self, node: Node, value: Any, data: Any) -> None:
        point = self._source._by_node.get(node.nodeid)
        if point is not None:
            self._source.take(point, data.monitored_item.Value, f"opcua:{point.address}")

    def status_change_notification(self, status: Any) -> None:
        log.warning("OPC UA subscription status changed", extra={"status": str(status)})
