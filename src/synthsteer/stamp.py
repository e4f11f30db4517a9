"""`synthsteer stamp`: vouch for an artifact written by an older synthsteer.

Older prompts, experts and runs carry no marker (the proof that synthsteer wrote the directory),
and the oldest no sha256 of their weights or no hash of their LM's weights. Loading them warns;
stamping records what is missing, once the user says the artifact is theirs: the marker, the
weights' sha256 as they are now, and the LM's full fingerprint, after checking that the LM named
(or `--model`) matches everything the artifact already records.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .artifacts import MARKER, ownership, refuse_foreign, sha256_file, write_json, write_marker
from .errors import SynthsteerError
from .logs import console_settings, log
from .options import LMOptions, LogOptions, option


@dataclass(frozen=True)
class StampConfig(LMOptions, LogOptions):
    """path: the prompt, expert or run directory to stamp. model: the LM it was trained for (default:
    the name it records)."""

    path: str = option("", "A prompt, expert or run directory written by an older synthsteer.")


def artifact_kind(path: Path) -> str:
    from .steer.expert import META

    if (path / "prompt.safetensors").exists() and (path / "config.json").exists():
        return "prompt"
    if (path / META).exists():
        return "expert"
    if (path / "manifest.json").exists():
        return "run"
    raise SynthsteerError(f"{path}: not a prompt, expert or run directory")


@console_settings
def stamp(config: StampConfig) -> list[str]:
    """Record what an older artifact lacks; returns what was added (empty: nothing was missing)."""
    path = Path(config.path)
    if not config.path or not path.is_dir():
        raise SynthsteerError(f"stamp {config.path}: not a directory")
    kind = artifact_kind(path)
    state = ownership(path, kind)
    if state not in ("ours", "legacy"):
        refuse_foreign(path, kind, "stamp", "stamp")
    added = []
    if kind in ("prompt", "expert"):
        from .steer.expert import META

        meta_file, weights = (("config.json", "prompt.safetensors") if kind == "prompt"
                              else (META, "adapter_model.safetensors"))
        if kind == "prompt":
            from .softsrv.prompt import read_prompt_meta

            _, meta = read_prompt_meta(path, f"stamp {path}")
        else:
            from .steer.expert import read_expert_meta

            meta = read_expert_meta(path, f"stamp {path}")
            meta.pop("adapter")
        hashed = {"weights_sha256": weights, **({"adapter_config_sha256": "adapter_config.json"} if kind == "expert"
                                                else {})}
        for key, file in hashed.items():
            if meta.get(key):  # stamp vouches for what is whole, never for a file that no longer matches
                from .artifacts import check_weights_sha

                check_weights_sha(path, path / file, meta[key], f"stamp {path}")
            else:
                if not (path / file).is_file() or (path / file).is_symlink():
                    raise SynthsteerError(f"stamp {path}: {file} is missing or not a plain file")
                meta[key] = sha256_file(path / file)
                added.append(f"the sha256 of {file}")
        if "weights_sha256" not in meta["lm"]:
            from .lm import FINGERPRINT_KEYS, load_lm_of

            lm = load_lm_of(config, config.model or meta["lm"].get("name"))
            actual = lm.fingerprint()
            for key in FINGERPRINT_KEYS[:-1]:
                if meta["lm"].get(key) != actual.get(key):
                    raise SynthsteerError(f"stamp {path}: the LM {lm.name!r} differs from the one it records in {key} "
                                          f"({meta['lm'].get(key)} vs {actual.get(key)}); pass --model")
            meta["lm"]["weights_sha256"] = actual["weights_sha256"]
            added.append(f"the fingerprint of {lm.name}'s weights")
        if added:
            write_json(path / meta_file, meta)
    if kind == "run":
        from .runs import read_manifest, read_records

        read_manifest(path)  # a run only when its manifest and every record line read as one
        read_records(path)
    if not (path / MARKER).exists():
        write_marker(path, kind)
        added.append("synthsteer's marker")
    log.debug(f"{path} ({kind}): added {', '.join(added)}" if added else f"{path}: nothing to stamp")
    return added
