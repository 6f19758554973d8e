"""The wanflow stack on loopback: moto built from template.yaml, Lambda handlers run in-process.

See `wanflow_tools.moto_stack.stack.MotoStack`.
"""

from wanflow_tools.moto_stack.lambdas import InvocationResult, LambdaContext, LambdaRuntime
from wanflow_tools.moto_stack.notifications import Notification
from wanflow_tools.moto_stack.stack import MotoStack
from wanflow_tools.moto_stack.template import SamTemplate, TemplateError

__all__ = [
    "InvocationResult",
    "LambdaContext",
    "LambdaRuntime",
    "MotoStack",
    "Notification",
    "SamTemplate",
    "TemplateError",
]
