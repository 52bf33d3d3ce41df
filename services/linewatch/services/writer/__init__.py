"""writer: validated frames -> InfluxDB line protocol; Kafka offsets committed only after a 2xx."""
