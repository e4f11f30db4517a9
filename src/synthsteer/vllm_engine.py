"""`--engine vllm`: plain, hard and SoftSRV sampling through vLLM's continuous batching.

The method builds the same `Request`s it builds for the lockstep engine; this engine maps each one
to a vLLM prompt and its `SamplingParams`, and vLLM's outputs back to `Result`s:
- a prefix of token ids becomes a `TokensPrompt` (the method applied the chat template already);
  one that starts with soft-prompt embeddings (SoftSRV) an `EmbedsPrompt`: P(z), computed by the
  method in this process, then any token ids after it (a record's forced prefix) embedded with the
  LM's own input embeddings, which is what vLLM's embedding layer would give them;
- the request's key becomes `SamplingParams.seed`: vLLM draws each seeded request's noise from a
  generator of its own, so a record depends on (seed, index) only, whatever the batch, the resume or
  the number of workers; vLLM's noise is not the lockstep engine's, so its records differ from that
  engine's for the same key, and its name and version in the settings keep the two runs apart;
- a record format's grammar becomes vLLM's structured outputs over the same regex (xgrammar);
- `logprobs=0` returns each chosen token's log-prob under the LM's raw distribution (before
  temperature, filters and grammar), summed into `Result.logprob`.

Only single-branch methods run here: STEER combines several branches per step (docs/design.md).
vLLM is imported when an engine is built, never by `import synthsteer`.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from .decoder import Prefix, prefix_length
from .engine import Request, Result, Step
from .errors import SynthsteerError, first_line
from .lm import DTYPE_NAMES, resolve_model
from .logs import log
from .options import SamplingConfig

if TYPE_CHECKING:
    from .lm import LM
    from .method import Method

INSTALL = ("pip install 'synthsteer[vllm]' on a GPU machine, or the CPU build on a CPU one: make setup-vllm "
           "(docs/scaling.md)")
DEFAULT_MAX_MODEL_LEN = 4096  # positions reserved per sequence unless --max-model-len says otherwise
CPU_PREFILL_TOKENS = 4096  # prompt tokens one CPU engine step may prefill (whole prompts only, see `llm`)
CPU_KV_CACHE_GIB = "2"  # VLLM_CPU_KVCACHE_SPACE unless the environment sets it (vLLM's own default takes GBs more)


def vllm_version() -> str:
    """`0.32.0`, or `0.32.0 (vllm-cpu)` for a build packaged under another name: its kernels differ."""
    import vllm

    for dist in ("vllm", "vllm-cpu"):
        try:
            importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
        return vllm.__version__ if dist == "vllm" else f"{vllm.__version__} ({dist})"
    return vllm.__version__


def import_vllm():
    """vLLM, or one line saying how to install it."""
    # vLLM configures its logging on import: a run shows its own progress and vLLM's errors (VLLM_LOGGING_LEVEL=INFO for all of it)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
    try:
        import vllm
    except ImportError as e:
        raise SynthsteerError(f"--engine vllm: vLLM is not installed ({e.msg}); {INSTALL}") from None
    except Exception as e:  # installed beside a torchvision built for another torch, say
        raise SynthsteerError(f"--engine vllm: vLLM does not import ({first_line(e)}); {INSTALL}") from None
    return vllm


# ---------------------------------------------------------------- requests in, results out (pure)


def vllm_prompt(prefix: Prefix, embed: torch.nn.Module) -> dict:
    """The vLLM prompt of one branch prefix: its token ids, or (soft-prompt embeddings first) its
    embeddings [t, d] with the ids after them embedded by `embed`, the LM's input embeddings."""
    if prefix.embeds is None:
        return {"prompt_token_ids": list(prefix.ids or ())}
    parts = [prefix.embeds.detach().to("cpu", embed.weight.dtype)]
    if prefix.ids:
        with torch.no_grad():
            parts.append(embed(torch.tensor(prefix.ids, device=embed.weight.device)).to("cpu"))
    return {"prompt_embeds": torch.cat(parts)}


