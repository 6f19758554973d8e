"""Who is calling, and what they own: a job belongs to the IAM principal that created it.

The principal is the caller's unique IAM id: `AIDA...` for an IAM user, `AROA...` for a role (every session of a
role is the same principal). API Gateway gives it as `requestContext.authorizer.iam.userId` (`AROA...:session`
for a role session); S3 events give the uploader as `userIdentity.principalId` (`AWS:AIDA...`,
`AWS:AROA...:session`), so an intake job and an API call of the same principal line up.

Callers see, list and cancel only their own jobs, upload only under their own prefix, and use only their own
objects as `s3://` inputs, unless they are in the deployment's admin list (docs/product.md section 2).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

ANONYMOUS = "anonymous"
UPLOADS_PREFIX = "uploads/"
INCOMING_PREFIX = "incoming/"
_ASSUMED_ROLE = re.compile(r"^arn:(?P<partition>[\w-]+):sts::(?P<account>\d+):assumed-role/(?P<role>[^/]+)/.+$")
_ROLE = re.compile(r"^arn:(?P<partition>[\w-]+):iam::(?P<account>\d+):role/(?:.+/)?(?P<role>[^/]+)$")


def normalize_principal(principal_id: str | None) -> str:
    """`AWS:AROA123:session` / `AROA123:session` / `AIDA123` -> `AROA123` / `AIDA123`."""
    value = (principal_id or "").strip()
    value = value.removeprefix("AWS:")
    value = value.split(":", 1)[0]
    return value or ANONYMOUS


def owner_key(principal: str) -> str:
    """A short, path-safe name for a principal, used in object keys."""
    return "u-" + hashlib.sha256(principal.encode()).hexdigest()[:16]


def uploads_prefix(principal: str) -> str:
    """Where a principal's uploads (and stashed data-URI images) live in the intake bucket."""
    return f"{UPLOADS_PREFIX}{owner_key(principal)}/"


@dataclass(frozen=True)
class Caller:
    principal: str  # normalized unique id: the owner of what this caller creates
    arn: str  # the ARN API Gateway reports (idempotency keys are scoped to it)
    is_admin: bool = False

    def may_see(self, owner: str | None) -> bool:
        return self.is_admin or owner == self.principal

    def may_read_input(self, key: str, *, intake_upload: bool) -> bool:
        """Whether this caller may use the intake bucket's object `key` as an input.

        Their own uploads always; objects under `incoming/` only for a job that an upload there started (whoever
        may write there may start jobs from it anyway).
        """
        return key.startswith(uploads_prefix(self.principal)) or (intake_upload and key.startswith(INCOMING_PREFIX))


def caller_from_api_event(event: dict[str, Any], admins: Iterable[str]) -> Caller:
    """The caller of an HTTP API request (IAM authorizer context)."""
    iam = (event.get("requestContext") or {}).get("authorizer", {}).get("iam", {}) or {}
    arn = str(iam.get("userArn") or iam.get("callerId") or ANONYMOUS)
    principal = normalize_principal(str(iam.get("userId") or iam.get("callerId") or ""))
    return Caller(principal=principal, arn=arn, is_admin=is_admin(principal, arn, admins))


def is_admin(principal: str, arn: str, admins: Iterable[str]) -> bool:
    """Whether the caller matches an admin entry: a unique id, an exact ARN, or the ARN of a role it assumed."""
    return any(principal_matches(principal, arn, entry) for entry in admins)


def principal_matches(principal: str, arn: str, entry: str) -> bool:
    """Whether a configured entry names this caller: its unique id, its exact ARN, or the role it assumed."""
    entry = entry.strip()
    if not entry:
        return False
    if entry in (principal, arn):
        return True
    role = _ROLE.match(entry)
    assumed = _ASSUMED_ROLE.match(arn)
    return bool(role and assumed and (role["account"], role["role"]) == (assumed["account"], assumed["role"]))
