"""`synthsteer generate`: the methods' registry, the settings, and the run loop every method goes through.

Imports point one way, top to bottom:
    registry      the declared methods (`MethodSpec`s, torch-free), `--method`'s choices
    config        GenerateConfig: the shared option groups + every group a declared method reads
    loader        the parts a method is built from (LM, expert, soft prompt, examples), loaded once
    fields        records of several fields: their format, given fields, closed sets, grammar bounds
    generator     BlockGenerator: one process's method + engine; record indices in, records out
    run           blocks of records handed to the workers (this process, or Ray's) and written
    ray_workers   the Ray workers (`--ray`)
(It is `generation`, not `generate`: a submodule named like the `synthsteer.generate` function
would shadow it.)
"""

from importlib import import_module

_EXPORTS = {"METHODS": ".registry", "method_spec": ".registry", "GenerateConfig": ".config",
            "build_method": ".loader", "BlockGenerator": ".generator", "record_id": ".generator",
            "generate": ".run", "plan_blocks": ".run"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
