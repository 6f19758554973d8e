"""Read template.yaml the way the local stack needs it.

The local stack builds its resources from the SAM template itself so that the two cannot drift. This
module parses the template (CloudFormation short-form tags included), evaluates parameters and
conditions, merges `Globals.Function` into each function, and resolves the intrinsic functions the
template uses (Ref, GetAtt, Sub, If, Equals, Not, And, Or, Select, Split, Join) against the physical
names the local stack chose.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from samtranslator.yaml_helper import yaml_parse

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_TEMPLATE = REPO_ROOT / "template.yaml"

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")
# CloudFormation's "no value" marker: a property resolved to it is dropped.
NO_VALUE = object()


class TemplateError(ValueError):
    """The template uses something the local stack cannot resolve."""


@dataclass(frozen=True)
class HttpRoute:
    method: str  # "GET", "POST", ... or "ANY"
    path: str  # "/v1/jobs/{job_id}"
    function: str  # logical id

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"


@dataclass(frozen=True)
class FunctionSpec:
    """One AWS::Serverless::Function with Globals.Function merged in (properties still unresolved)."""

    logical_id: str
    properties: dict[str, Any]

    @property
    def code_uri(self) -> str:
        return str(self.properties["CodeUri"])

    @property
    def handler(self) -> str:
        return str(self.properties["Handler"])

    @property
    def handler_module(self) -> str:
        """Import path of the handler as installed in this repo: CodeUri functions/api/ + app -> functions.api.app."""
        module_file, _, _ = self.handler.rpartition(".")
        package = ".".join(part for part in Path(self.code_uri).parts if part not in ("", "."))
        return f"{package}.{module_file}" if package else module_file

    @property
    def handler_attribute(self) -> str:
        return self.handler.rpartition(".")[2]

    @property
    def timeout(self) -> int:
        return int(self.properties.get("Timeout", 3))

    @property
    def memory_size(self) -> int:
        return int(self.properties.get("MemorySize", 128))

    @property
    def events(self) -> dict[str, dict[str, Any]]:
        return dict(self.properties.get("Events") or {})

    def events_of_type(self, event_type: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for name, event in self.events.items():
            if event.get("Type") == event_type:
                yield name, dict(event.get("Properties") or {})


@dataclass
class SamTemplate:
    """A parsed SAM template with its parameter values and conditions evaluated."""

    path: Path
    body: dict[str, Any]
    parameters: dict[str, Any]
    conditions: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        path: Path | str = DEFAULT_TEMPLATE,
        parameter_overrides: Mapping[str, Any] | None = None,
        pseudo_parameters: Mapping[str, Any] | None = None,
    ) -> SamTemplate:
        path = Path(path)
        body = yaml_parse(path.read_text(encoding="utf-8"))
        parameters: dict[str, Any] = dict(pseudo_parameters or {})
        for name, spec in (body.get("Parameters") or {}).items():
            if parameter_overrides and name in parameter_overrides:
                parameters[name] = parameter_overrides[name]
            elif "Default" in spec:
                parameters[name] = spec["Default"]
            else:
                raise TemplateError(f"parameter {name} has no default; pass it in parameter_overrides")
        unknown = set(parameter_overrides or {}) - set(body.get("Parameters") or {})
        if unknown:
            raise TemplateError(f"unknown template parameters: {sorted(unknown)}")
        template = cls(path=path, body=body, parameters=parameters)
        template._evaluate_conditions()
        return template

    @property
    def root(self) -> Path:
        """Directory the template's relative paths (CodeUri, DefinitionUri) are relative to."""
        return self.path.parent

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        """Resources whose Condition holds."""
        return {
            logical_id: resource
            for logical_id, resource in self.body["Resources"].items()
            if self.conditions.get(resource.get("Condition", ""), True)
        }

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: dict(resource.get("Properties") or {})
            for logical_id, resource in self.resources.items()
            if resource["Type"] == resource_type
        }

    def functions(self) -> list[FunctionSpec]:
        globals_function = (self.body.get("Globals") or {}).get("Function") or {}
        specs = []
        for logical_id, properties in self.resources_of_type("AWS::Serverless::Function").items():
            specs.append(FunctionSpec(logical_id, _merge_globals(globals_function, properties)))
        return specs

    def function(self, logical_id: str) -> FunctionSpec:
        for spec in self.functions():
            if spec.logical_id == logical_id:
                return spec
        raise KeyError(logical_id)

    def global_environment(self) -> dict[str, Any]:
        """Globals.Function.Environment.Variables, unresolved."""
        globals_function = (self.body.get("Globals") or {}).get("Function") or {}
        return dict(((globals_function.get("Environment") or {}).get("Variables")) or {})

    def http_routes(self) -> list[HttpRoute]:
        routes = []
        for spec in self.functions():
            for _name, properties in spec.events_of_type("HttpApi"):
                method = str(properties.get("Method", "ANY")).upper()
                routes.append(
                    HttpRoute(method=method, path=str(properties.get("Path", "$default")), function=spec.logical_id)
                )
        return routes

    # -- intrinsic functions ------------------------------------------------------------------------

    def _evaluate_conditions(self) -> None:
        pending = dict(self.body.get("Conditions") or {})
        resolver = Resolver(self, refs={}, attributes=lambda logical_id, name: None)
        # Conditions may reference each other; evaluate on demand with cycle protection.
        evaluating: set[str] = set()

        def evaluate(name: str) -> bool:
            if name in self.conditions:
                return self.conditions[name]
            if name in evaluating:
                raise TemplateError(f"condition cycle at {name}")
            evaluating.add(name)
            value = bool(resolver.resolve(pending[name], condition=evaluate))
            self.conditions[name] = value
            return value

        for name in pending:
            evaluate(name)

    def resolver(self, refs: Mapping[str, Any], attributes: Callable[[str, str], Any]) -> Resolver:
        """A resolver that maps Ref to refs (resources, beside parameters) and GetAtt to attributes()."""
        return Resolver(self, refs=refs, attributes=attributes)


