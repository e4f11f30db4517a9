"""Records written before a refactor of the generation path are written again, byte for byte.

tests/data/golden holds a small soft prompt, a LoRA expert and one run per method on the bundled
`tiny`, made by tools/make_golden.py. The prompt and expert date from before the architecture
refactor (issue 8); the runs were rewritten (`--runs-only`) when STEER's negative prompts changed
by design (issue 10: whole examples only, the cap from the LM's context, a merged LoRA expert):
plain, hard and softsrv records came out the same bytes as the first golden runs. The softsrv and
softsrv-steer runs were rewritten again when contexts began to cycle through the training examples
in a seeded shuffle instead of file order (issue 13: a sorted file gave a short run one label).
Issue 19 stamped the prompt and expert (`synthsteer stamp`: marker, weights' sha256, the LM's full
fingerprint) and rewrote every run, because the LM fingerprint in the settings now hashes all of
the LM's weights: every text came out the same, only the settings hash (and so the ids) changed.
"""

import json
import sys
from pathlib import Path

import pytest

from synthsteer import GenerateConfig, generate

GOLDEN = Path(__file__).parent / "data" / "golden"
sys.path.insert(0, str(Path(__file__).parents[1] / "tools"))
from make_golden import runs  # noqa: E402


@pytest.mark.parametrize("name", ["plain", "hard", "softsrv", "steer", "softsrv-steer"])
def test_golden_run_is_reproduced_byte_for_byte(name, tmp_path):
    config = runs(GOLDEN / "prompt", GOLDEN / "expert")[name]
    out = generate(GenerateConfig(**{**config.__dict__, "out": str(tmp_path / name)}), progress=False)
    golden = GOLDEN / "runs" / name
    new, old = (json.loads((d / "manifest.json").read_text()) for d in (out, golden))
    assert new["settings"] == old["settings"] and new["settings_hash"] == old["settings_hash"]
    assert (out / "records-00000.jsonl").read_text() == (golden / "records-00000.jsonl").read_text()
