from __future__ import annotations

from pydantic import Field

from linewatch.core.settings import CommonSettings, InfluxSettings


class WriterSettings(CommonSettings):
    influx: InfluxSettings = InfluxSettings()
    max_poll_records: int = Field(default=400, gt=0)
    max_in_flight: int = Field(default=3, gt=0)
    max_backoff_s: float = Field(default=5.0, gt=0)
    commit_interval_s: float = Field(default=0.5, ge=0)
