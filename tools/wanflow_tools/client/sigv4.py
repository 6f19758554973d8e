"""SigV4 signing of requests to a deployed wanflow API (API Gateway HTTP API with IAM authorization).

`SigV4Auth` is an httpx auth class, so every request the client sends through it is signed the same way,
with fresh credentials from the botocore chain (environment, profile, SSO, instance role, ...) each time, so
that refreshed temporary credentials are picked up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator, Mapping
from urllib.parse import urlsplit

import botocore.auth
import botocore.credentials
import botocore.session
import httpx
from botocore.awsrequest import AWSRequest

from wanflow_tools.client.errors import UsageError

SERVICE = "execute-api"
# https://{api-id}.execute-api.{region}.amazonaws.com[.cn]
_EXECUTE_API_HOST = re.compile(r"\.execute-api\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(\.cn)?$")
# Only these headers are signed: hop-by-hop headers such as Connection may be rewritten on the way to API
# Gateway, and a signed header that changes in transit breaks the signature.
_SIGNED_HEADERS = ("host", "content-type", "idempotency-key")


def region_for_url(url: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """The AWS region of an API URL: from an execute-api host name, else from the environment or AWS config."""
    host = urlsplit(url).hostname or ""
    match = _EXECUTE_API_HOST.search(host)
    if match:
        return match.group("region")
    region = environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if region:
        return region
    # A custom domain name: fall back to the region of the active profile in ~/.aws/config.
    return botocore.session.Session().get_config_variable("region")


class SigV4Auth(httpx.Auth):
    """Signs each request with AWS Signature Version 4 for `execute-api` in `region`."""

    # The payload hash is part of the signature, so httpx must have read the body before the flow runs.
    requires_request_body = True

    def __init__(self, region: str, credentials: botocore.credentials.Credentials, service: str = SERVICE) -> None:
        self.region = region
        self.service = service
        self._credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        headers = {name: request.headers[name] for name in _SIGNED_HEADERS if name in request.headers}
        for name, value in request.headers.items():
            if name.lower().startswith("x-amz-"):
                headers[name] = value
        aws_request = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=headers)
        frozen = self._credentials.get_frozen_credentials()
        botocore.auth.SigV4Auth(frozen, self.service, self.region).add_auth(aws_request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws_request.headers:
                request.headers[name] = aws_request.headers[name]
        yield request


def sigv4_auth_for(url: str, environ: Mapping[str, str] = os.environ) -> SigV4Auth:
    """A SigV4 auth for `url` with credentials from the default chain; UsageError when either is missing."""
    region = region_for_url(url, environ)
    if not region:
        raise UsageError(
            f"cannot tell the AWS region of {url}: set AWS_REGION (or use the execute-api URL of the stack)"
        )
    credentials = botocore.session.Session().get_credentials()
    if credentials is None:
        raise UsageError(
            "no AWS credentials found to sign requests to the deployed API "
            "(set AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run `aws configure` / `aws sso login`)"
        )
    return SigV4Auth(region, credentials)
