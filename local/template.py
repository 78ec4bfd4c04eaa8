"""template.yaml as the local stack reads it: short tags, intrinsic functions, functions and their events."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

DEFAULT_TEMPLATE_PATH = Path(__file__).resolve().parent.parent / "template.yaml"
FUNCTION_TYPE = "AWS::Serverless::Function"

_SUB_VARIABLE = re.compile(r"\$\{([^}]*)\}")


class CloudFormationLoader(yaml.SafeLoader):
    """A YAML loader that reads CloudFormation short tags (!Ref, !Sub, !GetAtt, !If...) as their long form."""


def _construct_short_tag(loader: CloudFormationLoader, suffix: str, node: yaml.Node) -> Any:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    elif isinstance(node, yaml.MappingNode):
        value = loader.construct_mapping(node, deep=True)
    else:  # pragma: no cover - YAML has no other node kinds
        raise yaml.constructor.ConstructorError(None, None, f"unexpected node for !{suffix}", node.start_mark)
    if suffix in ("Ref", "Condition"):
        return {suffix: value}
    if suffix == "GetAtt" and isinstance(value, str):
        # The short form takes "Resource.Attribute"; the long form a two-item list.
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _construct_short_tag)


class Unresolvable(Exception):
    """A value refers to something the local stack does not have (a skipped resource, an import)."""


class _NoValue:
    """The value of `AWS::NoValue`: the property is left out."""

    def __repr__(self) -> str:
        return "AWS::NoValue"


NO_VALUE = _NoValue()


@dataclass(frozen=True)
class PhysicalResource:
    """A resource the local stack created: what `!Ref` and `!GetAtt` of its logical id give."""

    logical_id: str
    type: str
    ref: str
    attributes: Mapping[str, str]


@dataclass(frozen=True)
class EventSpec:
    """One entry of a function's `Events` (Api, SQS, Schedule, DynamoDB...), properties unresolved."""

    name: str
    type: str
    properties: Mapping[str, Any]


@dataclass(frozen=True)
class FunctionSpec:
    """An AWS::Serverless::Function with the Globals merged in, properties unresolved."""

    logical_id: str
    code_uri: str
    handler: str
    timeout: Any
    memory_size: Any
    environment: Mapping[str, Any]
    events: tuple[EventSpec, ...]

    @property
    def module_name(self) -> str:
        """The module that holds the handler, as imported locally (`functions.intake.app`)."""
        package = ".".join(part for part in PurePosixPath(self.code_uri).parts if part not in (".", ""))
        module = self.handler.rsplit(".", 1)[0]
        return f"{package}.{module}" if package else module

    @property
    def handler_attribute(self) -> str:
        """The handler's name inside its module (`handler`)."""
        return self.handler.rsplit(".", 1)[1]

    def events_of_type(self, *types: str) -> list[EventSpec]:
        """The function's events of the given SAM event types, in template order."""
        return [event for event in self.events if event.type in types]


