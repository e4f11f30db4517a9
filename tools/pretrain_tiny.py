"""The seeded recipe that produced the bundled tiny LM (`tiny`): a maintainer's tool, not a command
users need, so it lives here rather than in the `synthsteer` CLI.

    python tools/pretrain_tiny.py --corpus ../shared/data/text_corpus/gutenberg --out src/synthsteer/models/tiny

The corpus is mostly 19th-century prose (a directory of Gutenberg .txt files) mixed with the
*training* splits of the bundled task datasets, so the LM knows those domains while its
unconditioned samples are mostly prose: steering has something to do. Held-out splits are only
ever used to measure perplexity.

The model is a plain Llama (`LlamaForCausalLM`) with a byte-level BPE tokenizer trained on the same
documents; the output directory loads with `AutoModelForCausalLM.from_pretrained`.
"""

from __future__ import annotations

import math
import random
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from synthsteer.artifacts import atomic_dir, read_json, sha256_file, write_json
from synthsteer.data import DataSpec, load_records
from synthsteer.errors import SynthsteerError
from synthsteer.options import Options, flag, option

if TYPE_CHECKING:
    import torch

EOS = "<|endoftext|>"
PAD = "<|pad|>"

# How each task's rows become pretraining documents, and which split is held out for perplexity.
DOMAINS: dict[str, tuple[str, str, str]] = {
    "gsm8k": ("{question}\n{answer}", "train", "test"),
    "mbpp": ("{text}\n{code}", "train", "test"),
    "boolq": ("{title}\n{passage}\nQuestion: {question}?\nAnswer: {label}", "train", "heldout"),
    "commonsenseqa": ("{question}\n{choices}\nAnswer: {answer}", "train", "dev"),
    "jigsaw": ("{comment_text}", "train", "heldout"),
}


@dataclass(frozen=True)
class PretrainConfig(Options):
    corpus: str = option(None, "Directory of .txt books (e.g. ../shared/data/text_corpus/gutenberg).")
    out: str = option(None, "Output directory (the model, its tokenizer and model card).")
    datasets: tuple[str, ...] = option(tuple(DOMAINS), "Bundled datasets whose training splits join the corpus "
                                                       "(repeat or comma-separate).")
    vocab_size: int = option(8192, "BPE vocabulary size.", count=True)
    hidden_size: int = option(256, "Model width.", count=True)
    num_layers: int = option(4, "Transformer layers.", count=True)
    num_heads: int = option(4, "Attention heads.", count=True)
    intermediate_size: int = option(688, "MLP width.", count=True)
    seq_len: int = option(256, "Tokens per training window.", count=True)
    batch_size: int = option(16, "Windows per step.", count=True)
    steps: int = option(1600, "Optimizer steps.", count=True)
    lr: float = option(2e-3, "Peak learning rate (AdamW).", gt=0)
    warmup: int = option(100, "Linear warmup steps.", ge=0)
    weight_decay: float = option(0.1, "AdamW weight decay.", ge=0)
    heldout_fraction: float = option(0.02, "Share of each book held out for perplexity.", ge=0, lt=1)
    eval_docs: int = option(200, "Held-out documents per domain for perplexity.", count=True)
    save_every: int = option(200, "Steps between checkpoints.", count=True)
    seed: int = option(0, "Seed of the initialisation and the batches.")

    def __post_init__(self):
        for name in ("corpus", "out"):
            if not getattr(self, name):
                raise SynthsteerError(f"{flag(name)} is required")
        super().__post_init__()


# ---------------------------------------------------------------- corpus

_MARKER = re.compile(r"^\*\*\* ?(START|END) OF (THE|THIS) PROJECT GUTENBERG.*$", re.M)
_ILLUSTRATION = re.compile(r"\[Illustration[^\]]*\]")


def clean_book(text: str) -> list[str]:
    """A Gutenberg body as unwrapped paragraphs, without licence markers or illustration tags."""
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    text = _ILLUSTRATION.sub("", _MARKER.sub("", text))
    paragraphs = (" ".join(p.split()) for p in re.split(r"\n\s*\n", text))
    return [p for p in paragraphs if p]


def book_documents(paragraphs: list[str], max_chars: int = 1500) -> list[str]:
    """Consecutive paragraphs grouped into documents of about `max_chars` characters."""
    docs, cur = [], []
    for p in paragraphs:
        cur.append(p)
        if sum(len(c) for c in cur) >= max_chars:
            docs.append("\n\n".join(cur))
            cur = []
    if cur:
        docs.append("\n\n".join(cur))
    return docs


