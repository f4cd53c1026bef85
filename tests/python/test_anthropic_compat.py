"""Drives Switchyard's Anthropic-compatible `/v1/messages` with the official `anthropic` Python package.

Run by `tests/tests/anthropic_python.rs` (package switchyard-e2e), which installs `anthropic` into a virtual
environment under the target directory, starts a node with the http role in front of the mock provider (whose
answers echo the last user message: "echo: <text>", counting one input token per word, the system prompt's
included), and passes the door's address and keys in SWITCHYARD_BASE_URL, SWITCHYARD_API_KEY and
SWITCHYARD_LIMITED_KEY (allowed the route `solo` only). Exits non-zero on the first failed check.
"""

import os
import sys

import anthropic
from anthropic import Anthropic

BASE_URL = os.environ["SWITCHYARD_BASE_URL"]
API_KEY = os.environ["SWITCHYARD_API_KEY"]
LIMITED_KEY = os.environ["SWITCHYARD_LIMITED_KEY"]
ROUTE = os.environ.get("SWITCHYARD_ROUTE", "chat")

# No SDK retries: a failure must show as it is.
client = Anthropic(base_url=BASE_URL, api_key=API_KEY, max_retries=0, timeout=20.0)


def check(condition, message):
    if not condition:
        raise AssertionError(message)


def test_message():
    raw = client.messages.with_raw_response.create(
        model=ROUTE,
        max_tokens=64,
        messages=[{"role": "user", "content": "hello from python"}],
        metadata={"user_id": "user-42"},
        stop_sequences=["\n\nHuman:"],
        # Recent SDKs dropped `temperature` and `top_p` from their signature; the API still takes them.
        extra_body={"temperature": 0.2, "top_p": 0.9},
    )
    check(raw.headers.get("x-switchyard-provider") == "primary", f"provider: {raw.headers}")
    reply = raw.parse()
    check(reply.type == "message", f"type: {reply.type}")
    check(reply.id.startswith("msg_"), f"id: {reply.id}")
    check(reply.role == "assistant", f"role: {reply.role}")
    check(reply.model == ROUTE, f"model: {reply.model}")
    check(len(reply.content) == 1 and reply.content[0].type == "text", f"content: {reply.content}")
    check(reply.content[0].text == "echo: hello from python", f"text: {reply.content[0].text!r}")
    check(reply.stop_reason == "end_turn", f"stop_reason: {reply.stop_reason}")
    check(reply.stop_sequence is None, f"stop_sequence: {reply.stop_sequence}")
    check(reply.usage.input_tokens > 0 and reply.usage.output_tokens > 0, f"usage: {reply.usage}")
    cut = client.messages.create(
        model=ROUTE,
        max_tokens=2,
        messages=[{"role": "user", "content": [{"type": "text", "text": "one two three four five six"}]}],
    )
    check(cut.stop_reason == "max_tokens", f"stop_reason: {cut.stop_reason}")
    check(cut.usage.output_tokens == 2, f"usage: {cut.usage}")


