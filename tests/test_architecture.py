"""The seams: option groups (validation, help, applicability), the method registry, the engine."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from synthsteer import GenerateConfig, SamplingConfig
from synthsteer.decoder import Prefix
from synthsteer.engine import Request, Step, TransformersEngine
from synthsteer.errors import SynthsteerError
from synthsteer.generation import METHODS, method_spec
from synthsteer.randomness import Stream, stream_key


@pytest.mark.parametrize("kw, message", [
    ({"top_p": 2.0}, "--top-p must be in (0, 1], got 2.0"),
    ({"top_p": 0.0}, "--top-p must be in (0, 1], got 0.0"),
    ({"temperature": float("nan")}, "--temperature must not be negative, got nan"),
    ({"temperature": -1.0}, "--temperature must not be negative, got -1.0"),
    ({"top_k": -1}, "--top-k must not be negative, got -1"),
    ({"context_mix": 2.0}, "--context-mix must be in [0, 1], got 2.0"),
    ({"gamma": float("nan")}, "--gamma must not be negative, got nan"),
    ({"negative_draw": "far"}, "--negative-draw far: use one of uniform, nearest"),
    ({"method": "magic"}, "--method magic: use one of softsrv, plain, hard, steer"),
    ({"dtype": "float8"}, "--dtype float8: use one of"),
    ({"n": 0}, "--n must be at least 1, got 0"),
])
def test_settings_are_validated_at_construction(kw, message):
    with pytest.raises(SynthsteerError) as e:
        GenerateConfig(**kw)
    assert str(e.value).startswith(message)
    with pytest.raises(SynthsteerError, match=r"--top-p must be in \(0, 1\]"):
        SamplingConfig(top_p=1.5)


def test_a_flag_the_method_does_not_read_is_reported(capsys):
    GenerateConfig(method="plain", gamma=0.5, shots=2)
    assert capsys.readouterr().err.strip() == "warning: --gamma, --shots do not apply to --method plain (ignored)"
    GenerateConfig(method="steer", expert="e", gamma=0.5, shots=2, data="builtin:gsm8k")
    assert capsys.readouterr().err == ""


def test_every_method_is_declared_once_and_everything_else_derives_from_it():
    from dataclasses import fields

    from synthsteer.generation.config import ignored_settings
    from synthsteer.method import Method
    from synthsteer.engine import engine_class
    from synthsteer.options import ENGINE_SPECS, ENGINES

    assert list(METHODS) == ["softsrv", "plain", "hard", "steer"]
    choices = {f.name: f.metadata["choices"] for f in fields(GenerateConfig)}
    assert choices["method"] == tuple(METHODS) and choices["engine"] == ENGINES == tuple(ENGINE_SPECS)
    for name in ENGINES:  # each engine's module imports without its backend installed (vLLM is optional)
        cls = engine_class(name)
        assert cls.__name__ in ENGINE_SPECS[name].impl and callable(cls.build) and callable(cls.run), name
    for name, spec in METHODS.items():
        cls = spec.method_class()
        assert issubclass(cls, Method) and cls.spec is spec, name
        # the view holds exactly the groups' fields, each one of GenerateConfig's
        view = spec.view_of(GenerateConfig(method=name))
        assert {f.name for f in fields(view)} <= {f.name for f in fields(GenerateConfig)}
    assert {f.name for f in fields(METHODS["plain"].view)} == {"batch_size", "seed", "field", "template", "format", "fields",
                                                                "rename"}
    assert ignored_settings(GenerateConfig(method="softsrv", shots=3)) == ["--shots"]
    with pytest.raises(SynthsteerError, match="--method nope: use one of hard, plain, softsrv, steer"):
        method_spec("nope")


def test_a_new_method_is_one_declaration(monkeypatch):
    """A declared method's option group becomes one of GenerateConfig's groups (the class statement
    takes `registry.method_groups()`), and its flags are checked for applicability like the others."""
    from dataclasses import dataclass

    from synthsteer.generation import registry
    from synthsteer.method import MethodSpec
    from synthsteer.options import SeedOptions, option

    assert set(registry.method_groups()) <= set(GenerateConfig.__mro__)

    @dataclass(frozen=True)
    class EchoOptions(SeedOptions):
        echo: int = option(1, "Times to echo.", count=True)

    @dataclass(frozen=True)
    class EchoView(EchoOptions, SeedOptions):
        """What --method echo reads."""

    monkeypatch.setitem(registry.METHODS, "echo", MethodSpec("echo", "an echo", EchoView,
                                                            "synthsteer.baselines.method:Plain"))
    assert registry.method_groups()[-1] is EchoOptions


def test_imports_point_one_way():
    """No import cycle anywhere in the package, counting imports inside functions (only those under
    `if TYPE_CHECKING:` are left out: they never run)."""
    import ast

    root = Path(__file__).parents[1] / "src" / "synthsteer"
    modules = {".".join(p.relative_to(root.parent).with_suffix("").parts).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}

    def imported(name: str, path: Path) -> set[str]:
        tree = ast.parse(path.read_text())
        skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                for n in ast.walk(node)}
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        out = set()
        for node in ast.walk(tree):
            if id(node) in skip or not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                while t not in modules and "." in t:
                    t = t.rsplit(".", 1)[0]
                if t in modules and t != name:
                    out.add(t)
        return out

    graph = {name: imported(name, path) for name, path in modules.items()}
    assert graph["synthsteer.generation.run"] >= {"synthsteer.generation.generator"}  # the walk sees imports
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_random_streams_of_a_record_differ():
    keys = {stream_key(7, s, 3) for s in Stream}
    assert len(keys) == len(Stream)


def test_cli_help_is_fast_shows_defaults_and_version():
    code = "import sys, synthsteer.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
    from synthsteer.cli import main

    out = subprocess.run([sys.executable, "-m", "synthsteer.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("synthsteer 0.")
    helptext = subprocess.run([sys.executable, "-m", "synthsteer.cli", "fit", "--help"], capture_output=True,
                              text=True).stdout
    helptext = " ".join(helptext.split())  # as one line, whatever the wrapping
    assert "MISSING" not in helptext and "[default: 300]" in helptext and "One of: nsp, mp, mc." in helptext
    tool = Path(__file__).parents[1] / "tools" / "pretrain_tiny.py"
    helptext = subprocess.run([sys.executable, str(tool), "--help"], capture_output=True, text=True, check=True).stdout
    helptext = " ".join(helptext.split())
    assert "MISSING" not in helptext and "[default: 8192]" in helptext and "--resume" in helptext
    with pytest.raises(SystemExit) as e:
        main(["generate", "--top-p", "2", "--out", "/nonexistent/x"])
    assert e.value.code == 2


def test_engine_results_carry_finish_and_logprob(lm_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(lm_dir).eval()
    engine = TransformersEngine([model])
    prompt = [0, 5, 9, 13]
    sampling = SamplingConfig(temperature=0, max_new_tokens=6)
    [res] = engine.run([Request({"main": Prefix(ids=prompt)}, key=1)], Step(), sampling, stop_ids={-1})
    assert res.finish == "length" and len(res.tokens) == 6
    with torch.no_grad():
        ids = torch.tensor([prompt + res.tokens])
        lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
    expected = sum(lp[len(prompt) - 1 + t, tok].item() for t, tok in enumerate(res.tokens))
    assert res.logprob == pytest.approx(expected, abs=1e-3)
    with pytest.raises(ValueError, match="not the method's"):
        engine.run([Request({"expert": Prefix(ids=prompt)}, key=1)], Step(), sampling, stop_ids={-1})


def test_a_new_metric_is_one_table_entry(tmp_path, monkeypatch):
    import json

    from synthsteer import metrics
    from synthsteer.evaluation import EvalConfig, evaluate
    from synthsteer.report import headers, transposed

    extra = metrics.Metric("question_marks", "question marks", "", "{:.2f}",
                           lambda x: sum(t.count("?") for t in x.texts) / len(x.texts))
    monkeypatch.setattr(metrics, "METRICS", (*metrics.METRICS, extra))
    data = tmp_path / "q.jsonl"
    data.write_text("".join(json.dumps({"text": f"question {i}?"}) + "\n" for i in range(40)))
    report = evaluate(EvalConfig(real=str(data), field="text", synthetic=(f"same={data}",), out=str(tmp_path / "e"),
                                 mauve_seeds=(0,), device="cpu"), progress=False)
    assert report.metrics["same"].values["question_marks"] == 1.0
    assert "question marks" in headers()
    assert ["question marks", "1.00", "1.00"] in transposed(report)[1]


def test_a_new_parameterization_is_one_registered_class(monkeypatch):
    from synthsteer.softsrv import config, prompt
    from synthsteer.softsrv.config import SoftPromptConfig

    assert set(config.PARAMETERIZATIONS) == set(prompt.PARAMETERIZATIONS)
    monkeypatch.setitem(prompt.PARAMETERIZATIONS, "scaled", None)  # the registration is undone after the test

    @prompt.register("scaled")
    class Scaled(prompt.SoftPrompt):  # a shared prompt scaled by a function of the context
        def __init__(self, cfg):
            super().__init__(cfg)
            self.theta = torch.nn.Parameter(torch.zeros(cfg.length, cfg.hidden_size))
            self.scale = torch.nn.Linear(cfg.context_dim, 1)

        def forward(self, z):
            return self.theta.unsqueeze(0) * torch.sigmoid(self.scale(z))[:, :, None]

        def _init(self, sample, g, emb_std, mlp_out_scale):
            self.theta.copy_(sample(self.config.length))

    p = prompt.SoftPrompt(SoftPromptConfig("scaled", length=3, hidden_size=8, context_dim=4))
    p.init_from_vocab(torch.randn(50, 8))
    assert isinstance(p, Scaled) and p(torch.randn(2, 4)).shape == (2, 3, 8)
    with pytest.raises(SynthsteerError, match="--parameterization nope: use one of nsp, mp, mc, scaled"):
        prompt.SoftPrompt(SoftPromptConfig("nope", length=3, hidden_size=8, context_dim=4))


def test_every_command_is_a_callable_of_the_package():
    import importlib

    for module in ("evaluation", "export", "filter", "generation", "softsrv.fit", "steer.expert"):
        importlib.import_module(f"synthsteer.{module}")  # a submodule named like a function would shadow it
    import synthsteer

    for name in ("fit_soft_prompt", "train_expert", "generate", "evaluate", "filter_run", "export_runs", "to_dataset"):
        assert callable(getattr(synthsteer, name)), name
    for name in ("FitConfig", "ExpertConfig", "GenerateConfig", "EvalConfig", "FilterConfig", "ExportConfig"):
        assert isinstance(getattr(synthsteer, name), type), name


def test_engine_names_the_decoder_and_ray_where_it_runs(capsys):
    """--engine ray (the spelling before --ray) still works, with a one-line note."""
    config = GenerateConfig(method="plain", engine="ray", workers=2)
    assert (config.engine, config.ray, config.workers) == ("transformers", True, 2)
    assert capsys.readouterr().err.strip() == ("warning: --engine ray is deprecated: use --ray (--engine names the "
                                               "decoding engine)")
    with pytest.raises(SynthsteerError, match="--workers needs --ray"):
        GenerateConfig(method="plain", workers=2)