def gather(config: PretrainConfig):
    """Training documents (shuffled), held-out documents per domain, and the corpus file list."""
    corpus = Path(config.corpus)
    files = sorted(corpus.rglob("*.txt"))
    if not files:
        raise SynthsteerError(f"--corpus {corpus}: no .txt files found")
    train: list[tuple[str, str]] = []
    heldout: dict[str, list[str]] = {"prose": []}
    for f in files:
        docs = book_documents(clean_book(f.read_text(encoding="utf-8")))
        cut = len(docs) - max(1, int(len(docs) * config.heldout_fraction))
        train += [("prose", d) for d in docs[:cut]]
        heldout["prose"] += docs[cut:]
    for name in config.datasets:
        if name not in DOMAINS:
            raise SynthsteerError(f"--datasets: unknown dataset {name!r}; known: {', '.join(DOMAINS)}")
        template, train_split, held_split = DOMAINS[name]
        train += [(name, r.text) for r in load_records(DataSpec(f"builtin:{name}", template=template, split=train_split))]
        heldout[name] = [r.text for r in load_records(DataSpec(f"builtin:{name}", template=template, split=held_split))]
    random.Random(config.seed).shuffle(train)
    return train, heldout, files


def train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=[EOS, PAD],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=PAD,
                                   unk_token=None, model_max_length=1024)