def test_stream():
    # The raw events, in Anthropic's order.
    events = list(
        client.messages.create(
            model=ROUTE,
            max_tokens=64,
            messages=[{"role": "user", "content": "stream this answer"}],
            stream=True,
        )
    )
    kinds = [event.type for event in events]
    check(kinds[:2] == ["message_start", "content_block_start"], f"events: {kinds}")
    check(kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"], f"events: {kinds}")
    deltas = [event for event in events if event.type == "content_block_delta"]
    check(len(deltas) >= 2, f"events: {kinds}")
    text = "".join(event.delta.text for event in deltas)
    check(text == "echo: stream this answer", f"streamed text: {text!r}")
    check(events[0].message.id.startswith("msg_"), f"message_start: {events[0]}")
    check(events[-2].delta.stop_reason == "end_turn", f"message_delta: {events[-2]}")
    # The SDK's stream helper, which accumulates the events into the final message.
    with client.messages.stream(
        model=ROUTE,
        max_tokens=64,
        system="You answer briefly.",
        messages=[{"role": "user", "content": "stream again"}],
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    check(text == "echo: stream again", f"text_stream: {text!r}")
    check(final.content[0].text == text, f"final message: {final}")
    check(final.stop_reason == "end_turn", f"stop_reason: {final.stop_reason}")
    check(final.usage.input_tokens > 3 and final.usage.output_tokens > 0, f"usage: {final.usage}")


def expect(error_class, call, status):
    try:
        call()
    except error_class as error:
        check(error.status_code == status, f"status: {error.status_code}")
        return error
    raise AssertionError(f"expected {error_class.__name__}")


def test_errors():
    hi = [{"role": "user", "content": "hi"}]
    error = expect(
        anthropic.NotFoundError,
        lambda: client.messages.create(model="no-such-route", max_tokens=8, messages=hi),
        404,
    )
    check(error.body["error"]["type"] == "not_found_error", f"body: {error.body}")
    check(error.body["error"]["details"]["error_code"] == "model_not_found", f"body: {error.body}")
    bad = Anthropic(base_url=BASE_URL, api_key="sk-not-a-key", max_retries=0, timeout=20.0)
    error = expect(
        anthropic.AuthenticationError,
        lambda: bad.messages.create(model=ROUTE, max_tokens=8, messages=hi),
        401,
    )
    check(error.body["error"]["type"] == "authentication_error", f"body: {error.body}")
    limited = Anthropic(base_url=BASE_URL, api_key=LIMITED_KEY, max_retries=0, timeout=20.0)
    expect(
        anthropic.PermissionDeniedError,
        lambda: limited.messages.create(model=ROUTE, max_tokens=8, messages=hi),
        403,
    )
    check(limited.messages.create(model="solo", max_tokens=8, messages=hi).content[0].text == "echo: hi", "solo")
    error = expect(
        anthropic.BadRequestError,
        lambda: client.messages.create(model=ROUTE, max_tokens=8, messages=hi, extra_body={"top_k": 5}),
        400,
    )
    check(error.body["error"]["type"] == "invalid_request_error", f"body: {error.body}")
    check("top_k" in error.body["error"]["message"], f"body: {error.body}")
    error = expect(
        anthropic.BadRequestError,
        lambda: client.messages.create(
            model=ROUTE,
            max_tokens=8,
            messages=hi,
            tools=[{"name": "get_weather", "input_schema": {"type": "object"}}],
        ),
        400,
    )
    check("tools" in error.body["error"]["message"], f"body: {error.body}")


def test_multi_turn():
    system = [{"type": "text", "text": "You answer briefly and politely."}]
    messages = [{"role": "user", "content": "first question"}]
    first = client.messages.create(model=ROUTE, max_tokens=64, system=system, messages=messages)
    check(first.content[0].text == "echo: first question", f"first: {first.content}")
    # The answer goes back into the conversation as the SDK returned it (content blocks).
    messages.append({"role": "assistant", "content": first.content})
    messages.append({"role": "user", "content": "second question"})
    second = client.messages.create(model=ROUTE, max_tokens=64, system=system, messages=messages)
    check(second.content[0].text == "echo: second question", f"second: {second.content}")
    check(
        second.usage.input_tokens > first.usage.input_tokens,
        f"the whole conversation reached the model: {first.usage} then {second.usage}",
    )
    bare = client.messages.create(model=ROUTE, max_tokens=64, messages=messages)
    check(
        second.usage.input_tokens == bare.usage.input_tokens + 5,
        f"the system prompt reached the model: {bare.usage} without it, {second.usage} with it",
    )


def main():
    tests = [test_message, test_stream, test_errors, test_multi_turn]
    for test in tests:
        test()
        print(f"ok {test.__name__}")
    print(f"anthropic {anthropic.__version__}: {len(tests)} checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
