"""Hard prompts: the bundled tasks' instructions, few-shot examples, and chat formatting.

Each bundled task has one instruction in two forms:
    completion (the paper's template, for LMs without a chat template)
        "### Instruction: Generate a grade-school math word problem.\\n ### Problem:"
    chat (a user turn, for instruction-tuned LMs whose tokenizer has a chat template)
        "Write a grade-school math word problem. Reply with the problem only, without its solution."
With a chat template the prompt is the template applied to one user turn with the generation prompt
appended, so the LM answers as its assistant; few-shot examples go inside that user turn.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .options import Options, option

CHAT_TEMPLATE_MODES = ("auto", "none")


@dataclass(frozen=True)
class HardPromptOptions(Options):
    """The hard-prompt baseline's settings (also STEER's generation prompt with an expert)."""

    expert: str | None = option(None, "Sample from this expert: a directory from `synthsteer expert` (LoRA) or a "
                                      "full fine-tuned model id/path.", nonempty=True)
    instruction: str | None = option(None, "The hard prompt; default: the task's instruction (see the README).")
    shots: int = option(0, "Seeded random training examples put in the hard prompt (few-shot).", ge=0)
    chat_template: str = option("auto", "auto: wrap hard prompts in the tokenizer's chat template (as a user turn) "
                                        "when it has one; none: never.", choices=CHAT_TEMPLATE_MODES)


@dataclass(frozen=True)
class Task:
    what: str  # "a grade-school math word problem"
    marker: str  # the completion template's answer marker, "Problem"
    reply: str  # what the chat form asks the reply to hold

    def completion(self) -> str:
        return f"### Instruction: Generate {self.what}.\n ### {self.marker}:"

    def chat(self) -> str:
        return f"Write {self.what}. {self.reply}"


TASKS = {
    "gsm8k": Task("a grade-school math word problem", "Problem", "Reply with the problem only, without its solution."),
    "mbpp": Task("a short Python programming task", "Task",
                 "Reply with a one-sentence description of the task only, without code."),
    "boolq": Task("a yes/no question about a Wikipedia topic", "Question", "Reply with the question only."),
    "commonsenseqa": Task("a multiple-choice commonsense question", "Question",
                          "Reply with the question only, without answer choices."),
    "jigsaw": Task("a social media comment", "Comment", "Reply with the comment only."),
}
GENERIC = Task("an example like those of the dataset", "Example", "Reply with the example only.")


def task_of(source: str | None) -> Task:
    """The bundled task a data source names (`builtin:gsm8k/train` -> gsm8k), else the generic one."""
    if source and source.startswith("builtin:"):
        return TASKS.get(source[len("builtin:"):].split("/")[0], GENERIC)
    return GENERIC


def default_instruction(source: str | None, chat: bool = False) -> str:
    task = task_of(source)
    return task.chat() if chat else task.completion()


def uses_chat_template(tokenizer, mode: str) -> bool:
    """`auto`: wrap hard prompts in the tokenizer's chat template when it has one; `none`: never."""
    return mode == "auto" and bool(getattr(tokenizer, "chat_template", None))


def chat_template_id(tokenizer, chat: bool) -> str | None:
    """What the settings record of the template: a short hash of it, or None when unused."""
    return hashlib.sha256(tokenizer.chat_template.encode()).hexdigest()[:16] if chat else None


def few_shot_prompt(instruction: str, examples: list[str], chat: bool = False) -> str:
    """The instruction with `examples`.

    completion: the examples go under the instruction's answer marker, so
        "### Instruction: ...\\n ### Problem:" becomes "... ### Problem: ex1\\n ### Problem: ex2\\n ### Problem:".
    chat: the examples come first in the user turn, numbered, then the instruction."""
    if chat:
        if not examples:
            return instruction
        shots = "\n\n".join(f"Example {i + 1}: {ex}" for i, ex in enumerate(examples))
        return f"Here are some examples.\n\n{shots}\n\n{instruction}"
    head, marker = instruction.rsplit("\n", 1) if "\n" in instruction else ("", instruction)
    shots = "".join(f"\n{marker} {ex}" for ex in examples)
    return f"{head}{shots}\n{marker}" if head else f"{shots.lstrip()}\n{marker}" if examples else marker


def prompt_ids(tokenizer, text: str, chat: bool) -> list[int]:
    """The prompt's token ids: the chat template around one user turn, with the assistant's turn
    opened; or the text after the LM's BOS (or EOS, the document separator) when it has no template."""
    if chat:
        rendered = tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False,
                                                 add_generation_prompt=True)
        return tokenizer.encode(rendered, add_special_tokens=False)
    return [start_token(tokenizer)] + tokenizer.encode(text, add_special_tokens=False)


def start_token(tokenizer) -> int:
    """Where a sample with no prompt starts: the BOS token, or EOS (the document separator)."""
    return tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id


def stop_token_ids(tokenizer, model) -> set[int]:
    """Tokens that end a sample: EOS, the generation config's EOS ids, and every special token (pad
    and unk included): a chat model that opens a new turn with <|im_start|> has finished its
    answer, and no template token or text after one ever reaches a record."""
    stops = {tokenizer.eos_token_id}
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    stops |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
    stops |= set(tokenizer.all_special_ids)
    return {t for t in stops if t is not None}
