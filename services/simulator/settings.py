from __future__ import annotations

from linewatch.settings import CommonSettings


class SimulatorSettings(CommonSettings):
    seed: int = 1
