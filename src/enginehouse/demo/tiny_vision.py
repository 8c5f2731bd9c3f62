"""Tiny, real vision models built locally with random weights, for the image task types in tests
and demos: a CLIP (``clip-embedding``, ``clip-classification``) and a DETR with a small ResNet
backbone (``image-detection``), saved as ``save_pretrained`` directories with their
tokenizer / image processor. Nothing is downloaded: no timm, no pretrained backbone."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    DetrConfig,
    DetrForObjectDetection,
    DetrImageProcessor,
    ResNetConfig,
)

from enginehouse.demo.tiny_encoders import build_tiny_bert_tokenizer

# Images are resized and cropped to this square; patches of 8 pixels make a 4×4 grid.
CLIP_IMAGE_SIZE = 32
CLIP_PATCH_SIZE = 8


def build_tiny_clip(out_dir: str | Path, *, seed: int = 0, labels: list[str] | None = None) -> Path:
    """A CLIP with a trained WordPiece tokenizer and a 32×32 image processor. ``labels`` become
    the config's ``id2label`` (the labels a zero-shot checkpoint carries)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_bert_tokenizer(out)
    torch.manual_seed(seed)
    text = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, max_position_embeddings=64,
                # The pooled text state is read at the end token: [SEP] closes every encoded text.
                eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
                bos_token_id=tokenizer.cls_token_id)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=CLIP_IMAGE_SIZE, patch_size=CLIP_PATCH_SIZE)
    extra = {}
    if labels:
        extra = {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16, **extra)
    CLIPModel(config).eval().save_pretrained(str(out))
    CLIPImageProcessor(size={"shortest_edge": CLIP_IMAGE_SIZE},
                       crop_size={"height": CLIP_IMAGE_SIZE, "width": CLIP_IMAGE_SIZE}).save_pretrained(str(out))
    return out


def build_tiny_detr(out_dir: str | Path, *, seed: int = 0, labels: tuple[str, ...] = ("cat", "dog", "car")) -> Path:
    """A DETR over a two-stage ResNet (built from its config, so no timm and no download)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    backbone = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], out_features=["stage2"])
    config = DetrConfig(
        use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False,
        num_queries=8, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
        id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
    )
    model = DetrForObjectDetection(config).eval()
    # DETR's initialisation gives every query the same answer; spread them so scores and boxes
    # differ and a threshold has something to filter.
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    model.save_pretrained(str(out))
    DetrImageProcessor(size={"shortest_edge": 32, "longest_edge": 64}).save_pretrained(str(out))
    return out
