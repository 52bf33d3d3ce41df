"""The plant as Sparkplug B edge nodes (paho-mqtt): an edge node per line, a device per unit; births name every
metric with an alias, data carries aliases only, and a rebirth request (NCMD Node Control/Rebirth) is answered
with the births again, as a PLC gateway would."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from linewatch.core import sparkplug
from linewatch.core.plant import PlantModel

log = logging.getLogger(__name__)


class PlantEdgeNodes:
    def __init__(self, plant: PlantModel, host: str, port: int) -> None:
        self.plant = plant
        self.aliases: dict[tuple[str, str], int] = {}
        for equipment in plant.equipment:
            for sensor in plant.classes[equipment.equipment_class].sensors:
                self.aliases[(equipment.id, sensor)] = len(self.aliases) + 1
        self.seq: dict[str, int] = {}  # per edge node (line)
        self._born: set[str] = set()
        self._rebirth: set[str] = set()
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"linewatch-edge-{plant.site}")
        self.client.max_inflight_messages_set(1000)
        self.client.on_message = self._command
        self.client.connect(host, port)
        self.client.subscribe(f"{sparkplug.NAMESPACE}/{plant.site}/NCMD/+", qos=1)
        self.client.loop_start()

    def _command(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            payload = sparkplug.Payload.FromString(message.payload)
        except Exception:  # not ours to answer
            return
        if any(m.name == sparkplug.REBIRTH_METRIC and m.boolean_value for m in payload.metrics):
            with self._lock:
                self._rebirth.add(message.topic.rsplit("/", 1)[-1])

    def publish(self, equipment_id: str, ts: datetime, values: dict[str, float]) -> None:
        equipment = self.plant.equipment_by_id[equipment_id]
        node = equipment.line
        with self._lock:
            again = node in self._rebirth
            self._rebirth.discard(node)
        if again or node not in self._born:
            self._births(node)
        ms = int(ts.timestamp() * 1000)
        payload = sparkplug.Payload(timestamp=ms)
        for sensor, value in values.items():
            payload.metrics.add(
                alias=self.aliases[(equipment_id, sensor)], timestamp=ms, datatype=sparkplug.DOUBLE, double_value=value
            )
        self._send("DDATA", node, equipment_id, payload)

    def _births(self, node: str) -> None:
        self.seq[node] = 0
        self._born.add(node)
        now = int(time.time() * 1000)
        birth = sparkplug.Payload(timestamp=now)
        birth.metrics.add(name=sparkplug.BDSEQ_METRIC, datatype=sparkplug.INT64, long_value=0)
        birth.metrics.add(name=sparkplug.REBIRTH_METRIC, datatype=sparkplug.BOOLEAN, boolean_value=False)
        self._send("NBIRTH", node, None, birth)
        for equipment in self.plant.equipment:
            if equipment.line != node:
                continue
            device = sparkplug.Payload(timestamp=now)
            for sensor in self.plant.classes[equipment.equipment_class].sensors:
                # Names and aliases only: the birth's values would be samples at the birth's time.
                device.metrics.add(
                    name=sensor, alias=self.aliases[(equipment.id, sensor)], datatype=sparkplug.DOUBLE, is_null=True
                )
            self._send("DBIRTH", node, equipment.id, device)
        log.info("Sparkplug B births published", extra={"edge_node": node})

    def _send(self, kind: str, node: str, device: str | None, payload: Any) -> None:
        payload.seq = self.seq[node]
        self.seq[node] = (self.seq[node] + 1) % 256
        info = self.client.publish(
            sparkplug.topic(self.plant.site, kind, node, device), payload.SerializeToString(), qos=1
        )
        if info.mid % 5000 == 0:  # paho refuses more than 65,535 unacknowledged QoS 1 messages
            info.wait_for_publish(60)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()
