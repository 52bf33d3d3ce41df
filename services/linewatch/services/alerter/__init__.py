"""alerter: quality alarms with the ISA-18.2 lifecycle (the lifecycle core; service wiring is issue 4)."""
