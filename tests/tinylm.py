"""A tiny randomly initialised llama with a real (word-level) tokenizer, saved as a local model directory, so
tests exercise the same path a production model takes (``load_base(path)``, ``load_tokenizer(path)``)."""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL = ["<pad>", "<unk>", "<s>", "</s>"]


def make_tiny_lm(path: Path, texts: list[str], seed: int = 0, hidden: int = 16, layers: int = 1,
                 vocab_size: int | None = None) -> Path:
    """Write a tiny llama + a word-level tokenizer trained on ``texts`` into ``path``; returns ``path``.
    ``vocab_size`` keeps only the most frequent words (the rest are <unk>), so a tiny model can learn quickly."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    kw = {"vocab_size": vocab_size} if vocab_size else {}
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIAL, **kw))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", bos_token="<s>",
                                   eos_token="</s>")
    fast.save_pretrained(path)
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(fast), hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=2,
                      max_position_embeddings=256, pad_token_id=0, bos_token_id=2, eos_token_id=3)
    LlamaForCausalLM(cfg).save_pretrained(path)
    return path