class Template:
    """A parsed template.yaml with its parameters' defaults and its conditions."""

    def __init__(self, data: Mapping[str, Any], path: Path | None = None) -> None:
        self.data = data
        self.path = path

    @classmethod
    def load(cls, path: Path | str | None = None) -> Template:
        """Read and parse a template (default: template.yaml at the repository root)."""
        template_path = Path(path) if path is not None else DEFAULT_TEMPLATE_PATH
        with template_path.open(encoding="utf-8") as stream:
            data = yaml.load(stream, Loader=CloudFormationLoader)
        if not isinstance(data, dict) or not isinstance(data.get("Resources"), dict):
            raise ValueError(f"{template_path} is not a CloudFormation template (no Resources)")
        return cls(data, template_path)

    @property
    def resources(self) -> Mapping[str, Mapping[str, Any]]:
        """Every resource by logical id."""
        resources: Mapping[str, Mapping[str, Any]] = self.data.get("Resources") or {}
        return resources

    @property
    def parameters(self) -> Mapping[str, Mapping[str, Any]]:
        """Every parameter declaration by name."""
        parameters: Mapping[str, Mapping[str, Any]] = self.data.get("Parameters") or {}
        return parameters

    @property
    def conditions(self) -> Mapping[str, Any]:
        """Every condition by name, unevaluated."""
        conditions: Mapping[str, Any] = self.data.get("Conditions") or {}
        return conditions

    def function_globals(self) -> Mapping[str, Any]:
        """`Globals.Function`, the defaults of every function."""
        globals_section: Mapping[str, Any] = self.data.get("Globals") or {}
        function_globals: Mapping[str, Any] = globals_section.get("Function") or {}
        return function_globals

    def resources_of_type(self, resource_type: str, resolver: Resolver | None = None) -> dict[str, Mapping[str, Any]]:
        """The properties of every resource of `resource_type` whose Condition (if any) holds."""
        found: dict[str, Mapping[str, Any]] = {}
        for logical_id, resource in self.resources.items():
            if resource.get("Type") != resource_type:
                continue
            condition = resource.get("Condition")
            if condition and resolver is not None and not resolver.condition(condition):
                continue
            found[logical_id] = resource.get("Properties") or {}
        return found

    def functions(self, resolver: Resolver | None = None) -> list[FunctionSpec]:
        """Every AWS::Serverless::Function, with Globals.Function merged under its own properties."""
        defaults = self.function_globals()
        default_variables = (defaults.get("Environment") or {}).get("Variables") or {}
        specs = []
        for logical_id, properties in self.resources_of_type(FUNCTION_TYPE, resolver).items():
            variables = dict(default_variables)
            variables.update((properties.get("Environment") or {}).get("Variables") or {})
            events = tuple(
                EventSpec(name=name, type=str(event.get("Type", "")), properties=event.get("Properties") or {})
                for name, event in (properties.get("Events") or {}).items()
            )
            specs.append(
                FunctionSpec(
                    logical_id=logical_id,
                    code_uri=str(properties.get("CodeUri", defaults.get("CodeUri", "."))),
                    handler=str(properties.get("Handler", defaults.get("Handler", "app.handler"))),
                    timeout=properties.get("Timeout", defaults.get("Timeout", 3)),
                    memory_size=properties.get("MemorySize", defaults.get("MemorySize", 128)),
                    environment=variables,
                    events=events,
                )
            )
        return specs


def _walk(value: Any) -> Iterator[Any]:
    yield value
    if isinstance(value, Mapping):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, list):
        for item in value:
            yield from _walk(item)


