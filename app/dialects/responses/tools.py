"""Responses ``tools`` and ``tool_choice`` -> their Chat Completions forms (pure; validation included).

``function`` tools are nested as chat wants; ``namespace`` tools are flattened to ``<namespace>__<name>``
(``Tools.names`` maps them back); every other type (``web_search``...) runs on OpenAI's side only and is
dropped, named in ``Tools.dropped``. A request whose only tools are such, or whose ``tool_choice`` forces
one, is a 400 naming it. A type is named as ``app.dialects.tool_label`` writes it (a header carries it).
Function tool names follow chat's rule (``^[a-zA-Z0-9_-]{1,64}$``), ``parameters`` is an object.
``tool_choice: {"type": "allowed_tools", "mode", "tools"}`` sends only the listed tools, with ``mode``
as chat's ``tool_choice``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.chat_request import TOOL_NAME
from app.dialects import tool_label, upstream_tool_name
from app.dialects.responses.errors import invalid


@dataclass(slots=True)
class Tools:
    chat: list[dict[str, Any]] = field(default_factory=list)
    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # flat name -> (namespace, name)
    dropped: list[str] = field(default_factory=list)  # types of tools the upstream cannot run
    taken: set[str] = field(default_factory=set)  # every name sent upstream

    def drop(self, kind: str) -> None:
        """Name a left-out tool type once, as ``tool_label`` writes it (it goes into a header)."""
        label = tool_label(kind)
        if label not in self.dropped:
            self.dropped.append(label)


def flat_name(namespace: str, name: str) -> str:
    """``<namespace>__<name>`` as chat allows a name (``app.dialects.upstream_tool_name``: one that had to
    be changed ends in a hash of the original, so two tools never share a flattened name)."""
    return upstream_tool_name(f"{namespace}__{name}")


def convert_tools(raw: Any) -> Tools:
    tools = Tools()
    if raw is None:
        return tools
    if not isinstance(raw, list):
        raise invalid("tools", "must be an array")
    for i, tool in enumerate(raw):
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(kind, str):
            raise invalid(f"tools.{i}", "must be a tool object with a string `type`")
        if kind == "function":
            tools.chat.append(_function_tool(tool, f"tools.{i}", None, tools))
        elif kind == "namespace":
            inner = tool.get("tools")
            namespace = tool.get("name")
            if not isinstance(namespace, str) or not namespace or not isinstance(inner, list):
                raise invalid(f"tools.{i}", "a namespace tool needs a `name` and a `tools` array")
            for j, member in enumerate(inner):
                if isinstance(member, dict) and member.get("type", "function") == "function":
                    tools.chat.append(_function_tool(member, f"tools.{i}.tools.{j}", namespace, tools))
                elif isinstance(member, dict) and isinstance(member.get("type"), str):
                    tools.drop(member["type"])
        else:
            tools.drop(kind)
    if tools.dropped and not tools.chat:
        raise invalid("tools", f"the upstream cannot run {', '.join(tools.dropped)} tools and no function tool is left")
    return tools


def _function_tool(tool: dict[str, Any], param: str, namespace: str | None, tools: Tools) -> dict[str, Any]:
    name = tool.get("name")
    if not isinstance(name, str) or not name:
        raise invalid(f"{param}.name", "must be a non-empty string")
    if namespace is None and not TOOL_NAME.match(name):
        raise invalid(f"{param}.name", "must match ^[a-zA-Z0-9_-]{1,64}$")
    function: dict[str, Any] = {"name": name if namespace is None else flat_name(namespace, name)}
    if function["name"] in tools.taken:
        raise invalid(f"{param}.name", "names a tool twice (the model could not tell them apart)")
    tools.taken.add(function["name"])
    if namespace is not None:
        tools.names[function["name"]] = (namespace, name)
    if isinstance(tool.get("description"), str):
        function["description"] = tool["description"]
    parameters = tool.get("parameters")
    if parameters is not None:
        if not isinstance(parameters, dict):
            raise invalid(f"{param}.parameters", "must be a JSON Schema object")
        function["parameters"] = parameters
    if isinstance(tool.get("strict"), bool):
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def tool_choice(raw: Any) -> Any:
    if raw is None or raw in ("auto", "none", "required"):
        return raw
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise invalid("tool_choice", "must be 'auto', 'none', 'required' or a tool choice object")
    kind = raw["type"]
    if kind == "function":
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise invalid("tool_choice.name", "must be a non-empty string")
        if isinstance(raw.get("namespace"), str):
            name = flat_name(raw["namespace"], name)
        return {"type": "function", "function": {"name": name}}
    if kind == "allowed_tools":
        mode = raw.get("mode", "auto")
        if mode not in ("auto", "required"):
            raise invalid("tool_choice.mode", "must be 'auto' or 'required'")
        return mode
    if kind == "auto":
        return "auto"
    raise invalid("tool_choice", f"forces a {tool_label(kind)} tool, which the upstream cannot run")


def allowed(raw: Any, chat_tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The tools sent upstream: with ``tool_choice: {"type": "allowed_tools", "tools": [...]}`` only the
    function tools it lists (the model may call no other), else all of them."""
    if not isinstance(raw, dict) or raw.get("type") != "allowed_tools":
        return chat_tools
    listed = raw.get("tools")
    if not isinstance(listed, list):
        raise invalid("tool_choice.tools", "must be an array of tools")
    names = set()
    for entry in listed:
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str) and name:
            namespace = entry.get("namespace")
            names.add(flat_name(namespace, name) if isinstance(namespace, str) else name)
    kept = [tool for tool in chat_tools if tool["function"]["name"] in names]
    if not kept:
        raise invalid("tool_choice.tools", "allows none of the request's function tools")
    return kept