def sampling_params(vllm, key: int, sampling: SamplingConfig, stop_ids: set[int], regex: str | None):
    """One request's `SamplingParams`: its key as the seed, our sampling settings, the stop ids, the
    chosen tokens' log-probs, and the record grammar's regex (structured outputs)."""
    structured = None
    if regex is not None:
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(regex=regex)
    # ignore_eos: a sample ends at `stop_ids` exactly, as on the lockstep engine (they hold EOS in a run)
    return vllm.SamplingParams(seed=key, temperature=sampling.temperature, top_k=sampling.top_k, top_p=sampling.top_p,
                               max_tokens=sampling.max_new_tokens, stop_token_ids=sorted(stop_ids), ignore_eos=True,
                               logprobs=0, detokenize=False, structured_outputs=structured)


def to_result(completion, stop_ids: set[int]) -> Result:
    """A vLLM `CompletionOutput` as a `Result`: the tokens without the stop token that ended them,
    "eos" or "length", and the kept tokens' summed log-prob."""
    tokens = list(completion.token_ids)
    finished = completion.finish_reason == "stop"
    if finished and tokens and tokens[-1] in stop_ids:
        tokens = tokens[:-1]
    logprobs = completion.logprobs or []
    logprob = float(sum(logprobs[i][t].logprob for i, t in enumerate(tokens) if i < len(logprobs)))
    return Result(tokens, "eos" if finished else "length", logprob)


@contextlib.contextmanager
def tcmalloc_preloaded(cpu: bool):
    """On a CPU, vLLM's processes started inside this block preload the system's tcmalloc when there is
    one (Debian: libtcmalloc-minimal4) and LD_PRELOAD names none: vLLM asks for it (it preloads one
    it bundles, which vllm-cpu 0.32 lacks) and it is 6% faster here. This process's LD_PRELOAD is put
    back afterwards, so nothing else it starts (the pass@1 sandbox, say) inherits it."""
    import ctypes.util

    before = os.environ.get("LD_PRELOAD")
    name = ctypes.util.find_library("tcmalloc_minimal") if cpu and "tcmalloc" not in (before or "") else None
    if name is None:
        yield
        return
    os.environ["LD_PRELOAD"] = f"{name}:{before}" if before else name
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("LD_PRELOAD", None)
        else:
            os.environ["LD_PRELOAD"] = before


# ---------------------------------------------------------------- the engine


@dataclass(frozen=True)
class VLLMSettings:
    """What the engine is started with: the LM's weights and how vLLM holds them."""

    model: str  # what vLLM loads: a hub id or a local directory (a GGUF converted once, `lm.resolve_model`)
    revision: str | None
    dtype: str
    max_model_len: int
    tensor_parallel_size: int
    gpu_memory_utilization: float
    trust_remote_code: bool
    prefix_caching: bool = True  # vLLM's reuse of a shared prompt prefix's KV cache (off: bench/bench_vllm.py)


