"""Durable writes to InfluxDB: v1 `/write` (1.x) or v2 through influxdb-client (1.8+, 2.x, 3.x).

`write()` returns only after a 2xx. It retries with capped backoff while InfluxDB is unreachable or
answers 5xx/404/401 (nothing is lost, the caller simply waits); a 400 means bad data and is raised as
`InfluxRejected` so the caller can dead-letter the offending records.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

import aiohttp

from linewatch.core.settings import InfluxSettings

log = logging.getLogger(__name__)


class InfluxRejected(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"InfluxDB rejected the write ({status}): {message}")
        self.status = status
        self.message = message


class InfluxUnavailable(Exception):
    """A failure worth retrying: connection refused or reset, timeout, 5xx, unknown database, auth."""


class _Backend(Protocol):
    async def post(self, body: bytes) -> None: ...
    async def close(self) -> None: ...


class _V1Backend:
    def __init__(self, settings: InfluxSettings) -> None:
        self._url = f"{settings.url.rstrip('/')}/write"
        self._params = {"db": settings.database, "precision": "ns"}
        self._headers: dict[str, str] = {}
        if settings.token is not None:
            self._headers["Authorization"] = f"Token {settings.token.get_secret_value()}"
        elif settings.username and settings.password is not None:
            self._params |= {"u": settings.username, "p": settings.password.get_secret_value()}
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=settings.timeout_s))

    async def post(self, body: bytes) -> None:
        try:
            async with self._session.post(self._url, params=self._params, data=body, headers=self._headers) as response:
                if response.status < 300:
                    return
                text = (await response.text())[:500]
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise InfluxUnavailable(f"{type(exc).__name__}: {exc}") from exc
        if response.status == 400:
            raise InfluxRejected(response.status, text)
        raise InfluxUnavailable(f"HTTP {response.status}: {text}")

    async def close(self) -> None:
        await self._session.close()


class _V2Backend:
    def __init__(self, settings: InfluxSettings) -> None:
        from influxdb_client.client.influxdb_client_async import InfluxDBClientAsync

        token = settings.token.get_secret_value() if settings.token is not None else ""
        self._client = InfluxDBClientAsync(
            url=settings.url, token=token, org=settings.org, timeout=int(settings.timeout_s * 1000)
        )
        self._write_api = self._client.write_api()
        self._bucket = settings.bucket

    async def post(self, body: bytes) -> None:
        from influxdb_client.client.exceptions import InfluxDBError
        from influxdb_client.domain.write_precision import WritePrecision
        from influxdb_client.rest import ApiException

        try:
            await self._write_api.write(
                bucket=self._bucket,
                record=body,
                write_precision=WritePrecision.NS,  # type: ignore[arg-type]  # a str constant
            )
        except (ApiException, InfluxDBError) as exc:
            status = int(getattr(exc, "status", 0) or getattr(getattr(exc, "response", None), "status", 0) or 0)
            if status in (400, 422):
                raise InfluxRejected(status, str(exc)[:500]) from exc
            raise InfluxUnavailable(f"HTTP {status}: {str(exc)[:500]}") from exc
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise InfluxUnavailable(f"{type(exc).__name__}: {exc}") from exc

    async def close(self) -> None:
        await self._client.close()  # type: ignore[no-untyped-call]


class InfluxWriter:
    def __init__(self, settings: InfluxSettings, max_backoff_s: float = 5.0) -> None:
        self._backend: _Backend = _V1Backend(settings) if settings.api == "v1" else _V2Backend(settings)
        self._max_backoff_s = max_backoff_s
        self.retries = 0

    async def write(self, body: bytes) -> None:
        """Return once InfluxDB acknowledged `body` (2xx); raise InfluxRejected on a 400."""
        delay = 0.1
        while True:
            try:
                await self._backend.post(body)
                return
            except InfluxUnavailable as exc:
                self.retries += 1
                log.warning("influxdb write failed, retrying", extra={"error": str(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._max_backoff_s)

    async def close(self) -> None:
        await self._backend.close()


def influxql(
    settings: InfluxSettings, query: str, epoch: str | None = None, timeout_s: float = 120.0
) -> list[dict[str, Any]]:
    """Run one InfluxQL query (1.x `/query`, or 2.x/3.x through the v1 compatibility API) and return its
    series: [{"name", "tags", "columns", "values"}]. Times are RFC 3339 text, or integers in `epoch` units."""
    import json
    import urllib.parse
    import urllib.request

    params = {"db": settings.database, "q": query} | ({"epoch": epoch} if epoch else {})
    headers = {}
    if settings.token is not None:
        headers["Authorization"] = f"Token {settings.token.get_secret_value()}"
    elif settings.username and settings.password is not None:
        params |= {"u": settings.username, "p": settings.password.get_secret_value()}
    url = f"{settings.url.rstrip('/')}/query?{urllib.parse.urlencode(params)}"
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (our configured InfluxDB URL)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
        result = json.loads(response.read())["results"][0]
    if "error" in result:
        raise ValueError(f"InfluxQL error: {result['error']}")
    series: list[dict[str, Any]] = result.get("series", [])
    return series


def quote(text: str) -> str:
    """An InfluxQL string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
