"""The web console: one static page over the public HTTP API (docs/console.md).

`make local` serves it at the local API's own address (http://127.0.0.1:8000/); `wanflow console --api URL`
serves it on loopback for a deployed stack and forwards the page's API calls, signed with SigV4.
"""

from wanflow_tools.console.site import ConsoleSite, StaticResponse

__all__ = ["ConsoleSite", "StaticResponse"]
