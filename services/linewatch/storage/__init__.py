"""Storage: InfluxDB writes and queries, line protocol, one definition of every measurement, historian imports."""
