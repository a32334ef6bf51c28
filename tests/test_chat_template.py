import pytest

from abi.llm.chat_template import ChatTemplate, ChatTemplateError

SMOL = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
        "Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + "
        "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}"
        "{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_renders_default_model_template():
    out = ChatTemplate(SMOL).render([{"role": "user", "content": "Hi"}])
    assert out == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by "
                   "Hugging Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_chatml_fallback_and_no_generation_prompt():
    t = ChatTemplate(None)
    assert t.is_fallback
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert t.render(msgs, add_generation_prompt=False) == \
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n"


def test_helpers_and_tokens_available():
    src = ("{{ bos_token }}{% if messages[0]['role'] == 'bad' %}{{ raise_exception('no bad roles') }}"
           "{% endif %}{{ strftime_now('%Y') | length }}{{ messages | tojson }}"
           "{% if tools %}{{ tools[0].name }}{% endif %}")
    t = ChatTemplate(src, bos_token="<s>", eos_token="</s>")
    out = t.render([{"role": "user", "content": "é"}], tools=[{"name": "calc"}])
    assert out.startswith("<s>4") and '"é"' in out and out.endswith("calc")
    with pytest.raises(ChatTemplateError, match="no bad roles"):
        t.render([{"role": "bad", "content": ""}])


def test_sandbox_blocks_unsafe_access():
    t = ChatTemplate("{{ messages.__class__.__mro__ }}")
    with pytest.raises(ChatTemplateError):
        t.render([{"role": "user", "content": "x"}])


@pytest.mark.parametrize("messages", [[], "hi", [{"content": "no role"}], [{"role": "user", "content": 3}]])
def test_malformed_messages(messages):
    with pytest.raises(ChatTemplateError):
        ChatTemplate(None).render(messages)


def test_bad_template_is_a_clear_error():
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate("{% for x in %}")


def test_content_parts_are_joined():
    out = ChatTemplate(None).render([{"role": "user", "content": [{"type": "text", "text": "a"},
                                                                   {"type": "text", "text": "b"}]}])
    assert "user\nab<|im_end|>" in out
