"""Conversation text for one query, exactly as LISA and the KeySeg release build it.

See docs/fidelity.md ("Conversations and prompts") for the reference lines behind each rule.
A conversation is the llava_v1 template with one round,
    "{SYSTEM} USER: <im_start><image><im_end>\\n{question} ASSISTANT: {answer}</s>"
then, for KeySeg, "[KEY] {keyword}" (training) or " [KEY]." (evaluation) before the "</s>".

Training (the release's ReasonSeg and refCOCO datasets):
  - refCOCO: a random short-question template with the expression lower-cased, a random
    answer template; the keyword is the expression as written.
  - ReasonSeg, image without a keyword entry: a random short or long template (short ones
    lower-case the phrase); no [KEY].
  - ReasonSeg, image with a keyword entry: with probability `explanatory` the bare query
    text is asked (choice 2); otherwise a template (choice 0) or the query followed by an
    explanatory request (choice 1), one of the two at random. The keyword is appended.
  - The answer of every ReasonSeg conversation is "[SEG]." (the release builds the other
    answers but never uses them).
Evaluation: "<image>\\n {text} Please output segmentation mask." for sentences and
"<image>\\n What is {text} in this image? Please output segmentation mask." for phrases
(LISA's protocol), or the bare "<image>\\n{text}" (the release's refCOCO test); answer
"[SEG]." followed by " [KEY]." for models with a keyword token.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from keyseg.model.tokens import IM_END_TOKEN, IM_START_TOKEN, IMAGE_TOKEN, KEY_TOKEN

SYSTEM_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
EOS = "</s>"
IMAGE_PREFIX = IMAGE_TOKEN + "\n"

# The reference's lists, string for string (LISA utils/utils.py, shared by the release).
SHORT_QUESTIONS = (
    IMAGE_PREFIX + "Can you segment the {class_name} in this image?",
    IMAGE_PREFIX + "Please segment the {class_name} in this image.",
    IMAGE_PREFIX + "What is {class_name} in this image? Please respond with segmentation mask.",
    IMAGE_PREFIX + "What is {class_name} in this image? Please output segmentation mask.",
)
LONG_QUESTIONS = (
    IMAGE_PREFIX + "{sent} Please respond with segmentation mask.",
    IMAGE_PREFIX + "{sent} Please output segmentation mask.",
)
EXPLANATORY_QUESTIONS = (
    "Please output segmentation mask and explain why.",
    "Please output segmentation mask and explain the reason.",
    "Please output segmentation mask and give some explanation.",
)
ANSWERS = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "Sure, the segmentation result is [SEG].",
    "[SEG].",
)
REASONSEG_ANSWER = "[SEG]."
EVAL_SENTENCE_QUESTION = IMAGE_PREFIX + " {text} Please output segmentation mask."
EVAL_PHRASE_QUESTION = IMAGE_PREFIX + " What is {text} in this image? Please output segmentation mask."
EVAL_ANSWER = "[SEG]."
EVAL_KEY_SUFFIX = " [KEY]."

REFER_PROTOCOLS = ("lisa", "release")
"""refCOCO evaluation: "lisa" scores every sentence of every ref with the phrase template;
"release" scores the first sentence of each ref, asked bare (the release's test set)."""


@dataclass(frozen=True)
class ConversationConfig:
    explanatory: float = 1.0
    """ReasonSeg train: probability of asking the bare query text (the release's choice 2;
    its finetune.py default is 1.0, LISA's 0.1 belongs to LISA's explanatory answers)."""
    use_keyword: bool = True
    """Append "[KEY] {keyword}" in training and " [KEY]." in evaluation (KeySeg)."""
    refer_protocol: str = "lisa"

    def __post_init__(self) -> None:
        if not 0.0 <= self.explanatory <= 1.0:
            raise ValueError(f"explanatory probability {self.explanatory} is not in [0, 1]")
        if self.refer_protocol not in REFER_PROTOCOLS:
            raise ValueError(f"refer_protocol must be one of {REFER_PROTOCOLS}, got {self.refer_protocol!r}")


def conversation(question: str, answer: str) -> str:
    """The llava_v1 text of one round; `question` holds "<image>\\n" where the image goes."""
    return f"{SYSTEM_PROMPT} USER: {question} ASSISTANT: {answer}{EOS}"


def generation_prompt(question: str) -> str:
    """The text the model continues to answer `question` (an empty assistant turn)."""
    return with_image_markers(f"{SYSTEM_PROMPT} USER: {question} ASSISTANT:")


def with_image_markers(text: str) -> str:
    """<image> wrapped in <im_start> ... <im_end> (LISA-7B-v1 uses the start/end tokens)."""
    return text.replace(IMAGE_TOKEN, IM_START_TOKEN + IMAGE_TOKEN + IM_END_TOKEN)


def train_keyword_text(text: str, keyword: str | None) -> str:
    """`text` (a conversation) with "[KEY] {keyword}" before its "</s>" (no space before [KEY])."""
    return text if keyword is None else text.replace(EOS, f"{KEY_TOKEN} {keyword}{EOS}")


def eval_keyword_text(text: str) -> str:
    """`text` with " [KEY]." before its "</s>" unless it already has a [KEY]."""
    return text if KEY_TOKEN in text else text.replace(EOS, f"{EVAL_KEY_SUFFIX}{EOS}")


@dataclass(frozen=True)
class Query:
    """One query's conversation and what it was built from."""

    question: str  # the human message, with "<image>\n"
    conversation: str  # the full text the tokenizer sees
    keyword: str | None  # the [KEY] target word(s), None without [KEY]


def refer_train_query(sentence: str, keyword_on: bool, rng: random.Random) -> Query:
    question = rng.choice(SHORT_QUESTIONS).format(class_name=sentence.lower())
    keyword = sentence if keyword_on else None
    text = conversation(question, rng.choice(ANSWERS))
    return Query(question, with_image_markers(train_keyword_text(text, keyword)), keyword)


def reasonseg_choice(has_keyword_entry: bool, config: ConversationConfig, rng: random.Random) -> int:
    """The release's per-image choice: 2 bare query, 1 query + explanatory request, 0 template."""
    if not has_keyword_entry:
        return 0
    return 2 if rng.random() < config.explanatory else rng.randint(0, 1)


def reasonseg_train_query(text: str, is_sentence: bool, keyword: str | None, has_keyword_entry: bool,
                          choice: int, config: ConversationConfig, rng: random.Random) -> Query:
    if choice == 2:
        question = IMAGE_PREFIX + text
    elif choice == 1:
        question = IMAGE_PREFIX + text + " " + rng.choice(EXPLANATORY_QUESTIONS)
    elif is_sentence:
        question = rng.choice(LONG_QUESTIONS).format(sent=text)
    else:
        question = rng.choice(SHORT_QUESTIONS).format(class_name=text.lower())
    keyword = keyword if (has_keyword_entry and config.use_keyword) else None
    text = conversation(question, REASONSEG_ANSWER)
    return Query(question, with_image_markers(train_keyword_text(text, keyword)), keyword)


def eval_query(text: str, is_sentence: bool, config: ConversationConfig, bare: bool = False) -> Query:
    """The evaluation conversation of one query (no randomness)."""
    text = text.strip()
    if bare:
        question = IMAGE_PREFIX + text
    elif is_sentence:
        question = EVAL_SENTENCE_QUESTION.format(text=text)
    else:
        question = EVAL_PHRASE_QUESTION.format(text=text)
    full = conversation(question, EVAL_ANSWER)
    if config.use_keyword:
        full = eval_keyword_text(full)
    return Query(question, with_image_markers(full), None)


def chat_query(question_text: str) -> str:
    """The human message for a free-form question (as the reference's chat scripts ask it)."""
    return IMAGE_PREFIX + question_text


def template_texts() -> list[str]:
    """Every fixed text a conversation can hold (a word-level vocabulary needs their words)."""
    return [SYSTEM_PROMPT, "USER: ASSISTANT:", *SHORT_QUESTIONS, *LONG_QUESTIONS, *EXPLANATORY_QUESTIONS, *ANSWERS,
            EVAL_SENTENCE_QUESTION, EVAL_PHRASE_QUESTION, EVAL_ANSWER + EVAL_KEY_SUFFIX]


# ---------------------------------------------------------------------------
# Visual question answering (LLaVA-Instruct-150k): multi-turn conversations from the data
# file, as LISA's VQADataset builds them (docs/sources_vqa.md has the reference lines).

VQA_ROLES = {"human": "USER", "gpt": "ASSISTANT"}
"""The data file's speakers and the llava_v1 roles they become (the first is the user)."""
ROUND_SEPARATOR = " ASSISTANT: "  # the collate cuts each round here: instruction | answer


def vqa_message(value: str) -> str:
    """One turn's text after the reference's `preprocess_multimodal`.

    A turn that mentions "<image>" anywhere (any speaker) loses every "<image>", is
    stripped, and gets one "<image>\\n" in front; then it is stripped again, so an
    otherwise empty turn is just "<image>". Other turns are left exactly as written.
    Applying it twice gives the same text.
    """
    if IMAGE_TOKEN not in value:
        return value
    return (IMAGE_PREFIX + value.replace(IMAGE_TOKEN, "").strip()).strip()


def vqa_turns(turns: list[dict]) -> list[dict]:
    """The turns the reference puts in the prompt: every value through `vqa_message`, and the
    first turn dropped when it is not the user's (only the first; the rest must alternate
    user, assistant, ... or the reference stops, see `vqa_turn_problem`)."""
    cleaned = [{"from": turn["from"], "value": vqa_message(turn["value"])} for turn in turns]
    if cleaned and VQA_ROLES.get(cleaned[0]["from"]) != VQA_ROLES["human"]:
        cleaned = cleaned[1:]
    return cleaned


def vqa_prompt(turns: list[dict]) -> str:
    """The llava_v1 text of cleaned turns (`vqa_turns`): user turns end with " ", assistant
    turns with "</s>"; an empty turn is written as "ROLE:" with no separator, as the
    reference's `get_prompt` does."""
    text = SYSTEM_PROMPT + " "
    for index, turn in enumerate(turns):
        role = VQA_ROLES[turn["from"]]
        if turn["value"]:
            text += f"{role}: {turn['value']}" + (" " if index % 2 == 0 else EOS)
        else:
            text += f"{role}:"
    return text


def vqa_turn_problem(turns: list[dict]) -> tuple[str, str] | None:
    """(code, reason) when the reference cannot build and tokenise these raw turns, else None.

    Mirrors where LISA's VQADataset and collate stop: a speaker other than human/gpt
    ("bad_role"), no turn left after dropping a leading assistant turn or turns that do not
    alternate user/assistant ("not_alternating"), and a prompt whose rounds (cut at "</s>")
    do not each hold exactly one " ASSISTANT: " ("bad_round": a conversation ending with a
    user turn, an empty turn, or a value that itself holds "</s>" or " ASSISTANT: ").
    """
    if not turns:
        return "not_alternating", "the conversation has no turns"
    for index, turn in enumerate(turns):
        if turn.get("from") not in VQA_ROLES:
            return "bad_role", f"turn {index}: speaker {turn.get('from')!r} is neither 'human' nor 'gpt'"
    cleaned = vqa_turns(turns)
    if not cleaned:
        return "not_alternating", "no turn is left after dropping the leading assistant turn"
    user, assistant = VQA_ROLES["human"], VQA_ROLES["gpt"]
    for index, turn in enumerate(cleaned):
        expected = user if index % 2 == 0 else assistant
        if VQA_ROLES[turn["from"]] != expected:
            return "not_alternating", (f"turns do not alternate user/assistant (turn {index} of the prompt "
                                       f"should be the {expected.lower()}'s)")
    for index, round_text in enumerate(vqa_prompt(cleaned).split(EOS)):
        if round_text == "":
            break
        if len(round_text.split(ROUND_SEPARATOR)) != 2:
            return "bad_round", (f"round {index} of the prompt does not split into one question and one answer "
                                 "(an empty turn, a last turn that is the user's, or a value holding "
                                 "'</s>' or ' ASSISTANT: ')")
    return None


def vqa_conversation(turns: list[dict]) -> str:
    """The full text the collate tokenises for one LLaVA-Instruct record: the reference's
    cleaning (`vqa_turns`), the llava_v1 prompt, and <image> wrapped in <im_start>/<im_end>.
    Raw or already cleaned turns give the same text. Raises ValueError where the reference
    would stop (`vqa_turn_problem`)."""
    problem = vqa_turn_problem(turns)
    if problem is not None:
        raise ValueError(problem[1])
    return with_image_markers(vqa_prompt(vqa_turns(turns)))
