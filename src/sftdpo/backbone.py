"""Built-in backbones: a byte-level BPE tokenizer and a GPT-2 pretrained here, on allowed text only.

The pretraining corpus is the Shakespeare plays plus the questions of the Quora *train*
split; never dev/test text, never the sonnets. A backbone is cached under a hash of
everything that determines it, so the second build is instant.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import platformdirs
import torch

from .data.datadir import DataDir, load_quora
from .data.plays import read_plays
from .data.quora import split_pairs
from .errors import UsageError
from .io import tree_hash
from .schedule import cosine_lr

log = logging.getLogger(__name__)

BUILD_VERSION = 1  # bump when the build procedure changes, so caches are rebuilt
EOS = "<|endoftext|>"
CACHE_ENV = "SFTDPO_CACHE_DIR"
# Fixed task words fed to the tokenizer trainer so every label word is one token.
TOKENIZER_SEED_TEXT = 'Answer "yes" or "no": yes\nAnswer "yes" or "no": no\n'


@dataclass(frozen=True)
class BackboneSpec:
    """Architecture and pretraining budget of one built-in backbone size."""

    vocab_size: int
    """BPE vocabulary size, special token included."""
    n_layer: int
    """Transformer blocks."""
    n_embd: int
    """Model width."""
    n_head: int
    """Attention heads."""
    n_positions: int
    """Longest sequence the model accepts."""
    block_size: int
    """Pretraining sequence length."""
    batch_size: int
    """Pretraining sequences per step."""
    tokens: int
    """Pretraining token budget (steps = tokens // (batch_size * block_size))."""
    lr: float
    """Peak AdamW learning rate (linear warmup, cosine decay to 10%)."""
    warmup_steps: int
    """Linear warmup steps."""
    tokenizer_chars: int
    """Characters of corpus used to train the tokenizer (0 = all)."""
    val_fraction: float = 0.02
    """Tail fraction of each play held out for the validation loss."""
    finetune_dropout: float = 0.1
    """Dropout written into the saved config for fine-tuning (pretraining uses none)."""


SPECS: dict[str, BackboneSpec] = {
    # seconds on a laptop CPU; for tests
    "tiny": BackboneSpec(vocab_size=1024, n_layer=2, n_embd=32, n_head=2, n_positions=512,
                         block_size=64, batch_size=8, tokens=40_000, lr=3e-3, warmup_steps=5,
                         tokenizer_chars=1_500_000),
    # the quick study's model: about 10 minutes on a 2-core CPU
    "mini": BackboneSpec(vocab_size=8192, n_layer=4, n_embd=256, n_head=4, n_positions=512,
                         block_size=256, batch_size=8, tokens=1_500_000, lr=2e-3, warmup_steps=30,
                         tokenizer_chars=0),
    # GPT-2 124M shape; for a GPU
    "small": BackboneSpec(vocab_size=50257, n_layer=12, n_embd=768, n_head=12, n_positions=1024,
                          block_size=512, batch_size=32, tokens=200_000_000, lr=6e-4, warmup_steps=500,
                          tokenizer_chars=0),
}


def cache_root() -> Path:
    """Where built backbones live: $SFTDPO_CACHE_DIR or the per-user cache dir."""
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("sftdpo")) / "backbones"


def file_fingerprint(paths: list[Path]) -> str:
    """sha256 over the names and bytes of the given files."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def build_key(size: str, data: DataDir, seed: int) -> str:
    """Hash of everything that determines a backbone: spec, corpus files, seed, build version."""
    spec = asdict(SPECS[size])
    files = data.quora_files() + sorted(data.plays_dir.glob("*.txt"))
    return tree_hash({"spec": spec, "seed": seed, "v": BUILD_VERSION, "data": file_fingerprint(files)})


@dataclass(frozen=True)
class Corpus:
    """Pretraining documents and the held-out plays text for the validation loss."""

    train_docs: list[str]
    val_text: str
    description: str


def pretraining_corpus(data: DataDir, val_fraction: float) -> Corpus:
    """The plays (minus a held-out tail of each) and the Quora train-split questions."""
    train_docs, val_parts = [], []
    plays = read_plays(data.plays_dir)
    for _, text in plays:
        cut = int(len(text) * (1 - val_fraction))
        cut = text.rfind("\n", 0, cut) + 1 or cut
        train_docs.append(text[:cut])
        val_parts.append(text[cut:])
    pairs, _ = load_quora(data)
    train_pairs = split_pairs(pairs)["train"]
    questions = "\n".join(f"{p.question1}\n{p.question2}" for p in train_pairs)
    train_docs.append(questions)
    desc = (f"{len(plays)} Shakespeare plays/poems ({1 - val_fraction:.0%} of each) and the "
            f"{2 * len(train_pairs)} questions of the Quora train split ({len(train_pairs)} pairs)")
    return Corpus(train_docs, "\n".join(val_parts), desc)


def train_tokenizer(docs: list[str], vocab_size: int, max_chars: int = 0):
    """Byte-level BPE (GPT-2 style) trained on the docs, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text_iter = _take_chars(docs, max_chars) if max_chars else docs
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([TOKENIZER_SEED_TEXT * 200, *text_iter], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, unk_token=EOS,
                                   model_max_length=10**6, clean_up_tokenization_spaces=False)


