"""Tiny, real BERT encoders built locally, for the encoder task types (classification,
regression, NER, embedding) in tests and demos: a trained WordPiece tokenizer with offsets, random
weights, saved as Hugging Face model directories (``save_pretrained``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    BertForTokenClassification,
    BertModel,
    PreTrainedTokenizerFast,
)

from enginehouse.demo.tiny_models import _corpus

BERT_SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
Head = Literal["none", "sequence-classification", "token-classification"]


def build_tiny_bert_tokenizer(out_dir: str | Path, vocab_size: int = 800) -> PreTrainedTokenizerFast:
    """A lower-casing WordPiece tokenizer like BERT's (with character offsets), trained here."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=BERT_SPECIAL_TOKENS,
                                        show_progress=False)
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512,
    )
    fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_bert(
    out_dir: str | Path,
    *,
    head: Head = "none",
    labels: list[str] | None = None,
    problem_type: str | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int = 128,
    seed: int = 0,
) -> Path:
    """Save a random BERT (with its tokenizer) into ``out_dir``.

    ``head`` picks the architecture: a bare encoder, a sequence-classification head (``labels``;
    regression with ``problem_type="regression"`` and one label) or a token-classification head
    (``labels`` as BIO tags, e.g. ``["O", "B-PER", "I-PER"]``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_bert_tokenizer(out)
    labels = labels or []
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=num_layers,
        num_attention_heads=num_heads, intermediate_size=intermediate_size,
        max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
        initializer_range=0.2,
    )
    if labels:
        config.num_labels = len(labels)
        config.id2label = dict(enumerate(labels))
        config.label2id = {label: i for i, label in enumerate(labels)}
    if problem_type:
        config.problem_type = problem_type
    architecture = {
        "none": BertModel,
        "sequence-classification": BertForSequenceClassification,
        "token-classification": BertForTokenClassification,
    }[head]
    torch.manual_seed(seed)
    model = architecture(config).to(torch.float32).eval()
    model.save_pretrained(str(out))
    return out
