"""Model references: `builtin:SIZE`, a local Hugging Face folder, or a hub name such as `gpt2`."""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import DataError, UsageError

log = logging.getLogger(__name__)

BUILTIN_PREFIX = "builtin:"


def resolve_model(ref: str, data_root: Path | None = None, progress: bool = True) -> str:
    """A loadable path or hub name for a model reference; builds a built-in backbone if missing."""
    if ref.startswith(BUILTIN_PREFIX):
        from .backbone import SPECS, build_backbone

        size = ref[len(BUILTIN_PREFIX):]
        if size not in SPECS:
            raise UsageError(f"unknown built-in backbone '{ref}'; choose one of "
                             + ", ".join(BUILTIN_PREFIX + s for s in SPECS))
        if data_root is None:
            raise UsageError(f"--model {ref} needs a data directory to build from; pass --data-dir")
        return str(build_backbone(size, data_root, progress=progress))
    path = Path(ref).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise DataError(f"{path} is not a Hugging Face model folder (no config.json); "
                            "save one with save_pretrained() or use --model builtin:mini")
        return str(path)
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1 or ("/" in ref and path.parent.is_dir()):
        raise DataError(f"model folder {ref} does not exist; pass an existing Hugging Face folder, a hub name "
                        "(gpt2) or builtin:tiny|mini|small")
    return ref


def load_model_and_tokenizer(ref: str, trust_remote_code: bool = False, dtype=None):
    """AutoModelForCausalLM and AutoTokenizer for a resolved reference, with a clear error offline.

    Hub names are looked up in the local Hugging Face cache first; the network is tried only
    when the cache lacks them, and a machine without it fails at once instead of retrying.
    The tokenizer gets a pad token (its EOS) if it has none; padding is right-sided.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    local = Path(ref).exists() or _in_hub_cache(ref)
    if not local and not _hub_reachable():
        raise DataError(f"cannot load '{ref}': the Hugging Face hub is unreachable (offline?) and it is "
                        "not in the local cache; download it where you have internet "
                        "(AutoModelForCausalLM.from_pretrained(...).save_pretrained(DIR), same for the "
                        "tokenizer) and pass --model DIR, or use a built-in backbone: --model builtin:mini")
    kwargs = {"trust_remote_code": trust_remote_code, "local_files_only": local}
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=dtype, use_safetensors=_prefers_safetensors(ref),
                                                     **kwargs)
    except (OSError, ValueError) as e:
        where = f"the model in {ref}" if Path(ref).exists() else f"'{ref}' from the Hugging Face hub"
        raise DataError(f"could not load {where}: {str(e).splitlines()[0]}; pass a local folder saved with "
                        "save_pretrained (--model DIR) or a built-in backbone (--model builtin:mini)") from e
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    from .params import use_fast_kernels

    use_fast_kernels(model)  # GPT-2's gelu_new as one fused kernel: same numbers, ~10% of a step
    return model, tokenizer


def _in_hub_cache(name: str) -> bool:
    """Whether a hub model's config is already in the local Hugging Face cache."""
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except Exception:  # an invalid repo id is simply not cached
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub endpoint (honours HF_ENDPOINT and HF_HUB_OFFLINE)."""
    import os
    import socket
    from urllib.parse import urlparse

    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _prefers_safetensors(ref: str) -> bool | None:
    """Local folders must hold safetensors weights (no pickle); hub repos: let transformers choose."""
    path = Path(ref)
    if path.exists():
        if not any(path.glob("*.safetensors")):
            raise DataError(f"{ref} has no .safetensors weights; sftdpo loads only safetensors "
                            "(re-save with save_pretrained(safe_serialization=True))")
        return True
    return None


def single_token_id(tokenizer, word: str) -> int:
    """The id of a word that must be exactly one token, else a clear error."""
    ids = tokenizer(word, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        pieces = tokenizer.convert_ids_to_tokens(ids)
        raise DataError(f"label word {word!r} is {len(ids)} tokens {pieces} for tokenizer "
                        f"'{tokenizer.name_or_path}'; the paraphrase task needs single-token label "
                        "words: use a tokenizer where they are (GPT-2's, or a built-in backbone)")
    return ids[0]
