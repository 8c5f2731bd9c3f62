"""Tiny, real Hugging Face models built locally in about a second, without network access.

They exist so the demo and the tests exercise the same loading path as a real deployment
(``AutoModelForCausalLM.from_pretrained`` on a directory, PEFT adapter directories) while staying
small enough for a 2-core CI machine. The weights are random; what they say is gibberish, but it is
deterministic gibberish, which is all the tests need.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedTokenizerFast,
)

SPECIAL_TOKENS = ["<s>", "</s>", "<unk>", "<pad>"]
VOCAB_SIZE = 1000

# Zephyr-like: one block per message, then the assistant header when a reply is wanted. The role
# markers are ordinary text for this tokenizer, which is fine: the template only has to be stable.
# Tools are rendered the Hermes way (a <tools> system block, <tool_call> and <tool_response>
# blocks), as Qwen-style templates do, so the tiny model exercises tool calling like a real one.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}"
    "{{ '<|system|>\nYou may call these functions. Answer with <tool_call>{\"name\": ..., "
    "\"arguments\": ...}</tool_call> for each call.\n<tools>\n' }}"
    "{% for tool in tools %}{{ tool | tojson }}{{ '\n' }}{% endfor %}"
    "{{ '</tools>' + eos_token + '\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'tool' %}"
    "{{ '<|user|>\n<tool_response>\n' + message['content'] + '\n</tool_response>' + eos_token + '\n' }}"
    "{% else %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] }}"
    "{% for call in message.get('tool_calls') or [] %}"
    "{{ '<tool_call>\n' + {'name': call['function']['name'], 'arguments': call['function']['arguments']} | tojson"
    " + '\n</tool_call>' }}"
    "{% endfor %}"
    "{{ eos_token + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

_SUBJECTS = ["The engine", "A replica", "The small model", "Every adapter", "The gateway", "Our team"]
_VERBS = ["serves", "loads", "answers", "streams", "batches", "remembers"]
_OBJECTS = [
    "requests quickly.",
    "many fine-tuned models.",
    "tokens one by one.",
    "the base weights once.",
    "questions about the weather.",
    "prompts from curious users!",
]
_EXTRA = [
    "Hello, world! How are you today?",
    "def add(a, b):\n    return a + b",
    "Numbers like 42, 3.14 and 1000 appear too.",
    "Café, naïve, jalapeño: accents are bytes as well.",
    "Emoji 🙂 and 日本語 text must round-trip.",
    "{\"key\": \"value\", \"list\": [1, 2, 3]}",
    "The quick brown fox jumps over the lazy dog.",
]


_WORDS = (
    "apple river mountain quiet bright engine garden window silver paper ocean forest music "
    "yellow planet thunder candle market winter summer doctor teacher pencil bottle rocket "
    "library kitchen science history morning evening journey bridge castle dragon coffee "
    "number letter signal server client answer question request token stream model adapter "
    "weight matrix vector layer cache batch prompt reply system user assistant python "
    "keyboard monitor network database cluster kernel memory storage compute latency "
    "orange purple green blue red black white golden wooden stone glass metal cotton "
    "happy sad clever brave gentle rapid slow ancient modern simple complex hidden open"
).split()


def _corpus() -> list[str]:
    sentences = [f"{s} {v} {o}" for s, v, o in itertools.product(_SUBJECTS, _VERBS, _OBJECTS)]
    # A fixed-seed word salad gives BPE enough distinct pairs to reach the target vocabulary.
    rng = random.Random(0)
    for _ in range(400):
        words = rng.sample(_WORDS, rng.randint(4, 10))
        sentences.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ","]))
    return sentences + _EXTRA * 3


def build_tiny_tokenizer(out_dir: str | Path) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer (~1000 tokens) with a chat template and save it."""
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    # Byte-level pre-tokenizer and decoder: every string maps to bytes that are in the alphabet,
    # so any text, including emoji, encodes and decodes back exactly.
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer=trainer)
    bos_id = tokenizer.token_to_id("<s>")
    # add_special_tokens=True prepends <s>, as Llama tokenizers do.
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_llama(
    out_dir: str | Path,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    seed: int = 0,
    max_position_embeddings: int = 512,
) -> Path:
    """Save a randomly initialised float32 Llama with its tokenizer into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tiny_tokenizer(out)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        # Wider than the usual 0.02 so logits are well separated: greedy decoding then does not
        # hinge on float rounding, and the output is varied rather than one repeated token.
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(out))
    return out


def build_lora_adapter(
    base_dir: str | Path,
    out_dir: str | Path,
    *,
    seed: int,
    r: int = 8,
    lora_alpha: int = 16,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    use_rslora: bool = False,
) -> Path:
    """Save a PEFT LoRA adapter for the model in ``base_dir`` with random, non-zero A and B."""
    from peft import LoraConfig, get_peft_model

    out = Path(out_dir)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    config = LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        target_modules=list(target_modules),
        use_rslora=use_rslora,
        lora_dropout=0.0,
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, config)
    # PEFT's non-default init gives both matrices nn.Linear's small uniform init; scale B up so
    # the adapter's greedy output differs from the base model's within a few tokens.
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(4.0)
    peft_model.save_pretrained(str(out))
    return out
