"""Core: what every layer above shares: the message contract, typed settings, the plant model, the service
registry, Kafka and faust glue, structured logs and stats."""
