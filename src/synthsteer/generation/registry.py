"""The methods `--method` offers: each declared once, beside its algorithm and options.

Adding a method is a folder (its `config.py` with a `MethodSpec` and its view, its `method.py`)
and one line here. Nothing here imports torch: `--help` lists the choices from these declarations.
"""

from __future__ import annotations

from ..baselines.config import HARD, PLAIN
from ..errors import SynthsteerError
from ..method import MethodSpec
from ..options import SeedOptions, SamplingConfig
from ..softsrv.config import SOFTSRV
from ..steer.config import STEER

METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (SOFTSRV, PLAIN, HARD, STEER)}


def method_spec(name: str) -> MethodSpec:
    if name not in METHODS:
        raise SynthsteerError(f"--method {name}: use one of {', '.join(sorted(METHODS))}")
    return METHODS[name]


def method_groups() -> tuple[type, ...]:
    """The option groups of the declared methods, in declaration order, without the groups every run
    shares (the record seed and blocks, sampling): the ones a method may ignore."""
    out: list[type] = []
    for spec in METHODS.values():
        for group in spec.groups:
            if group not in out and group not in (SeedOptions, SamplingConfig):
                out.append(group)
    return tuple(out)
