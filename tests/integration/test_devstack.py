"""The dev stack's influxd, started by the project on free ports: a port taken between choosing it and influxd's
bind (another server of the run starting) costs a retry on other ports, not the run."""

from __future__ import annotations

import socket

import pytest

from linewatch.tools.devstack import Influxd, InfluxdExited

pytestmark = pytest.mark.reliability


def test_a_port_taken_before_influxd_binds_it_is_traded_for_another(tmp_path_factory: pytest.TempPathFactory) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        influxd = Influxd(root=tmp_path_factory.mktemp("influxd"), http_port=port)
        try:
            influxd.start()
            assert influxd.http_port != port
            assert influxd.query("SHOW DATABASES")["results"]
        finally:
            influxd.stop()


def test_a_restart_keeps_its_ports_and_says_why_it_failed(tmp_path_factory: pytest.TempPathFactory) -> None:
    influxd = Influxd(root=tmp_path_factory.mktemp("influxd")).start()
    port = influxd.http_port
    influxd.stop(kill=True)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the killed influxd's port may linger
        taken.bind(("127.0.0.1", port))
        taken.listen()
        try:
            with pytest.raises(InfluxdExited, match="address already in use"):
                influxd.start()
            assert influxd.http_port == port
        finally:
            influxd.stop()