def _take_chars(docs: list[str], max_chars: int) -> list[str]:
    """An even sample of the docs: a slice of each, max_chars in total."""
    per_doc = max(1, max_chars // len(docs))
    return [d[:per_doc] for d in docs]


def encode_docs(tokenizer, docs: list[str]) -> torch.Tensor:
    """All docs as one 1-D id stream, each doc followed by EOS."""
    ids: list[int] = []
    for d in docs:
        ids.extend(tokenizer(d, add_special_tokens=False)["input_ids"])
        ids.append(tokenizer.eos_token_id)
    return torch.tensor(ids, dtype=torch.long)


@torch.no_grad()
def stream_loss(model, ids: torch.Tensor, block_size: int, batch_size: int = 16) -> float:
    """Mean next-token loss over consecutive non-overlapping blocks of an id stream."""
    model.eval()
    n_blocks = (len(ids) - 1) // block_size
    blocks = ids[: n_blocks * block_size + 1]
    total, count = 0.0, 0
    for start in range(0, n_blocks, batch_size):
        rows = range(start, min(n_blocks, start + batch_size))
        x = torch.stack([blocks[r * block_size:(r + 1) * block_size] for r in rows])
        y = torch.stack([blocks[r * block_size + 1:(r + 1) * block_size + 1] for r in rows])
        logits = model(input_ids=x).logits
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="sum").item()
        count += y.numel()
    return total / max(1, count)


def pretrain(model, ids: torch.Tensor, spec: BackboneSpec, seed: int, progress: bool = True) -> dict:
    """Next-token pretraining on random blocks of the id stream; returns step/token counts."""
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(seed)
    steps = max(1, spec.tokens // (spec.batch_size * spec.block_size))
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=0.1)
    model.train()
    start, losses = time.perf_counter(), []
    bar = tqdm(range(steps), desc="pretrain", disable=not progress, dynamic_ncols=True)
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = cosine_lr(step, steps, spec.lr, spec.warmup_steps)
        starts = torch.randint(0, len(ids) - spec.block_size - 1, (spec.batch_size,), generator=gen)
        x = torch.stack([ids[s:s + spec.block_size] for s in starts])
        y = torch.stack([ids[s + 1:s + spec.block_size + 1] for s in starts])
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
        elapsed = time.perf_counter() - start
        bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}",
                        tok_s=f"{(step + 1) * x.numel() / elapsed:.0f}")
    return {"steps": steps, "tokens_seen": steps * spec.batch_size * spec.block_size,
            "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
            "pretrain_seconds": round(time.perf_counter() - start, 1)}


def build_backbone(size: str, data_root: Path, out: Path | None = None, seed: int = 0,
                   progress: bool = True, force: bool = False) -> Path:
    """Build (or reuse from cache) the backbone of the given size; returns its folder."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if size not in SPECS:
        raise UsageError(f"unknown backbone size '{size}'; choose one of {', '.join(SPECS)}")
    spec, data = SPECS[size], DataDir(Path(data_root))
    key = build_key(size, data, seed)
    target = out or cache_root() / f"{size}-{key}"
    if target.exists() and any(target.iterdir()) and not (target / "card.json").exists():
        raise UsageError(f"{target} exists and is not an sftdpo backbone folder; pass a new or empty --out")
    if (target / "card.json").exists() and not force:
        card = json.loads((target / "card.json").read_text())
        if card.get("build_key") == key:
            log.info("backbone %s already built at %s", size, target)
            return target
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    corpus = pretraining_corpus(data, spec.val_fraction)
    tokenizer = train_tokenizer(corpus.train_docs, spec.vocab_size, spec.tokenizer_chars)
    ids, val_ids = encode_docs(tokenizer, corpus.train_docs), encode_docs(tokenizer, [corpus.val_text])
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=spec.n_layer, n_embd=spec.n_embd,
                        n_head=spec.n_head, n_positions=spec.n_positions, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=tokenizer.eos_token_id,
                        eos_token_id=tokenizer.eos_token_id)
    model = GPT2LMHeadModel(config)
    stats = pretrain(model, ids, spec, seed, progress)
    val_loss = stream_loss(model, val_ids, spec.block_size)
    for name in ("resid_pdrop", "embd_pdrop", "attn_pdrop"):
        setattr(model.config, name, spec.finetune_dropout)
    card = {"size": size, "build_key": key, "seed": seed, "spec": asdict(spec),
            "parameters": sum(p.numel() for p in model.parameters()), "corpus": corpus.description,
            "corpus_tokens": len(ids), "val_tokens": len(val_ids), "val_loss": round(val_loss, 4),
            "val_perplexity": round(math.exp(val_loss), 2), **stats,
            "build_seconds": round(time.perf_counter() - t0, 1)}
    _save_atomic(model, tokenizer, card, target)
    log.info("built backbone %s: val loss %.3f in %.0fs -> %s", size, val_loss, card["build_seconds"], target)
    return target


def _save_atomic(model, tokenizer, card: dict, target: Path) -> None:
    """Write model, tokenizer and card to a temp folder beside target, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    (tmp / "README.md").write_text(_card_markdown(card))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)


def _card_markdown(card: dict) -> str:
    spec = card["spec"]
    return (f"# sftdpo built-in backbone `{card['size']}`\n\n"
            f"GPT-2 architecture, {spec['n_layer']} layers x {spec['n_embd']} wide, {spec['n_head']} heads, "
            f"{card['parameters']:,} parameters, byte-level BPE vocabulary of {spec['vocab_size']}.\n\n"
            f"- corpus: {card['corpus']} ({card['corpus_tokens']:,} tokens)\n"
            f"- pretraining: {card['steps']} steps, {card['tokens_seen']:,} tokens seen, seed {card['seed']}\n"
            f"- validation loss on held-out plays text: {card['val_loss']} (perplexity {card['val_perplexity']})\n"
            f"- build time: {card['build_seconds']} s\n"
            f"- pretrained without dropout; the saved config sets dropout {spec['finetune_dropout']} for fine-tuning\n")
