"""Question/answer text for one query: LISA's recipe plus KeySeg's `[KEY] keyword`.

Train mode draws templates at random (with the caller's seeded `random.Random`):
  - short phrase:  a `phrase_questions` template with the phrase (lower-cased, as LISA does)
  - sentence:      a `sentence_questions` template with the sentence as written
  - answer:        an `answers` template, each with exactly one `[SEG]`
  - explanatory:   (chosen by the sample decoder with probability `explanatory`) the
                   target's `explanatory_query` as a sentence question and an
                   `explanatory_answers` template around the explanatory text
  - KeySeg:        `" [KEY] {keyword}"` appended to the answer when the keyword is known
                   and `use_keyword` is on.
Eval mode has no randomness: the first template of the kind and the fixed teacher-forced
answer `eval_answer` ("[SEG]. [KEY]." by default).

Questions carry no image token: adding `<image>\n` and the chat template is the
tokeniser's job in the trainer, which knows the model's conversation format.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

SEG_TOKEN = "[SEG]"
KEY_TOKEN = "[KEY]"

PHRASE_QUESTIONS = (
    "Can you segment the {text} in this image?",
    "Please segment the {text}.",
    "Where is the {text} in this picture? Please output the segmentation mask.",
    "Show me the {text} in this image with a segmentation mask.",
)
SENTENCE_QUESTIONS = (
    "{text} Please output the segmentation mask.",
    "{text} Please answer with a segmentation mask.",
    "{text} Respond with the segmentation mask.",
)
ANSWERS = (
    "It is [SEG].",
    "Sure, [SEG].",
    "Sure, it is [SEG].",
    "The segmentation result is [SEG].",
    "[SEG].",
)
EXPLANATORY_ANSWERS = (
    "{explanatory} [SEG].",
    "{explanatory} It is [SEG].",
)


@dataclass(frozen=True)
class ConversationConfig:
    """Templates and options; defaults follow LISA except where KeySeg adds the keyword."""

    phrase_questions: tuple[str, ...] = PHRASE_QUESTIONS  # each contains "{text}"
    sentence_questions: tuple[str, ...] = SENTENCE_QUESTIONS  # each contains "{text}"
    answers: tuple[str, ...] = ANSWERS  # each contains "[SEG]" exactly once
    explanatory_answers: tuple[str, ...] = EXPLANATORY_ANSWERS  # "{explanatory}" and one "[SEG]"
    use_keyword: bool = True  # append " [KEY] {keyword}" to train answers (KeySeg)
    # Probability that a query whose target has an explanatory answer (only ReasonSeg
    # train targets do) is asked as its explanatory_query. LISA's ReasonSeg recipe uses 0.1.
    explanatory: float = 0.0
    lowercase_phrases: bool = True  # LISA lower-cases short phrases in questions
    eval_answer: str = "[SEG]. [KEY]."  # the teacher-forced answer of every eval query

    def __post_init__(self) -> None:
        for name in ("phrase_questions", "sentence_questions", "answers", "explanatory_answers"):
            templates = getattr(self, name)
            if isinstance(templates, str) or not templates:
                raise ValueError(f"{name} must be a non-empty sequence of templates")
            # Accept lists from config files but store tuples: the config stays hashable.
            object.__setattr__(self, name, tuple(templates))
        for template in self.phrase_questions + self.sentence_questions:
            if "{text}" not in template:
                raise ValueError(f"question template {template!r} lacks {{text}}")
        for template in self.answers + self.explanatory_answers:
            if template.count(SEG_TOKEN) != 1 or KEY_TOKEN in template:
                raise ValueError(f"answer template {template!r} must contain [SEG] exactly once and no [KEY]")
        for template in self.explanatory_answers:
            if "{explanatory}" not in template:
                raise ValueError(f"explanatory answer template {template!r} lacks {{explanatory}}")
        if not 0.0 <= self.explanatory <= 1.0:
            raise ValueError(f"explanatory probability {self.explanatory} is not in [0, 1]")


def _question(text: str, is_sentence: bool, template: str, config: ConversationConfig) -> str:
    text = text.strip()
    if not is_sentence and config.lowercase_phrases:
        text = text.lower()
    return template.format(text=text)


def _with_keyword(answer: str, keyword: str | None, config: ConversationConfig) -> str:
    if config.use_keyword and keyword:
        return f"{answer} {KEY_TOKEN} {keyword.strip()}"
    return answer


def train_pair(text: str, is_sentence: bool, keyword: str | None, config: ConversationConfig,
               rng: random.Random) -> tuple[str, str]:
    """(question, answer) for a training query, templates drawn from `rng`."""
    templates = config.sentence_questions if is_sentence else config.phrase_questions
    question = _question(text, is_sentence, rng.choice(templates), config)
    return question, _with_keyword(rng.choice(config.answers), keyword, config)


def can_explain(explanatory: str | None, explanatory_query: str | None) -> bool:
    """An explanatory pair is only built when it keeps exactly one [SEG] in the answer."""
    if not explanatory or not explanatory_query:
        return False
    return SEG_TOKEN not in explanatory and KEY_TOKEN not in explanatory


def explanatory_pair(explanatory_query: str, explanatory: str, keyword: str | None,
                     config: ConversationConfig, rng: random.Random) -> tuple[str, str]:
    """(question, answer) asking the explanatory query and answering with the explanation."""
    question = _question(explanatory_query, True, rng.choice(config.sentence_questions), config)
    answer = rng.choice(config.explanatory_answers).format(explanatory=explanatory.strip())
    return question, _with_keyword(answer, keyword, config)


def eval_pair(text: str, is_sentence: bool, config: ConversationConfig) -> tuple[str, str]:
    """(question, answer) for evaluation: first template, fixed answer, no randomness."""
    templates = config.sentence_questions if is_sentence else config.phrase_questions
    return _question(text, is_sentence, templates[0], config), config.eval_answer
