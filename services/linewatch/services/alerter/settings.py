from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from linewatch.core.settings import CommonSettings, Credential, InfluxSettings, OptionalCredential
from linewatch.services.alerter.rationalization import DEFAULT_ALARM_DATABASE
from linewatch.services.alerter.rules import DEFAULT_RULES_FILE


class NotifySettings(BaseModel):
    """Where notifications go; the routing itself is in the rules file. Secrets only from the environment."""

    enabled: bool = True  # False in sandboxes (replays, what-if runs): nothing reaches operators
    webhook_url: OptionalCredential = None  # Slack-compatible incoming webhook
    smtp_host: str | None = None
    smtp_port: int = 25
    smtp_from: str = "linewatch@localhost"
    smtp_username: str | None = None
    smtp_password: OptionalCredential = None
    smtp_starttls: bool = False
    timeout_s: float = 10.0
    attempts: int = Field(default=5, ge=1)


class GrafanaSettings(BaseModel):
    url: str | None = None  # annotations are off without it
    token: OptionalCredential = None
    dashboard_uid: str | None = None


class AlerterSettings(CommonSettings):
    rules_file: Path = DEFAULT_RULES_FILE
    alarm_database: Path = DEFAULT_ALARM_DATABASE  # the rationalized alarms and the priority matrix
    api_host: str = "127.0.0.1"
    api_port: int = 8300
    # user name -> bearer token, e.g. LINEWATCH_API_TOKENS='{"alice": "..."}'; the token says who acted.
    api_tokens: dict[str, Credential] = {}
    notify: NotifySettings = NotifySettings()
    grafana: GrafanaSettings = GrafanaSettings()
    # For `linewatch alarms` / `linewatch lots`: where the API and InfluxDB are, and the operator's own token.
    api_url: str | None = None
    operator_token: OptionalCredential = None
    influx: InfluxSettings = InfluxSettings()

    def api_base(self) -> str:
        return (self.api_url or f"http://{self.api_host}:{self.api_port}").rstrip("/")
