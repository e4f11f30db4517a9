"""Write the golden runs that tests/test_golden.py regenerates byte for byte.

A small soft prompt and LoRA expert on the bundled `tiny`, and one small run per generation method,
made once with the code of the day and committed under tests/data/golden, so that a refactor of the
generation path can prove it writes the same records. Rerun only on purpose (a change of method):
    python tools/make_golden.py              # prompt, expert and runs
    python tools/make_golden.py --runs-only  # the runs, from the committed prompt and expert
"""

from __future__ import annotations

import shutil
from pathlib import Path

from synthsteer import FitConfig, GenerateConfig, fit_soft_prompt, generate
from synthsteer.lm import load_lm
from synthsteer.steer import ExpertConfig, train_expert

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "data" / "golden"
DATA = {"data": "builtin:gsm8k", "field": "question", "limit": 24}


def runs(prompt: Path, expert: Path) -> dict[str, GenerateConfig]:
    """The golden runs' settings; the test builds the same configs with another `out`."""
    common = {"n": 6, "batch_size": 4, "max_new_tokens": 12, "seed": 5, "device": "cpu", "model": "tiny"}
    data = {"data": "builtin:gsm8k/train", "field": "question"}
    return {
        "plain": GenerateConfig(method="plain", top_k=20, **common),
        "hard": GenerateConfig(method="hard", shots=2, top_p=0.9, **data, **common),
        "softsrv": GenerateConfig(method="softsrv", prompt=str(prompt), context_noise=0.1, context_mix=0.3,
                                  temperature=0.8, **common),
        "steer": GenerateConfig(method="steer", expert=str(expert), negatives=3, top_k=10, **data, **common),
        "softsrv-steer": GenerateConfig(method="steer", prompt=str(prompt), negatives=2, negative_draw="nearest",
                                        gamma=0.4, eta=0.4, **common),
    }


def write_runs(prompt: Path, expert: Path) -> None:
    shutil.rmtree(GOLDEN / "runs", ignore_errors=True)
    for name, config in runs(prompt, expert).items():
        generate(GenerateConfig(**{**config.__dict__, "out": str(GOLDEN / "runs" / name)}), progress=False)
        for extra in (".lock", "log.txt"):  # the lock and the log are not part of what is compared
            (GOLDEN / "runs" / name / extra).unlink(missing_ok=True)
        print(f"wrote {GOLDEN / 'runs' / name}")


def main() -> None:
    import sys

    if "--runs-only" in sys.argv[1:]:
        write_runs(GOLDEN / "prompt", GOLDEN / "expert")
        return
    shutil.rmtree(GOLDEN, ignore_errors=True)
    GOLDEN.mkdir(parents=True)
    prompt = fit_soft_prompt(FitConfig(**DATA, out=str(GOLDEN / "prompt"), model="tiny", encoder="lm-mean",
                                       parameterization="mc", prompt_length=4, mlp_hidden=8, steps=3, batch_size=4,
                                       device="cpu"), progress=False)
    expert = train_expert(ExpertConfig(**DATA, out=str(GOLDEN / "expert"), model="tiny", r=2, alpha=4, steps=3,
                                       batch_size=4, device="cpu"), lm=load_lm("tiny", device="cpu"), progress=False)
    for d in (prompt, expert):
        (Path(d) / "log.txt").unlink(missing_ok=True)
    write_runs(prompt, expert)


if __name__ == "__main__":
    main()
