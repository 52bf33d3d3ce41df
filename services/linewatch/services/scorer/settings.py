from __future__ import annotations

from pathlib import Path

from pydantic import Field

from linewatch.core.settings import REPO_ROOT, CommonSettings, Credential, InfluxSettings


class ScorerSettings(CommonSettings):
    registry: Path = REPO_ROOT / "models"
    # Signs and verifies model artifacts; never stored with them.
    model_signing_key: Credential | None = None
    reload_interval_s: float = Field(default=5.0, gt=0)
    # Learning mode: with no active model, learn the first one from this many hours of running data (sample time),
    # then train, sign and activate it (see `learning`); 0: off, a model comes from `linewatch train`.
    learn_h: float = Field(default=0.0, ge=0)
    # Training: the share of a unit's normal samples allowed to alarm, after the debounce.
    false_alarm_pct: float = Field(default=0.5, gt=0, lt=50)
    false_alerts_per_week: float = Field(default=0.5, gt=0)  # per unit: runs of alarming samples
    # Only `linewatch train --influx` reads InfluxDB; the scoring service does not.
    influx: InfluxSettings = InfluxSettings()

    def signing_key(self) -> bytes:
        if self.model_signing_key is None:
            raise SystemExit("LINEWATCH_MODEL_SIGNING_KEY is not set: models cannot be signed or verified")
        return self.model_signing_key.get_secret_value().encode()
