"""Our keyword-extraction prompt and JSON schema, versioned.

Bump PROMPT_VERSION whenever the text or schema changes: it is part of every cache key,
so answers to an old prompt are never reused for a new one.
"""

from __future__ import annotations

import json
import re

PROMPT_VERSION = "keyseg-keyword-v1"

SYSTEM_PROMPT = (
    "You label training data for image segmentation. Given a question about an image and "
    "its answer, name the object that the question asks to segment. Reply with the shortest "
    "noun phrase (1 to 3 words, usually one noun, e.g. 'spoon' or 'traffic light') copied "
    "from the question or the answer. Do not return adjectives alone, colours, pronouns, "
    "or generic words such as 'object' or 'thing'."
)

USER_TEMPLATE = "Question: {query}\nAnswer: {outputs}\n\nReply as JSON: {{\"keyword\": \"...\"}}"

RETRY_TEMPLATE = (
    "Your previous reply {previous!r} was rejected: {reason}. "
    "Reply again as JSON with a keyword that occurs in the question or the answer."
)

KEYWORD_SCHEMA = {
    "name": "keyword",
    "strict": True,
    "schema": {
        "type": "object",
        "properties": {"keyword": {"type": "string", "description": "1-3 word noun phrase from the text"}},
        "required": ["keyword"],
        "additionalProperties": False,
    },
}


def build_messages(query: str, outputs: str, feedback: tuple[str, str] | None = None) -> list[dict]:
    """Chat messages for one record; `feedback` is (previous answer, why it was rejected)."""
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": USER_TEMPLATE.format(query=query, outputs=outputs)},
    ]
    if feedback is not None:
        previous, reason = feedback
        messages.append({"role": "assistant", "content": json.dumps({"keyword": previous})})
        messages.append({"role": "user", "content": RETRY_TEMPLATE.format(previous=previous, reason=reason)})
    return messages


def prompt_description() -> dict:
    """What the report stores, so every keyword says which prompt produced it."""
    return {"version": PROMPT_VERSION, "system": SYSTEM_PROMPT, "user": USER_TEMPLATE,
            "retry": RETRY_TEMPLATE, "schema": KEYWORD_SCHEMA}


_JSON_OBJECT = re.compile(r"\{.*?\}", re.DOTALL)


def parse_keyword(content: str | None) -> str | None:
    """The keyword in a reply: a JSON object's `keyword`, else the reply's first line.

    Servers without structured output answer in prose or with a JSON object inside it.
    Returns None when nothing usable is there.
    """
    if not content or not content.strip():
        return None
    text = content.strip()
    for candidate in [text, *_JSON_OBJECT.findall(text)]:
        try:
            parsed = json.loads(candidate)
        except (json.JSONDecodeError, ValueError):
            continue
        if isinstance(parsed, dict):
            value = parsed.get("keyword")
            return value.strip() if isinstance(value, str) and value.strip() else None
    first_line = text.splitlines()[0].strip()
    first_line = re.sub(r"^(keyword|answer)\s*:\s*", "", first_line, flags=re.IGNORECASE)
    return first_line or None
