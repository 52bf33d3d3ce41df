"""Sparkplug B payloads (Eclipse Tahu `sparkplug_b.proto`, package org.eclipse.tahu.protobuf), built with the
protobuf runtime alone: no generated code to keep in step with the runtime's version, no protoc.

Only what linewatch reads and writes is declared: the payload and its metrics' scalar values. DataSets, Templates,
metadata and property sets are parsed as unknown fields (protobuf keeps them) and their metrics are refused by
the gateway as "not a number"."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

NAMESPACE = "spBv1.0"
REBIRTH_METRIC = "Node Control/Rebirth"
BDSEQ_METRIC = "bdSeq"

# Sparkplug B datatypes of the scalar values (spec 6.4.16).
INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64 = 1, 2, 3, 4, 5, 6, 7, 8
FLOAT, DOUBLE, BOOLEAN, STRING, DATETIME, TEXT = 9, 10, 11, 12, 13, 14

_F = descriptor_pb2.FieldDescriptorProto
_METRIC_FIELDS = [
    ("name", 1, _F.TYPE_STRING),
    ("alias", 2, _F.TYPE_UINT64),
    ("timestamp", 3, _F.TYPE_UINT64),
    ("datatype", 4, _F.TYPE_UINT32),
    ("is_historical", 5, _F.TYPE_BOOL),
    ("is_transient", 6, _F.TYPE_BOOL),
    ("is_null", 7, _F.TYPE_BOOL),
    ("int_value", 10, _F.TYPE_UINT32),
    ("long_value", 11, _F.TYPE_UINT64),
    ("float_value", 12, _F.TYPE_FLOAT),
    ("double_value", 13, _F.TYPE_DOUBLE),
    ("boolean_value", 14, _F.TYPE_BOOL),
    ("string_value", 15, _F.TYPE_STRING),
    ("bytes_value", 16, _F.TYPE_BYTES),
]
_VALUE_FIELDS = {
    "int_value",
    "long_value",
    "float_value",
    "double_value",
    "boolean_value",
    "string_value",
    "bytes_value",
}


def _payload_class() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="linewatch/sparkplug_b.proto", package="org.eclipse.tahu.protobuf", syntax="proto2"
    )
    payload = file.message_type.add(name="Payload")
    metric = payload.nested_type.add(name="Metric")
    metric.oneof_decl.add(name="value")
    for name, number, kind in _METRIC_FIELDS:
        field = metric.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
        if name in _VALUE_FIELDS:
            field.oneof_index = 0
    payload.field.add(name="timestamp", number=1, type=_F.TYPE_UINT64, label=_F.LABEL_OPTIONAL)
    payload.field.add(
        name="metrics",
        number=2,
        type=_F.TYPE_MESSAGE,
        label=_F.LABEL_REPEATED,
        type_name=".org.eclipse.tahu.protobuf.Payload.Metric",
    )
    payload.field.add(name="seq", number=3, type=_F.TYPE_UINT64, label=_F.LABEL_OPTIONAL)
    payload.field.add(name="uuid", number=4, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    payload.field.add(name="body", number=5, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()  # our own pool: another Sparkplug module in the process cannot clash
    pool.Add(file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("org.eclipse.tahu.protobuf.Payload"))


Payload: Any = _payload_class()


def metric_value(metric: Any) -> float | None:
    """A scalar metric's value as a float (signed integers per their datatype), None for what is not a number."""
    kind = metric.WhichOneof("value")
    if kind == "double_value" or kind == "float_value":
        return float(getattr(metric, kind))
    if kind == "int_value":
        value = metric.int_value
        if metric.datatype in (INT8, INT16, INT32) and value >= 1 << 31:
            value -= 1 << 32  # signed values travel as their two's complement in a uint32
        return float(value)
    if kind == "long_value":
        value = metric.long_value
        if metric.datatype == INT64 and value >= 1 << 63:
            value -= 1 << 64
        return float(value)
    if kind == "boolean_value":
        return 1.0 if metric.boolean_value else 0.0
    return None


def topic(group: str, kind: str, node: str, device: str | None = None) -> str:
    return f"{NAMESPACE}/{group}/{kind}/{node}" + (f"/{device}" if device else "")


def rebirth_request(timestamp_ms: int) -> bytes:
    """The NCMD payload that asks an edge node to publish its births again."""
    payload = Payload(timestamp=timestamp_ms)
    payload.metrics.add(name=REBIRTH_METRIC, timestamp=timestamp_ms, datatype=BOOLEAN, boolean_value=True)
    return bytes(payload.SerializeToString())
