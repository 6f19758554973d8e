"""A small httpx client for the wanflow HTTP API (v1), raising `ClientError`s for every failure.

It knows paths, headers and the error shape, and nothing about presentation; the commands use it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import quote, urlsplit

import httpx

from wanflow_tools.client.errors import ApiError, ClientError, UnavailableError, UsageError, error_from_transport
from wanflow_tools.client.sigv4 import sigv4_auth_for

LOCAL_API_URL = "http://127.0.0.1:8000"
API_URL_VARIABLE = "WANFLOW_API_URL"
DEFAULT_TIMEOUT_SECONDS = 30.0

AuthMode = Literal["auto", "sigv4", "none"]


def resolve_api_url(explicit: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """`--api`, else `WANFLOW_API_URL`, else the local stack."""
    url = explicit or environ.get(API_URL_VARIABLE) or LOCAL_API_URL
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise UsageError(f"not an http(s) URL: {url!r}")
    return url.rstrip("/")


def auth_for(url: str, mode: AuthMode, environ: Mapping[str, str] = os.environ) -> httpx.Auth | None:
    """SigV4 for a deployed stack (any https URL under `auto`), nothing for the local one (plain http)."""
    if mode == "none" or (mode == "auto" and urlsplit(url).scheme != "https"):
        return None
    return sigv4_auth_for(url, environ)


class ApiClient:
    """The wanflow API at `base_url`. Use as a context manager, or call `close()`."""

    def __init__(
        self,
        base_url: str,
        *,
        auth: httpx.Auth | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self._http = httpx.Client(
            base_url=base_url,
            auth=auth,
            timeout=timeout,
            transport=transport,
            headers={"accept": "application/json", "user-agent": "wanflow-cli/1"},
        )
        # Presigned S3 URLs carry their own signature: they are fetched without the API's auth.
        self._plain = httpx.Client(timeout=timeout, transport=transport, follow_redirects=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()
        self._plain.close()

    @property
    def plain(self) -> httpx.Client:
        """An unauthenticated client for presigned S3 URLs (uploads and video downloads)."""
        return self._plain

    # -- the API ------------------------------------------------------------------------------------------------

    def create_job(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/v1/jobs", json=body, headers=headers)

    def get_job(self, job_id: str) -> dict[str, Any]:
        return self._request("GET", f"/v1/jobs/{_segment(job_id)}")

    def list_jobs(
        self, *, status: str | None = None, limit: int | None = None, cursor: str | None = None
    ) -> dict[str, Any]:
        params = {
            name: value
            for name, value in (("status", status), ("limit", limit), ("cursor", cursor))
            if value is not None
        }
        return self._request("GET", "/v1/jobs", params=params)

    def cancel_job(self, job_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/jobs/{_segment(job_id)}/cancel")

    def create_batch(self, body: dict[str, Any], *, idempotency_key: str | None = None) -> dict[str, Any]:
        headers = {"idempotency-key": idempotency_key} if idempotency_key else {}
        return self._request("POST", "/v1/batches", json=body, headers=headers)

    def get_batch(self, batch_id: str, *, limit: int | None = None, cursor: str | None = None) -> dict[str, Any]:
        params = {name: value for name, value in (("limit", limit), ("cursor", cursor)) if value is not None}
        return self._request("GET", f"/v1/batches/{_segment(batch_id)}", params=params)

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        return self._request("POST", f"/v1/batches/{_segment(batch_id)}/cancel")

    def create_upload(self, content_type: str) -> dict[str, Any]:
        return self._request("POST", "/v1/uploads", json={"content_type": content_type})

    # -- plumbing -----------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise error_from_transport(error, f"the wanflow API at {self.base_url}") from error
        if response.is_error:
            raise ApiError.from_response(response)
        try:
            body = response.json()
        except ValueError as error:
            raise UnavailableError(
                f"the API at {self.base_url} did not answer with JSON ({method} {path}: HTTP {response.status_code})"
            ) from error
        if not isinstance(body, dict):
            raise ClientError(f"unexpected reply to {method} {path}: {body!r:.200}")
        return body


def _segment(value: str) -> str:
    """`value` as one path segment: a job id with a slash must not walk to another route."""
    if not value:
        raise UsageError("a job id is required")
    return quote(value, safe="")
