from __future__ import annotations

from linewatch.core.settings import CommonSettings


class SimulatorSettings(CommonSettings):
    seed: int = 1
