"""Drives Switchyard with the official OpenAI Python SDK and prints what the SDK parsed, as JSON.

Usage: openai_sdk.py BASE_URL MODEL
Every call goes through the SDK's own parsing; any shape the SDK rejects raises and fails the test.
"""
import json
import sys

import openai

base_url, model = sys.argv[1], sys.argv[2]
client = openai.OpenAI(base_url=base_url, api_key="sk-client-should-never-leave", max_retries=0)
out = {}

# Non-streaming, with OpenRouter's routing fields passed through extra_body.
raw = client.chat.completions.with_raw_response.create(
    model=model,
    messages=[{"role": "user", "content": "Hello from the SDK"}],
    temperature=0.1,
    extra_body={"provider": {"sort": "price"}, "models": [model]},
)
completion = raw.parse()
out["non_stream"] = {
    "id": completion.id,
    "model": completion.model,
    "content": completion.choices[0].message.content,
    "finish_reason": completion.choices[0].finish_reason,
    "prompt_tokens": completion.usage.prompt_tokens,
    "completion_tokens": completion.usage.completion_tokens,
    "cost": (completion.usage.model_extra or {}).get("cost"),
    "provider": (completion.model_extra or {}).get("provider"),
    "headers": {k: v for k, v in raw.headers.items() if k.startswith("x-switchyard-")},
}

# Streaming with usage.
stream = client.chat.completions.create(
    model=model,
    messages=[{"role": "user", "content": "Stream to me"}],
    stream=True,
    stream_options={"include_usage": True},
)
content, models, usage, finish = [], set(), None, None
for chunk in stream:
    models.add(chunk.model)
    for choice in chunk.choices:
        if choice.delta.content:
            content.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
    if chunk.usage is not None:
        usage = {
            "prompt_tokens": chunk.usage.prompt_tokens,
            "completion_tokens": chunk.usage.completion_tokens,
            "cost": (chunk.usage.model_extra or {}).get("cost"),
        }
out["stream"] = {"content": "".join(content), "models": sorted(models), "usage": usage, "finish_reason": finish}

# Streaming without usage.
stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": "again"}], stream=True
)
out["stream_plain"] = {"content": "".join(c.choices[0].delta.content or "" for c in stream if c.choices)}

# Models list.
out["models"] = sorted(m.id for m in client.models.list())

# Errors come back as the SDK's typed exceptions.
try:
    client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    out["not_found"] = None
except openai.NotFoundError as e:
    out["not_found"] = {"status": e.status_code, "code": e.code, "message": e.message}

# Embeddings.
emb = client.embeddings.create(model=model, input=["one", "two"])
out["embeddings"] = {"count": len(emb.data), "dims": len(emb.data[0].embedding)}

print(json.dumps(out))
