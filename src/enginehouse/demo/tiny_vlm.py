"""Tiny LLaVA-style and image-classification checkpoints with random weights, built locally.

Like ``tiny_models``, they let tests go through the same ``from_pretrained`` loading path as a
real deployment without network access; what they say is deterministic gibberish.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    GenerationConfig,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    ViTConfig,
    ViTForImageClassification,
    ViTImageProcessor,
)

from enginehouse.demo.tiny_models import build_tiny_tokenizer

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 32
PATCH_SIZE = 8

# Zephyr-like, as in ``tiny_models``, but a message's content may also be a list of parts in the
# Hugging Face form ({"type": "image"} / {"type": "text", "text": …}), as real LLaVA templates take.
VLM_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def _image_processor(cls: type, size: int) -> object:
    return cls(size={"height": size, "width": size}, crop_size={"height": size, "width": size},
               do_center_crop=False) if cls is CLIPImageProcessor else cls(size={"height": size, "width": size})


def build_tiny_llava(out_dir: str | Path, *, seed: int = 0, hidden_size: int = 64) -> Path:
    """Save a random float32 LLaVA (tiny CLIP vision tower + tiny Llama) with its processor."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(out)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.chat_template = VLM_CHAT_TEMPLATE
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32)
    text = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
        # Wide initialisation so greedy choices do not hinge on float rounding (see tiny_models).
        initializer_range=0.2,
    )
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=image_token_id,
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(str(out))
    # "default" drops the CLS feature, so each image stands for (size / patch)^2 tokens.
    processor = LlavaProcessor(
        image_processor=_image_processor(CLIPImageProcessor, IMAGE_SIZE), tokenizer=tokenizer,
        patch_size=PATCH_SIZE, vision_feature_select_strategy="default", chat_template=VLM_CHAT_TEMPLATE,
        num_additional_image_tokens=1,
    )
    processor.save_pretrained(str(out))
    return out


def build_tiny_image_classifier(out_dir: str | Path, *, labels: tuple[str, ...] = ("cat", "dog", "bird"),
                                seed: int = 0) -> Path:
    """Save a random float32 ViT image classifier with its image processor and labels."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, num_labels=len(labels),
                       id2label=dict(enumerate(labels)), label2id={name: i for i, name in enumerate(labels)},
                       initializer_range=0.2)
    torch.manual_seed(seed)
    model = ViTForImageClassification(config).to(torch.float32).eval()
    model.save_pretrained(str(out))
    _image_processor(ViTImageProcessor, IMAGE_SIZE).save_pretrained(str(out))  # type: ignore[attr-defined]
    return out
