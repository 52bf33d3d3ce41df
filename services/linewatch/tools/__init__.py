"""Tools for people: the `linewatch` command, the embedded dev stack, benchmarks, drills, record/replay/what-if,
the live view and the Grafana dashboards."""
