"""The wanflow client CLI: `wanflow submit | status | wait | list | cancel | download`.

It talks to the HTTP API of a local stack (`wanflow local`, http://127.0.0.1:8000 by default or
`WANFLOW_API_URL`) or of a deployed one (`--api https://...`, every request SigV4-signed for `execute-api`).
One module per concern: `api` (HTTP), `sigv4` (signing), `sources` (uploads), `request_body`, `progress`
(waiting), `download`, `display` (text), `errors` and `exit_codes`; `commands` wires them to argparse.
"""

from wanflow_tools.client.commands import ClientContext, register

__all__ = ["ClientContext", "register"]
