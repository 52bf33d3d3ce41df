"""linewatch: event-driven telemetry and quality control for all-solid-state battery plants.

Layers, each importing only those below it (checked by import-linter, `./dev.sh check`):
  linewatch.tools       commands for people: CLI, dev stack, benchmarks, drills, record/replay/what-if, dashboards
  linewatch.services    one package per service; services never import each other
  linewatch.simulation  the reference plant's physics and faults
  linewatch.storage     InfluxDB writes and queries, line protocol, measurements, historian imports
  linewatch.core        contract, settings, plant model, service registry, Kafka and faust glue, logs, stats
"""
