"""simulator: a plant of correlated equipment signals with labelled faults, published to Kafka."""
