"""The wanflow stack on loopback: moto built from template.yaml, Lambda handlers run in-process.

See `wanflow_tools.local.stack.LocalStack`.
"""

from wanflow_tools.local.lambdas import InvocationResult, LambdaContext, LambdaRuntime
from wanflow_tools.local.notifications import Notification
from wanflow_tools.local.stack import LocalStack
from wanflow_tools.local.template import SamTemplate, TemplateError

__all__ = [
    "InvocationResult",
    "LambdaContext",
    "LambdaRuntime",
    "LocalStack",
    "Notification",
    "SamTemplate",
    "TemplateError",
]
