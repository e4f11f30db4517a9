"""Hard prompts: task instructions, few-shot, chat templates, and no template token in any record."""

import json
import shutil

import pytest

from synthsteer import GenerateConfig, generate, read_run
from synthsteer.prompts import default_instruction, few_shot_prompt, prompt_ids, stop_token_ids, uses_chat_template

CHATML = ("{% for m in messages %}<turn>{{ m['role'] }}\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
          "{% if add_generation_prompt %}<turn>assistant\n{% endif %}")


@pytest.fixture(scope="module")
def chat_lm_dir(lm_dir, tmp_path_factory):
    """The tiny random Llama with a chat template on its tokenizer."""
    from transformers import AutoTokenizer

    path = tmp_path_factory.mktemp("chat") / "lm"
    shutil.copytree(lm_dir, path)
    tok = AutoTokenizer.from_pretrained(path)
    tok.chat_template = CHATML
    tok.save_pretrained(path)
    return path


def test_instructions_of_the_bundled_tasks():
    assert default_instruction("builtin:gsm8k/train") == \
        "### Instruction: Generate a grade-school math word problem.\n ### Problem:"
    assert default_instruction("builtin:gsm8k", chat=True) == \
        "Write a grade-school math word problem. Reply with the problem only, without its solution."
    assert default_instruction("reviews.csv", chat=True).startswith("Write an example like those of the dataset.")


def test_few_shot_completion_and_chat():
    completion = few_shot_prompt("### Instruction: Generate a problem.\n ### Problem:", ["a?", "b?"])
    assert completion == "### Instruction: Generate a problem.\n ### Problem: a?\n ### Problem: b?\n ### Problem:"
    chat = few_shot_prompt("Write a problem.", ["a?", "b?"], chat=True)
    assert chat == "Here are some examples.\n\nExample 1: a?\n\nExample 2: b?\n\nWrite a problem."
    assert few_shot_prompt("Write a problem.", [], chat=True) == "Write a problem."


def test_prompt_ids_with_and_without_a_template(lm_dir, chat_lm_dir):
    from transformers import AutoTokenizer

    plain, chat = AutoTokenizer.from_pretrained(lm_dir), AutoTokenizer.from_pretrained(chat_lm_dir)
    assert not uses_chat_template(plain, "auto") and uses_chat_template(chat, "auto")
    assert not uses_chat_template(chat, "none")
    ids = prompt_ids(plain, "Write a problem.", chat=False)
    assert ids[0] == plain.eos_token_id and plain.decode(ids[1:]) == "Write a problem."
    text = chat.decode(prompt_ids(chat, few_shot_prompt("Write a problem.", ["a?"], chat=True), chat=True))
    eos = chat.eos_token
    assert text == f"<turn>user\nHere are some examples.\n\nExample 1: a?\n\nWrite a problem.{eos}\n<turn>assistant\n"


def test_hard_prompts_record_the_template_choice(lm_dir, chat_lm_dir, small_jsonl, tmp_path):
    def run(model, out, **kw):
        cfg = GenerateConfig(out=str(tmp_path / out), method="hard", model=str(model), data=str(small_jsonl),
                             field="question", shots=2, n=3, max_new_tokens=6, device="cpu", **kw)
        path = generate(cfg, progress=False)
        return json.loads((path / "manifest.json").read_text())["settings"], read_run(path)

    settings, _ = run(lm_dir, "plain")
    assert settings["chat_template"] is None and settings["instruction"].startswith("### Instruction:")
    settings, records = run(chat_lm_dir, "chat")
    assert len(settings["chat_template"]) == 16 and settings["instruction"].startswith("Write an example")
    settings_none, _ = run(chat_lm_dir, "chat-none", chat_template="none")
    assert settings_none["chat_template"] is None and settings_none["instruction"].startswith("### Instruction:")
    assert len(records) == 3
    with pytest.raises(Exception, match="--chat-template sometimes: use one of auto, none"):
        GenerateConfig(chat_template="sometimes")


def test_smollm2_chat_prompts_and_no_template_tokens_in_records(smollm2, tmp_path):
    tok = smollm2.tokenizer
    stops = stop_token_ids(tok, smollm2.model)
    assert {tok.convert_tokens_to_ids("<|im_start|>"), tok.convert_tokens_to_ids("<|im_end|>")} <= stops
    text = tok.decode(prompt_ids(tok, default_instruction("builtin:gsm8k", chat=True), chat=True))
    assert text.endswith("<|im_start|>user\nWrite a grade-school math word problem. Reply with the problem only, "
                         "without its solution.<|im_end|>\n<|im_start|>assistant\n")
    for shots in (0, 2):
        run = generate(GenerateConfig(out=str(tmp_path / f"s{shots}"), method="hard", model="smollm2",
                                      data="builtin:gsm8k", field="question", shots=shots, n=3, max_new_tokens=24,
                                      top_k=20, device="cpu"), progress=False, lm=smollm2)
        for r in read_run(run):
            assert r["text"] and "<|im_" not in r["text"] and not r["text"].startswith(("assistant", "user"))