class Resolver:
    """Evaluates intrinsic functions against parameter defaults and the resources created locally."""

    def __init__(
        self,
        template: Template,
        resources: Mapping[str, PhysicalResource] | None = None,
        *,
        region: str = "us-east-1",
        account_id: str = "123456789012",
        stack_name: str = "gmp-local",
        parameter_overrides: Mapping[str, Any] | None = None,
    ) -> None:
        self.template = template
        # Kept by reference: the emulator adds resources as it creates them.
        self.resources: Mapping[str, PhysicalResource] = resources if resources is not None else {}
        self.region = region
        self.account_id = account_id
        self.stack_name = stack_name
        self._overrides = dict(parameter_overrides or {})

    def pseudo_parameters(self) -> dict[str, Any]:
        """The AWS::* pseudo parameters as the local stack answers them."""
        return {
            "AWS::Region": self.region,
            "AWS::AccountId": self.account_id,
            "AWS::StackName": self.stack_name,
            "AWS::StackId": f"arn:aws:cloudformation:{self.region}:{self.account_id}:stack/{self.stack_name}/local",
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NotificationARNs": [],
            "AWS::NoValue": NO_VALUE,
        }

    def parameter(self, name: str) -> Any:
        """A parameter's value: the override if given, else its Default."""
        if name in self._overrides:
            value = self._overrides[name]
        else:
            declaration = self.template.parameters[name]
            if "Default" not in declaration:
                raise Unresolvable(f"parameter {name} has no Default")
            value = declaration["Default"]
        if self.template.parameters[name].get("Type") == "CommaDelimitedList" and isinstance(value, str):
            return value.split(",")
        return value

    def referenced_resources(self, value: Any) -> set[str]:
        """The logical ids of template resources that `value` refers to (Ref, GetAtt, Sub)."""
        names: set[str] = set()
        for node in _walk(value):
            if not isinstance(node, Mapping) or len(node) != 1:
                continue
            ((key, argument),) = node.items()
            if key == "Ref" and isinstance(argument, str):
                names.add(argument)
            elif key == "Fn::GetAtt" and isinstance(argument, list) and argument:
                names.add(str(argument[0]))
            elif key == "Fn::Sub":
                text = argument[0] if isinstance(argument, list) else argument
                if isinstance(text, str):
                    names.update(match.split(".", 1)[0] for match in _SUB_VARIABLE.findall(text))
        return {name for name in names if name in self.template.resources}

    def condition(self, name: str) -> bool:
        """Evaluate a named condition of the template."""
        if name not in self.template.conditions:
            raise Unresolvable(f"unknown condition {name}")
        return self._truth(self.template.conditions[name])

    def _truth(self, expression: Any) -> bool:
        if isinstance(expression, bool):
            return expression
        if isinstance(expression, str):
            return expression.lower() == "true"
        if isinstance(expression, Mapping) and len(expression) == 1:
            ((key, argument),) = expression.items()
            if key == "Condition":
                return self.condition(str(argument))
            if key == "Fn::Equals":
                left, right = (self.resolve(part) for part in argument)
                return str(left) == str(right)
            if key == "Fn::Not":
                return not self._truth(argument[0])
            if key == "Fn::And":
                return all(self._truth(part) for part in argument)
            if key == "Fn::Or":
                return any(self._truth(part) for part in argument)
        raise Unresolvable(f"cannot evaluate condition {expression!r}")

    def ref(self, name: str) -> Any:
        """What `!Ref name` gives: a pseudo parameter, a parameter, or a created resource's ref."""
        pseudo = self.pseudo_parameters()
        if name in pseudo:
            return pseudo[name]
        if name in self.template.parameters:
            return self.parameter(name)
        if name in self.resources:
            return self.resources[name].ref
        raise Unresolvable(f"{name} is not created locally")

    def get_att(self, name: str, attribute: str) -> str:
        """What `!GetAtt name.attribute` gives for a created resource."""
        resource = self.resources.get(name)
        if resource is None:
            raise Unresolvable(f"{name} is not created locally")
        if attribute not in resource.attributes:
            raise Unresolvable(f"{name} has no attribute {attribute} locally")
        return resource.attributes[attribute]

    def _sub(self, argument: Any) -> str:
        if isinstance(argument, list):
            text, variables = str(argument[0]), dict(argument[1]) if len(argument) > 1 else {}
        else:
            text, variables = str(argument), {}

        def replace(match: re.Match[str]) -> str:
            expression = match.group(1)
            if expression.startswith("!"):
                return "${" + expression[1:] + "}"
            if expression in variables:
                return str(self.resolve(variables[expression]))
            if "." in expression and expression.split(".", 1)[0] in self.template.resources:
                name, attribute = expression.split(".", 1)
                return self.get_att(name, attribute)
            return str(self.ref(expression))

        return _SUB_VARIABLE.sub(replace, text)

    def resolve(self, value: Any) -> Any:
        """Evaluate every intrinsic function inside `value`; AWS::NoValue entries are left out."""
        if isinstance(value, list):
            items = [self.resolve(item) for item in value]
            return [item for item in items if item is not NO_VALUE]
        if not isinstance(value, Mapping):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            if key == "Ref":
                return self.ref(str(argument))
            if key == "Condition" and isinstance(argument, str):
                return self.condition(argument)
            if key.startswith("Fn::"):
                return self._function(key, argument)
        resolved = {key: self.resolve(item) for key, item in value.items()}
        return {key: item for key, item in resolved.items() if item is not NO_VALUE}

    def _function(self, key: str, argument: Any) -> Any:
        if key == "Fn::GetAtt":
            parts = argument if isinstance(argument, list) else str(argument).split(".", 1)
            return self.get_att(str(parts[0]), str(self.resolve(parts[1])))
        if key == "Fn::Sub":
            return self._sub(argument)
        if key == "Fn::If":
            condition, when_true, when_false = argument
            return self.resolve(when_true if self.condition(str(condition)) else when_false)
        if key == "Fn::Join":
            delimiter, items = argument
            return str(delimiter).join(str(item) for item in self.resolve(items))
        if key == "Fn::Select":
            index, items = argument
            return self.resolve(items)[int(self.resolve(index))]
        if key == "Fn::Split":
            delimiter, text = argument
            return str(self.resolve(text)).split(str(delimiter))
        if key == "Fn::FindInMap":
            mapping, top, second = (self.resolve(part) for part in argument[:3])
            return self.template.data["Mappings"][mapping][top][second]
        if key == "Fn::Base64":
            return base64.b64encode(str(self.resolve(argument)).encode()).decode()
        if key == "Fn::GetAZs":
            return [f"{self.region}{zone}" for zone in "abc"]
        if key == "Fn::ToJsonString":
            return json.dumps(self.resolve(argument))
        if key == "Fn::Length":
            return len(self.resolve(argument))
        if key in ("Fn::Equals", "Fn::Not", "Fn::And", "Fn::Or"):
            return self._truth({key: argument})
        raise Unresolvable(f"{key} is not supported locally")
