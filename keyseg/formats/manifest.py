"""The records of a prepared manifest (`keyseg prepare` writes them, `keyseg shard` reads them).

A manifest can be edited or replaced by hand, so a reader checks every record against
this schema before using it: one bad line is an error for that line, not a crash.

A record has masks (`targets`, one or more) or is a conversation (VQA: `targets` is
empty and `conversations` holds the turns, user first, alternating, ending with the
assistant); `conversations` is absent or null on a record with targets.
"""

from __future__ import annotations

from keyseg.formats.fields import is_int, is_text, is_text_list, type_name
from keyseg.images import ImageError, check_image_size
from keyseg.paths import is_plain_name

VQA_SPEAKERS = ("human", "gpt")  # user, assistant: the order turns alternate in


def check_record(record) -> str | None:
    """Why a manifest record cannot be used (naming the field), or None."""
    if not isinstance(record, dict):
        return f"is a JSON {type_name(record)}, not an object"
    missing = [key for key in ("id", "image", "width", "height", "source", "split", "targets") if key not in record]
    if missing:
        return f"lacks {', '.join(f'`{key}`' for key in missing)}"
    # The id becomes the shard sample key (tar member names): a plain name without dots.
    if not is_plain_name(record["id"]) or "." in record["id"]:
        return f"`id` {record['id']!r:.80} is not a plain name (letters, digits, _ + -)"
    for key in ("image", "source", "split"):
        if not is_text(record[key]) or not record[key]:
            return f"`{key}` is {type_name(record[key])}, expected a non-empty string"
    for key in ("width", "height"):
        if not is_int(record[key]):
            return f"`{key}` is {type_name(record[key])}, expected an integer"
    try:
        check_image_size(record["width"], record["height"])
    except ImageError as error:
        return f"`width`/`height`: {error}"
    if not isinstance(record["targets"], list):
        return f"`targets` is {type_name(record['targets'])}, expected a list"
    for index, target in enumerate(record["targets"]):
        reason = _check_target(target)
        if reason:
            return f"`targets[{index}]` {reason}"
    conversations = record.get("conversations")
    if record["targets"]:
        if conversations is not None:
            return "has both `targets` and `conversations`; a record is one or the other"
        return None
    if conversations is None:
        return "has no targets and no `conversations`"
    return _check_conversations(conversations)


def _check_conversations(turns) -> str | None:
    """Turns as keyseg prepare writes them: the reader's cleaned turns, which alternate
    user/assistant from the user's and end with an assistant turn."""
    if not isinstance(turns, list) or not turns:
        return f"`conversations` is {type_name(turns) if not isinstance(turns, list) else 'empty'}, expected turns"
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or sorted(turn) != ["from", "value"]:
            return f"`conversations[{index}]` is not an object with exactly `from` and `value`"
        if not is_text(turn["value"]):
            return f"`conversations[{index}].value` is {type_name(turn['value'])}, expected a string"
        expected = VQA_SPEAKERS[index % 2]
        if turn["from"] != expected:
            return f"`conversations[{index}].from` is {turn['from']!r:.40}, expected {expected!r}"
    if len(turns) % 2:
        return "`conversations` ends with a user turn, expected the assistant's"
    return None


def _check_target(target) -> str | None:
    if not isinstance(target, dict):
        return f"is {type_name(target)}, expected an object"
    if not is_text(target.get("mask")) or not target["mask"]:
        return f"`mask` is {type_name(target.get('mask'))}, expected a path"
    if not is_text_list(target.get("texts")):
        return "`texts` is not a list of strings"
    if not isinstance(target.get("is_sentence"), bool):
        return f"`is_sentence` is {type_name(target.get('is_sentence'))}, expected true or false"
    for key in ("ann_id", "ref_id"):
        if target.get(key) is not None and not is_int(target[key]):
            return f"`{key}` is {type_name(target[key])}, expected an integer or null"
    explanatory = target.get("explanatory")
    if explanatory is not None and not (isinstance(explanatory, dict)
                                        and all(is_text(explanatory.get(key)) for key in ("query", "outputs"))):
        return "`explanatory` is not null or an object with `query` and `outputs` strings"
    return None
