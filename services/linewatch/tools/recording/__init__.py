"""Record Kafka topics into self-describing files, replay them into sandboxes, and what-if runs of a
recording through the real services with another model or rule set."""