def build_model(config: PretrainConfig, tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(config.seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers, num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads, max_position_embeddings=1024, tie_word_embeddings=True,
        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg)


# ---------------------------------------------------------------- training


def windows(stream: torch.Tensor, step: int, config: PretrainConfig) -> torch.Tensor:
    """The batch for `step`: random windows of the token stream, drawn from (seed, step) alone so a
    resumed run sees exactly the batches an uninterrupted one would."""
    import torch

    g = torch.Generator().manual_seed(config.seed * 1_000_003 + step)
    starts = torch.randint(0, len(stream) - config.seq_len - 1, (config.batch_size,), generator=g)
    return torch.stack([stream[s: s + config.seq_len + 1] for s in starts.tolist()])


def heldout_perplexity(model, tokenizer, docs: list[str], seq_len: int, limit: int) -> float:
    """exp(mean NLL per token) over documents, each preceded by EOS as in training and followed by EOS."""
    import torch

    model.eval()
    nll, count = 0.0, 0
    with torch.no_grad():
        for doc in docs[:limit]:
            ids = [tokenizer.eos_token_id] + tokenizer.encode(doc)[: seq_len - 1] + [tokenizer.eos_token_id]
            x = torch.tensor([ids])
            out = model(input_ids=x, labels=x)
            n = len(ids) - 1
            nll += out.loss.item() * n
            count += n
    model.train()
    return math.exp(nll / count)


def pretrain(config: PretrainConfig, *, resume: bool = False, progress: bool = True) -> Path:
    """Train the tiny LM from scratch and write it, with its tokenizer and model card, to `config.out`."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoTokenizer, LlamaForCausalLM

    from synthsteer.training import load_optimizer, lr_at, save_optimizer

    out = Path(config.out)
    state_dir = out.parent / (out.name + ".train_state")
    torch.manual_seed(config.seed)
    train, heldout, files = gather(config)

    if resume and (state_dir / "state.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(state_dir)
        model = LlamaForCausalLM.from_pretrained(state_dir, dtype=torch.float32)
        start = read_json(state_dir / "state.json")["step"]
    else:
        tokenizer = train_tokenizer([t for _, t in train], config.vocab_size)
        model = build_model(config, tokenizer)
        start = 0

    eos = tokenizer.eos_token_id
    encoded = tokenizer([t for _, t in train], add_special_tokens=False)["input_ids"]
    token_counts: dict[str, int] = {}
    for (domain, _), ids in zip(train, encoded):
        token_counts[domain] = token_counts.get(domain, 0) + len(ids) + 1
    stream = torch.tensor([tok for ids in encoded for tok in (eos, *ids)], dtype=torch.long)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=config.lr, betas=(0.9, 0.95))
    if start:
        load_optimizer(opt, state_dir / "optimizer.safetensors")

    model.train()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc="pretrain", disable=not progress)
    t0, seen, loss_ema = time.time(), 0, None
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, lr=config.lr, warmup=config.warmup, total=config.steps)
        batch = windows(stream, step, config)
        loss = model(input_ids=batch, labels=batch).loss
        if not torch.isfinite(loss):
            raise SynthsteerError(f"pretrain: loss became {loss.item()} at step {step}; lower --lr")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        seen += batch.numel()
        loss_ema = loss.item() if loss_ema is None else 0.98 * loss_ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{loss_ema:.3f}", tok_s=f"{seen / (time.time() - t0):.0f}")
        if (step + 1) % config.save_every == 0 and step + 1 < config.steps:
            with atomic_dir(state_dir) as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                save_optimizer(opt, tmp / "optimizer.safetensors")
                write_json(tmp / "state.json", {"step": step + 1, "config": asdict(config)})

    model.eval()
    ppl = {d: heldout_perplexity(model, tokenizer, docs, config.seq_len, config.eval_docs)
           for d, docs in heldout.items()}
    card = {
        "config": asdict(config),
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_tokens_by_domain": token_counts,
        "tokens_seen": config.steps * config.batch_size * config.seq_len,
        "heldout_perplexity": ppl,
        "final_train_loss_ema": loss_ema,
        "corpus_files": {str(f.relative_to(config.corpus)): sha256_file(f) for f in files},
        "seconds": round(time.time() - t0, 1),
    }
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "pretrain.json", card)
        (tmp / "README.md").write_text(model_card(card), encoding="utf-8")
    import shutil

    shutil.rmtree(state_dir, ignore_errors=True)
    return out


def model_card(card: dict) -> str:
    c = card["config"]
    total = sum(card["train_tokens_by_domain"].values())
    rows = "\n".join(f"| {d} | {n:,} | {100 * n / total:.1f}% |" for d, n in card["train_tokens_by_domain"].items())
    ppl = "\n".join(f"| {d} | {p:.2f} |" for d, p in card["heldout_perplexity"].items())
    files = "\n".join(f"| `{f}` | `{h}` |" for f, h in card["corpus_files"].items())
    return f"""# tiny: synthsteer's bundled LM

A {card['parameters'] / 1e6:.2f}M-parameter Llama-architecture causal LM ({c['num_layers']} layers, width
{c['hidden_size']}, {c['num_heads']} heads, tied embeddings) with its own byte-level BPE tokenizer
({c['vocab_size']} tokens), made by `tools/pretrain_tiny.py` (seed {c['seed']}). It exists so that
synthsteer's methods can be run and tested on a 2-core CPU with no network; it is not a useful LM.

Loads with `AutoModelForCausalLM.from_pretrained` and `AutoTokenizer.from_pretrained` on this directory.
Documents are separated by `<|endoftext|>`, which is also BOS and EOS.

## Training
{c['steps']} steps of {c['batch_size']} x {c['seq_len']} tokens ({card['tokens_seen']:,} tokens seen), AdamW lr
{c['lr']} (warmup {c['warmup']}, cosine to 10%), weight decay {c['weight_decay']}, gradient clip 1.0,
in {card['seconds'] / 60:.1f} minutes on the CPU. Final training loss (EMA): {card['final_train_loss_ema']:.3f}.

Training documents (tokens): Gutenberg prose plus the *training* splits of the bundled datasets.
Held-out splits (gsm8k test, mbpp test, boolq heldout, commonsenseqa dev, jigsaw heldout, and the last
{100 * c['heldout_fraction']:.0f}% of each book) were never trained on.

| domain | train tokens | share |
|---|---|---|
{rows}

## Held-out perplexity (first {c['eval_docs']} documents per domain)
| domain | perplexity |
|---|---|
{ppl}

## Corpus files
| file | sha256 |
|---|---|
{files}
"""


def main(argv: list[str] | None = None) -> None:
    """The recipe's command line, generated from PretrainConfig like every synthsteer command's."""
    import typer

    from synthsteer.cli import _bool_param, _config_command, run

    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None)

    @app.command()
    @_config_command(PretrainConfig, [_bool_param("resume", "Continue from OUT.train_state.")])
    def pretrain_tiny(config: PretrainConfig, resume: bool = False):
        """Pretrain the tiny LM from a corpus directory and the bundled datasets' training splits."""
        typer.echo(f"model written to {pretrain(config, resume=resume)}")

    run(app, argv)


if __name__ == "__main__":
    main()
