"""Drives Switchyard's OpenAI-compatible HTTP door with the official `openai` Python package.

Run by `tests/tests/openai_python.rs` (package switchyard-e2e), which installs `openai` into a virtual environment
under the target directory, starts a node with the http role in front of the mock provider (whose answers echo
the last user message: "echo: <text>"), and passes the door's address and a key in SWITCHYARD_BASE_URL and
SWITCHYARD_API_KEY. Exits non-zero on the first failed check.
"""

import os
import sys

import openai
from openai import OpenAI

BASE_URL = os.environ["SWITCHYARD_BASE_URL"]
API_KEY = os.environ["SWITCHYARD_API_KEY"]
ROUTE = os.environ.get("SWITCHYARD_ROUTE", "chat")

# No SDK retries: a failure must show as it is.
client = OpenAI(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=20.0)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def test_completion():
    reply = client.chat.completions.create(
        model=ROUTE,
        messages=[{"role": "user", "content": "hello from python"}],
        max_tokens=64,
        temperature=0.2,
        top_p=0.9,
        stop=["\n\nUser:"],
        metadata={"suite": "openai-compat"},
    )
    check(reply.object == "chat.completion", f"object: {reply.object}")
    check(reply.id.startswith("chatcmpl-"), f"id: {reply.id}")
    choice = reply.choices[0]
    check(choice.message.role == "assistant", f"role: {choice.message.role}")
    check(choice.message.content == "echo: hello from python", f"content: {choice.message.content!r}")
    check(choice.finish_reason == "stop", f"finish_reason: {choice.finish_reason}")
    usage = reply.usage
    check(usage.prompt_tokens > 0 and usage.completion_tokens > 0, f"usage: {usage}")
    check(usage.total_tokens == usage.prompt_tokens + usage.completion_tokens, f"usage: {usage}")
    # max_completion_tokens, the newer name, cuts the answer.
    cut = client.chat.completions.create(
        model=ROUTE,
        messages=[{"role": "user", "content": "one two three four five six"}],
        max_completion_tokens=2,
    )
    check(cut.choices[0].finish_reason == "length", f"finish_reason: {cut.choices[0].finish_reason}")
    check(cut.usage.completion_tokens == 2, f"usage: {cut.usage}")


def test_stream():
    stream = client.chat.completions.create(
        model=ROUTE,
        messages=[{"role": "user", "content": "stream this answer"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage, chunks = "", None, None, 0
    for chunk in stream:
        chunks += 1
        check(chunk.object == "chat.completion.chunk", f"object: {chunk.object}")
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                text += choice.delta.content
            if choice.finish_reason:
                finish = choice.finish_reason
    check(text == "echo: stream this answer", f"streamed text: {text!r}")
    check(chunks >= 4, f"chunks: {chunks}")
    check(finish == "stop", f"finish_reason: {finish}")
    check(usage is not None and usage.completion_tokens > 0, f"usage: {usage}")


def test_errors():
    try:
        client.chat.completions.create(model="no-such-route", messages=[{"role": "user", "content": "hi"}])
    except openai.NotFoundError as error:
        check(error.status_code == 404, f"status: {error.status_code}")
        check(error.code == "model_not_found", f"code: {error.code}")
    else:
        raise AssertionError("an unknown model must raise openai.NotFoundError")
    bad = OpenAI(base_url=BASE_URL, api_key="sk-not-a-key", max_retries=0, timeout=20.0)
    try:
        bad.chat.completions.create(model=ROUTE, messages=[{"role": "user", "content": "hi"}])
    except openai.AuthenticationError as error:
        check(error.status_code == 401, f"status: {error.status_code}")
    else:
        raise AssertionError("a wrong key must raise openai.AuthenticationError")
    try:
        client.chat.completions.create(model=ROUTE, messages=[{"role": "user", "content": "hi"}], n=3)
    except openai.BadRequestError as error:
        check(error.param == "n", f"param: {error.param}")
    else:
        raise AssertionError("n=3 must raise openai.BadRequestError")


def test_multi_turn():
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "first question"},
    ]
    first = client.chat.completions.create(model=ROUTE, messages=messages)
    check(first.choices[0].message.content == "echo: first question", f"first: {first.choices[0].message.content!r}")
    messages.append({"role": "assistant", "content": first.choices[0].message.content})
    messages.append({"role": "user", "content": "second question"})
    second = client.chat.completions.create(model=ROUTE, messages=messages)
    content = second.choices[0].message.content
    check(content == "echo: second question", f"second: {content!r}")
    check(
        second.usage.prompt_tokens > first.usage.prompt_tokens,
        f"the whole conversation reached the model: {first.usage} then {second.usage}",
    )


def test_models():
    ids = [model.id for model in client.models.list()]
    check(ROUTE in ids, f"models: {ids}")


def main():
    tests = [test_completion, test_stream, test_errors, test_multi_turn, test_models]
    for test in tests:
        test()
        print(f"ok {test.__name__}")
    print(f"openai {openai.__version__}: {len(tests)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