class VLLMEngine:
    """Single-branch requests through one vLLM `LLM`, started on first use (15-25 s for SmolLM2 on a
    2-core CPU), with prompt embeddings enabled only when the requests carry them (SoftSRV)."""

    name = "vllm"

    def __init__(self, lm: LM, settings: VLLMSettings):
        self.vllm = import_vllm()
        self.version = vllm_version()
        self.lm, self.settings = lm, settings
        self.embed = lm.model.get_input_embeddings()
        self._llm, self._embeds = None, None

    @classmethod
    def build(cls, method: Method, options) -> VLLMEngine:
        lm = method.lm
        context = lm.context_length or DEFAULT_MAX_MODEL_LEN
        max_len = options.max_model_len or min(context, DEFAULT_MAX_MODEL_LEN)
        if max_len > context:
            raise SynthsteerError(f"--max-model-len {max_len}: more than the context of {lm.name} ({context} positions)")
        path, _ = resolve_model(lm.name, progress=False)
        dtype = DTYPE_NAMES[lm.model.dtype]  # the driver's copy is loaded in the dtype to decode in
        return cls(lm, VLLMSettings(path, options.revision if lm.name == options.model else None, dtype, max_len,
                                    options.tensor_parallel_size, options.gpu_memory_utilization,
                                    options.trust_remote_code))

    def llm(self, embeds: bool):
        """The vLLM engine, started on the first call."""
        if self._llm is not None:
            if embeds and not self._embeds:
                raise RuntimeError("prompt embeddings after a start without them: a method mixes prefix kinds")
            return self._llm
        from vllm.platforms import current_platform

        s, cpu = self.settings, current_platform.is_cpu()
        if cpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", CPU_KV_CACHE_GIB)
            if s.tensor_parallel_size == 1 and torch.get_num_threads() >= len(os.sched_getaffinity(0)):
                # vLLM's own binding keeps a core for its scheduler, half of a 2-core machine (1.6x slower
                # here); a process meant to use every core gives them all to the model, as torch would
                os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(map(str, sorted(os.sched_getaffinity(0)))))
        kwargs = dict(model=s.model, tokenizer=s.model, revision=s.revision, dtype=s.dtype,
                      max_model_len=s.max_model_len, tensor_parallel_size=s.tensor_parallel_size,
                      trust_remote_code=s.trust_remote_code, load_format="safetensors", seed=0,
                      generation_config="vllm",  # our sampling settings, not the model's generation_config.json
                      logprobs_mode="raw_logprobs", enable_prompt_embeds=embeds, enable_prefix_caching=s.prefix_caching,
                      structured_outputs_config={"backend": "xgrammar"},
                      enforce_eager=cpu)  # compiled mode and CUDA graphs pay off on a GPU only
        if cpu:
            # vLLM 0.32's CPU build dies ("CPU Generator does not use offset") when a seeded request's
            # prefill is split over steps: each prompt is prefilled whole instead
            kwargs.update(enable_chunked_prefill=False, max_num_batched_tokens=max(s.max_model_len, CPU_PREFILL_TOKENS))
        else:
            kwargs["gpu_memory_utilization"] = s.gpu_memory_utilization
        if s.tensor_parallel_size > 1:
            # one process per GPU on this node, also inside a Ray worker holding those GPUs (vLLM's Ray
            # executor would ask the cluster for GPUs of its own)
            kwargs["distributed_executor_backend"] = "mp"
        t0 = time.time()
        try:
            with tcmalloc_preloaded(cpu):
                self._llm = self.vllm.LLM(**kwargs)
        except Exception as e:  # vLLM raises RuntimeError, ValueError, torch's OOM... from its engine start
            raise SynthsteerError(f"--engine vllm: the vLLM engine did not start for {self.lm.name} "
                                  f"({first_line(e)})") from None
        self._embeds = embeds
        log.info(f"vLLM {self.version} engine started in {time.time() - t0:.0f} s ({s.dtype}, "
                 f"max-model-len {s.max_model_len}{', prompt embeddings' if embeds else ''})")
        return self._llm

    def run(self, requests: list[Request], step: Step, sampling: SamplingConfig, stop_ids: set[int],
            grammar=None) -> list[Result]:
        if step.combine is not None or len(step.branches) != 1:
            raise ValueError(f"the vLLM engine decodes one branch per sample, not {list(step.branches)}")
        branch = step.branches[0]
        prefixes = [r.branches[branch] for r in requests]
        longest = max(prefix_length(p) for p in prefixes)
        if longest + sampling.max_new_tokens > self.settings.max_model_len:
            raise SynthsteerError(f"--max-model-len {self.settings.max_model_len}: a prompt of {longest} tokens + "
                                  f"--max-new-tokens {sampling.max_new_tokens} do not fit; raise it (up to the LM's "
                                  f"context, {self.lm.context_length or 'unknown'})")
        llm = self.llm(embeds=any(p.embeds is not None for p in prefixes))
        prompts = [vllm_prompt(p, self.embed) for p in prefixes]
        regex = grammar.regex if grammar is not None else None
        params = [sampling_params(self.vllm, r.key, sampling, stop_ids, regex) for r in requests]
        outputs = llm.generate(prompts, params, use_tqdm=False)
        return [to_result(o.outputs[0], stop_ids) for o in outputs]

    def close(self) -> None:
        """Stop vLLM's engine process (another engine may start in this process afterwards)."""
        if self._llm is None:
            return
        llm, self._llm = self._llm, None
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()
        del llm
