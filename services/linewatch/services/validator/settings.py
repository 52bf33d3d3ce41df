from __future__ import annotations

from pydantic import Field

from linewatch.core.settings import CommonSettings


class ValidatorSettings(CommonSettings):
    max_message_bytes: int = Field(default=256 * 1024, gt=0)
    max_future_s: float = Field(default=300.0, ge=0)
    max_past_s: float = Field(default=7 * 86_400.0, ge=0)
