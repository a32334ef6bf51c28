"""Chat templates: ``tokenizer.chat_template`` rendered with sandboxed jinja2, the way
Hugging Face's transformers renders them (trim_blocks, lstrip_blocks, loop controls),
with the helpers templates commonly call. ChatML when the file has no template."""
from __future__ import annotations

import datetime
import json
from functools import lru_cache

from ..errors import ConfigError

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ChatTemplateError(ConfigError):
    """A chat template failed to compile or render, or messages are malformed."""


def _raise_exception(message):
    raise ChatTemplateError(f"chat template error: {message}", field="messages")


def _strftime_now(fmt):
    return datetime.datetime.now().strftime(fmt)


def _tojson(value, indent=None, ensure_ascii=False, sort_keys=False):
    return json.dumps(value, indent=indent, ensure_ascii=ensure_ascii, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(source: str):
    from jinja2 import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(source)
    except TemplateError as exc:
        raise ChatTemplateError(f"chat template does not compile: {exc}", field="chat_template") from exc


def _check_messages(messages) -> list[dict]:
    if not isinstance(messages, (list, tuple)) or not messages:
        raise ChatTemplateError("messages must be a non-empty list of {role, content} objects",
                                field="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise ChatTemplateError(f"messages[{i}] needs a string 'role'", field="messages")
        content = m.get("content")
        if content is None:
            content = ""
        if not isinstance(content, str):  # OpenAI-style content parts: keep the text parts
            if isinstance(content, list):
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            else:
                raise ChatTemplateError(f"messages[{i}].content must be text", field="messages")
        out.append({**m, "content": content})
    return out


class ChatTemplate:
    """Renders messages into prompt text.

    ``source`` is the template (the GGUF's ``tokenizer.chat_template``, an override, or
    None for ChatML); ``bos_token``/``eos_token`` are the special tokens' text.
    """

    def __init__(self, source: str | None, bos_token: str = "", eos_token: str = ""):
        self.source = source or CHATML_TEMPLATE
        self.is_fallback = source is None
        self.bos_token, self.eos_token = bos_token, eos_token
        self._template = _compile(self.source)

    def render(self, messages, add_generation_prompt: bool = True, tools=None, **extra) -> str:
        from jinja2 import TemplateError

        msgs = _check_messages(messages)
        try:
            return self._template.render(
                messages=msgs, add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token, eos_token=self.eos_token, tools=tools, **extra)
        except ChatTemplateError:
            raise
        except (TemplateError, TypeError, ValueError, KeyError, IndexError) as exc:
            raise ChatTemplateError(f"chat template failed to render: {exc}", field="messages") from exc
