"""Common package of linewatch: the message contract, settings, plant model and I/O shared by services."""
