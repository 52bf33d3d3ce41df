"""The plant as an OPC UA server (asyncua): a folder per line, an object per unit, an AnalogItemType variable per
sensor with EngineeringUnits and EURange, NodeIds `ns=2;s={equipment}.{sensor}` (the reference plant's
`sources.opcua`), values historized in memory so a client that was away can read back what it missed."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.common.node import Node
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator
from asyncua.server.server import Server

from linewatch.core.plant import PlantModel

NAMESPACE = "urn:linewatch:plant"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerSecurity:
    """Basic256Sha256 SignAndEncrypt only, users by name and password, and clients only with a trusted certificate."""

    certificate: Path  # DER, its URI the server's application URI
    private_key: Path  # PEM
    trusted: Path  # a directory of trusted client certificates (DER)
    users: dict[str, str]
    application_uri: str = "urn:linewatch:plant-simulator"


class _Users:
    def __init__(self, users: dict[str, str]) -> None:
        self._users = users

    def get_user(
        self, iserver: Any, username: str | None = None, password: str | None = None, certificate: Any = None
    ) -> Any:
        known = username is not None and password is not None and self._users.get(username) == password
        return User(role=UserRole.User, name=username) if known else None


class PlantServer:
    def __init__(
        self,
        plant: PlantModel,
        port: int,
        history: timedelta = timedelta(hours=1),
        bind: str = "127.0.0.1",
        security: ServerSecurity | None = None,
    ) -> None:
        self.plant = plant
        self.endpoint = f"opc.tcp://{bind}:{port}/linewatch/"
        self.history = history
        self.security = security
        self.server = Server(user_manager=_Users(security.users)) if security else Server()
        self.variables: dict[tuple[str, str], Node] = {}

    async def start(self) -> PlantServer:
        # asyncua warns once per variable that AnalogItemType's optional MinimumSamplingInterval is not instantiated.
        logging.getLogger("asyncua.common.instantiate_util").setLevel(logging.ERROR)
        await self.server.init()
        self.server.set_endpoint(self.endpoint)
        self.server.set_server_name("linewatch plant simulator")
        if self.security is not None:
            await self.server.set_application_uri(self.security.application_uri)
            self.server.set_security_policy([ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt])
            self.server.set_security_IDs(["Username"])
            await self.server.load_certificate(str(self.security.certificate))
            await self.server.load_private_key(str(self.security.private_key))
            store = TrustStore([self.security.trusted], [])
            await store.load()
            self.server.set_certificate_validator(CertificateValidator(trust_store=store).validate)
        index = await self.server.register_namespace(NAMESPACE)
        objects = self.server.nodes.objects
        plant = await objects.add_folder(ua.NodeId(self.plant.site, index), f"{index}:{self.plant.site}")
        folders: dict[str, Node] = {}
        for equipment in self.plant.equipment:
            if equipment.line not in folders:
                folders[equipment.line] = await plant.add_folder(
                    ua.NodeId(f"{equipment.area}.{equipment.line}", index), f"{index}:{equipment.line}"
                )
            unit = await folders[equipment.line].add_object(ua.NodeId(equipment.id, index), f"{index}:{equipment.id}")
            for sensor, spec in self.plant.classes[equipment.equipment_class].sensors.items():
                node = await unit.add_variable(
                    ua.NodeId(f"{equipment.id}.{sensor}", index),
                    f"{index}:{sensor}",
                    float(spec.nominal),
                    varianttype=ua.VariantType.Double,
                    datatype=ua.NodeId(ua.ObjectIds.Double),
                )
                await _analog(node, spec.unit, spec.normal)
                self.variables[(equipment.id, sensor)] = node
        await self.server.start()
        await self.server.historize_node_data_change(list(self.variables.values()), period=self.history)
        log.info("OPC UA plant server", extra={"endpoint": self.endpoint, "variables": len(self.variables)})
        return self

    async def write(self, equipment_id: str, sensor: str, value: float, ts: datetime, status: int = 0) -> None:
        """A value with its source timestamp (and a status code: Good by default), as the equipment would."""
        node = self.variables[(equipment_id, sensor)]
        data = ua.DataValue(
            ua.Variant(value, ua.VariantType.Double),
            StatusCode=ua.StatusCode(status),
            SourceTimestamp=ts,
            ServerTimestamp=ts,
        )
        await self.server.write_attribute_value(node.nodeid, data)

    async def stop(self) -> None:
        await self.server.stop()


async def _analog(node: Node, unit: str, normal: tuple[float, float]) -> None:
    """EngineeringUnits and EURange properties, as an AnalogItemType variable carries them."""
    units = ua.EUInformation(
        NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact", DisplayName=ua.LocalizedText(unit)
    )
    await node.add_property(0, "EngineeringUnits", units)
    await node.add_property(0, "EURange", ua.Range(Low=normal[0], High=normal[1]))
