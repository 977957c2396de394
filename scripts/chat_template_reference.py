#!/usr/bin/env python3
"""Reference renderer for trellis' chat-template tests.

Renders Jinja2 chat templates exactly as Hugging Face transformers' apply_chat_template does, without
needing transformers itself: an ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks and the
loopcontrols extension, transformers' tojson filter (json.dumps, ensure_ascii=False), the
raise_exception / strftime_now globals, its dict and namespace globals, and a no-op {% generation %}
tag. This mirrors transformers/utils/chat_template_utils.py (v5.x); only jinja2 (>= 3.1) is needed.

Usage: chat_template_reference.py REQUESTS.json RESULTS.json
REQUESTS.json is a list of {"template": str, "mode": "render" | "apply", ...}:
  render: "context" is passed to the template as is.
  apply:  "messages", "add_generation_prompt", "bos_token", "eos_token" and optional "extra" kwargs go
          through transformers' message preparation (None-valued keys dropped, reasoning fields
          aliased, tools=None and documents=None unless given in "extra").
RESULTS.json gets one {"ok": true, "output": str} or {"ok": false, "error_type": str, "error": str}
per request, in order; a request that renders for over 10 s reports error_type "Timeout".
"""
import json
import signal
import sys
from datetime import datetime

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment


class _GenerationTag(jinja2.ext.Extension):
    """{% generation %}...{% endgeneration %}: transformers tracks assistant spans; rendering is unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller):
        return caller()


def _raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


class _TemplateDict:
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"underscore-prefixed namespace attribute {name!r}")


def make_environment():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


def prepare_messages(messages):
    """transformers' preparation: drop None-valued keys, then alias the reasoning fields."""
    prepared = []
    for message in messages:
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in _REASONING_FIELDS if message.get(k) is not None), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        prepared.append(message)
    return prepared


_compiled = {}


def render_one(env, request):
    source = request["template"]
    if source not in _compiled:
        _compiled[source] = env.from_string(source)
    template = _compiled[source]
    if request.get("mode", "render") == "render":
        return template.render(**request.get("context", {}))
    kwargs = {"bos_token": request.get("bos_token", ""), "eos_token": request.get("eos_token", "")}
    kwargs.update(request.get("extra", {}))
    tools = kwargs.pop("tools", None)
    documents = kwargs.pop("documents", None)
    return template.render(
        messages=prepare_messages(request["messages"]),
        tools=tools,
        documents=documents,
        add_generation_prompt=request.get("add_generation_prompt", False),
        **kwargs,
    )


class _Timeout(Exception):
    pass


def _on_timeout(signum, frame):
    raise _Timeout()


def main():
    with open(sys.argv[1], encoding="utf-8") as f:
        requests = json.load(f)
    env = make_environment()
    results = []
    signal.signal(signal.SIGALRM, _on_timeout)
    for request in requests:
        # Python's unbounded integers can make a random expression (a huge power) run for ever.
        signal.alarm(10)
        try:
            results.append({"ok": True, "output": render_one(env, request)})
        except _Timeout:
            results.append({"ok": False, "error_type": "Timeout", "error": "rendering took over 10 s"})
        except Exception as e:  # every failure is reported, the run goes on
            results.append({"ok": False, "error_type": type(e).__name__, "error": str(e)})
        finally:
            signal.alarm(0)
    with open(sys.argv[2], "w", encoding="utf-8") as f:
        json.dump(results, f, ensure_ascii=False)


if __name__ == "__main__":
    main()
