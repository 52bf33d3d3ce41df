"""The gateway: equipment telemetry from OPC UA and MQTT (Sparkplug B, plain JSON) into telemetry frames on Kafka."""
