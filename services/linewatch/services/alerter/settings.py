from __future__ import annotations

import ssl
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, FilePath, model_validator

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


Role = Literal["viewer", "operator", "supervisor", "engineer"]
# What each role may do through the operator API, each one also what the roles before it may (ISA-18.2: shelving
# and taking alarms out of service are supervised; engineers also own models and rules, outside this API).
ROLES: tuple[Role, ...] = ("viewer", "operator", "supervisor", "engineer")
ROLE_NEEDED = {
    "read": "viewer",
    "acknowledge": "operator",
    "comment": "operator",
    "shelve": "supervisor",
    "unshelve": "supervisor",
    "remove_from_service": "supervisor",
    "return_to_service": "supervisor",
}


class ApiUser(BaseModel):
    token: Credential
    role: Role

    def may(self, what: str) -> bool:
        return ROLES.index(self.role) >= ROLES.index(ROLE_NEEDED.get(what, "engineer"))


def _user(entry: object) -> object:
    """A bare token is a supervisor's, as before roles existed; {"token": ..., "role": ...} names the role."""
    return {"token": entry, "role": "supervisor"} if isinstance(entry, str) else entry


class AlerterSettings(CommonSettings):
    rules_file: Path = DEFAULT_RULES_FILE
    alarm_database: Path = DEFAULT_ALARM_DATABASE  # the rationalized alarms and the priority matrix
    api_host: str = "127.0.0.1"
    api_port: int = 8300
    # HTTPS: the API's certificate chain and key (PEM), e.g. cert-manager's Secret mounted in the pod; without
    # them it speaks plain HTTP, for a proxy or ingress that terminates TLS in front of it.
    api_certfile: FilePath | None = None
    api_keyfile: FilePath | None = None
    # For `linewatch alarms`: the CA that signed the API's certificate, where it is not one the system trusts.
    api_cafile: FilePath | None = None
    # user name -> bearer token and role, e.g. LINEWATCH_API_TOKENS='{"bob": {"token": "...", "role": "operator"}}';
    # the token says who acted and what they may do (a bare token, {"alice": "..."}, is a supervisor's).
    api_tokens: dict[str, Annotated[ApiUser, BeforeValidator(_user)]] = {}
    notify: NotifySettings = NotifySettings()
    grafana: GrafanaSettings = GrafanaSettings()
    # ISA-18.2 KPIs (measurement alarm_kpi) over the last `kpi_window_h`, every `kpi_interval_s` by the leader
    # worker, so the dashboards have them without anyone running `linewatch alarms kpi`; 0 turns it off.
    kpi_interval_s: float = Field(default=600.0, ge=0)
    kpi_window_h: float = Field(default=24.0, gt=0)
    # For `linewatch alarms` / `linewatch lots`: where the API and InfluxDB are, and the operator's own token.
    api_url: str | None = None
    operator_token: OptionalCredential = None
    influx: InfluxSettings = InfluxSettings()

    @model_validator(mode="after")
    def _certificate_has_its_key(self) -> AlerterSettings:
        if (self.api_certfile is None) != (self.api_keyfile is None):
            raise ValueError("HTTPS needs both LINEWATCH_API_CERTFILE and LINEWATCH_API_KEYFILE")
        return self

    def api_base(self) -> str:
        scheme = "http" if self.api_certfile is None else "https"
        return (self.api_url or f"{scheme}://{self.api_host}:{self.api_port}").rstrip("/")

    def api_server_tls(self) -> ssl.SSLContext | None:
        if self.api_certfile is None or self.api_keyfile is None:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.api_certfile, self.api_keyfile)
        return context

    def api_client_tls(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=self.api_cafile)
