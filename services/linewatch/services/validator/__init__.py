"""validator: raw telemetry frames -> validated frames, everything else -> dead-letter topic with a reason."""
