"""The console's static files (index.html, console.js, console.css) and the headers they are served with."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files

# The page talks to its own origin (the API, or the signing proxy), uploads to the intake bucket's presigned POST
# URL and plays videos from presigned S3 URLs; nothing else runs or loads. No inline script or style at all.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data: http: https:; "
    "media-src http: https: blob:; connect-src 'self' http: https:; form-action 'self'; base-uri 'none'; "
    "frame-ancestors 'none'"
)
_ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/console.js": ("console.js", "text/javascript; charset=utf-8"),
    "/console.css": ("console.css", "text/css; charset=utf-8"),
}


@dataclass(frozen=True)
class StaticResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class ConsoleSite:
    """Answers GET and HEAD for the console's own paths; every other request is not the console's (None)."""

    def __init__(self) -> None:
        folder = files("wanflow_tools.console") / "static"
        self._assets = {
            path: (folder.joinpath(name).read_bytes(), content_type) for path, (name, content_type) in _ASSETS.items()
        }

    def paths(self) -> list[str]:
        return sorted(self._assets)

    def respond(self, method: str, path: str) -> StaticResponse | None:
        asset = self._assets.get(path)
        if asset is None or method not in ("GET", "HEAD"):
            return None
        body, content_type = asset
        headers = [
            ("content-type", content_type),
            # The page is small and changes with wanflow's version; a stale copy would call routes that moved.
            ("cache-control", "no-cache"),
            ("content-security-policy", CONTENT_SECURITY_POLICY),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
            ("x-frame-options", "DENY"),
        ]
        return StaticResponse(200, headers, body)  # the server leaves the body out of a HEAD answer