class Resolver:
    """Evaluates CloudFormation intrinsic functions against local values."""

    def __init__(
        self, template: SamTemplate, *, refs: Mapping[str, Any], attributes: Callable[[str, str], Any]
    ) -> None:
        self._template = template
        self._refs = refs
        self._attributes = attributes

    def resolve(self, value: Any, condition: Callable[[str], bool] | None = None) -> Any:
        condition = condition or self._condition
        if isinstance(value, list):
            items = [self.resolve(item, condition) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self._ref(argument)
            if key == "Condition":
                return condition(argument)
            if key.startswith("Fn::"):
                return self._function(key, argument, condition)
        resolved = {key: self.resolve(item, condition) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _condition(self, name: str) -> bool:
        return self._template.conditions[name]

    def _ref(self, name: str) -> Any:
        if name == "AWS::NoValue":
            return NO_VALUE
        if name in self._template.parameters:
            return self._template.parameters[name]
        if name in self._refs:
            return self._refs[name]
        raise TemplateError(f"cannot resolve Ref {name} locally")

    def _get_att(self, logical_id: str, attribute: str) -> Any:
        value = self._attributes(logical_id, attribute)
        if value is None:
            raise TemplateError(f"cannot resolve GetAtt {logical_id}.{attribute} locally")
        return value

    def _function(self, key: str, argument: Any, condition: Callable[[str], bool]) -> Any:
        if key == "Fn::GetAtt":
            logical_id, attribute = argument.split(".", 1) if isinstance(argument, str) else argument
            return self._get_att(logical_id, attribute)
        if key == "Fn::Sub":
            return self._sub(argument, condition)
        if key == "Fn::If":
            name, when_true, when_false = argument
            return self.resolve(when_true if condition(name) else when_false, condition)
        if key == "Fn::Equals":
            left, right = (self.resolve(item, condition) for item in argument)
            return str(left) == str(right)
        if key == "Fn::Not":
            return not self.resolve(argument[0], condition)
        if key == "Fn::And":
            return all(self.resolve(item, condition) for item in argument)
        if key == "Fn::Or":
            return any(self.resolve(item, condition) for item in argument)
        if key == "Fn::Select":
            index, items = (self.resolve(item, condition) for item in argument)
            return items[int(index)]
        if key == "Fn::Split":
            delimiter, text = (self.resolve(item, condition) for item in argument)
            return str(text).split(delimiter)
        if key == "Fn::Join":
            delimiter, items = (self.resolve(item, condition) for item in argument)
            return str(delimiter).join(str(item) for item in items)
        raise TemplateError(f"intrinsic function {key} is not supported by the local stack")

    def _sub(self, argument: Any, condition: Callable[[str], bool]) -> str:
        if isinstance(argument, list):
            text, variables = argument[0], {name: self.resolve(item, condition) for name, item in argument[1].items()}
        else:
            text, variables = argument, {}

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):  # ${!Literal} stands for the text ${Literal}
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name:
                logical_id, attribute = name.split(".", 1)
                return str(self._get_att(logical_id, attribute))
            return str(self._ref(name))

        return _SUB_VARIABLE.sub(substitute, text)


def _merge_globals(globals_function: Mapping[str, Any], properties: Mapping[str, Any]) -> dict[str, Any]:
    """SAM's Globals semantics: maps merge (function wins), everything else is replaced by the function."""
    merged = copy.deepcopy(dict(globals_function))
    for key, value in properties.items():
        if key == "Environment" and key in merged:
            variables = dict(merged[key].get("Variables") or {})
            variables.update((value or {}).get("Variables") or {})
            merged[key] = {"Variables": variables}
        elif key == "Layers" and key in merged:
            merged[key] = list(merged[key]) + list(value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
