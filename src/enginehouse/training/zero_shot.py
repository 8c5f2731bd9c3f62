"""Zero-shot checkpoints: a classification or regression head made from class descriptions alone.

Each description is embedded as a sentence-transformers encoder embeds a sentence (the masked mean
of the last hidden state, L2-normalised), and the head is linear in an input's embedding, so the
checkpoint is an ordinary one a replica serves and a training can start from: a PEFT LoRA adapter
of the smallest rank whose B matrices are zero (the backbone is unchanged), the head in
``modules_to_save``, and a ``config.json`` with the labels and the ``sentence_pooling`` markers.

- decision, routing, tool_calling: one label per class; logit i = SCALE x cos(x, description i).
- judge: labels ``pass`` and ``fail``; pass = SCALE x cos(x, criterion), fail = SCALE x JUDGE_THRESHOLD,
  so P(pass) = sigmoid(SCALE x (cos - JUDGE_THRESHOLD)).
- regression: label ``score``; mid + (max - min) x (cos(x, high) - cos(x, low)), i.e. weight
  (max - min)(e_high - e_low) and bias mid over the normalised embedding.
- ner: a whole token-classification model (an NER replica serves one model at a time) whose head
  compares each token's hidden state with each entity type's description: logit of type i =
  SCALE x (h . e_i) / |h|, with the typical token norm standing in for |h| (a linear head cannot
  divide by it), and ``O`` (outside) a constant SCALE x NER_THRESHOLD.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from enginehouse.runtime.classify.pooling import PoolingUnsupported, find_pooler, masked_mean
from enginehouse.training import report
from enginehouse.training.cancel import Cancellation
from enginehouse.training.config import JobConfig, ZeroShotSpec
from enginehouse.training.data import ClassificationExample, DatasetError, Example, label_names, read_examples
from enginehouse.training.errors import TrainingError
from enginehouse.training.loop import Task, score, write_checkpoint
from enginehouse.training.models import pick_device
from enginehouse.training.parameters import TrainingParameters
from enginehouse.training.sequence_classification import SequenceTask, head_modules, load_sequence_task
from enginehouse.training.token_classification import TokenTask, load_token_model, ner_labels

log = logging.getLogger(__name__)

# Cosine similarities times SCALE are the logits: all-MiniLM-L6-v2 and most sentence-transformers
# encoders were trained with a contrastive loss over cosines scaled by 20 (temperature 0.05), so
# softmax(20 x cos) is the probability scale they learned; a description 0.1 closer in cosine
# than another is then e^2, about 7 times, as likely.
SCALE = 20.0
# The cosine at which a judge's criterion counts as met. Measured on all-MiniLM-L6-v2 with five
# criteria (topics: food, refunds, software bugs, animals, sports), four texts that meet each and
# four that do not: texts that meet one score 0.10 to 0.50 (most above 0.2), texts that do not
# -0.08 to 0.17; 0.175 told 37 of the 40 apart, the best of the thresholds tried (0.05 to 0.35).
JUDGE_THRESHOLD = 0.175
# The similarity (cosine, scaled by the typical token norm) above which a token is taken for an
# entity. Measured on all-MiniLM-L6-v2 with three types (cities, people, foods described with
# examples) over four sentences: entity tokens score 0.34 to 0.55 against their type, other tokens
# up to 0.40 (verbs such as "ate" against food); 0.4 kept every entity but one and all but two
# other tokens out, better than 0.3 or 0.35.
NER_THRESHOLD = 0.4
# The one checkpoint a zero-shot build writes.
CHECKPOINT = 1


@dataclass(frozen=True)
class ZeroShotHead:
    """The weights of a linear head over the normalised sentence embedding."""

    weight: torch.Tensor  # [labels, hidden]
    bias: torch.Tensor  # [labels]


def zero_shot_head(spec: ZeroShotSpec, embed: Callable[[list[str]], torch.Tensor]) -> ZeroShotHead:
    """The head for ``spec``; ``embed(texts)`` gives their normalised embeddings ``[texts, hidden]``."""
    if spec.mode == "judge":
        criterion = embed([spec.classes[0].description])[0]
        weight = torch.stack([SCALE * criterion, torch.zeros_like(criterion)])
        return ZeroShotHead(weight, torch.tensor([0.0, SCALE * JUDGE_THRESHOLD]))
    if spec.mode == "regression":
        only = spec.classes[0]
        assert only.low_description and only.high_description and only.min_value is not None \
            and only.max_value is not None  # the spec's own check
        low, high = embed([only.low_description, only.high_description])
        span = only.max_value - only.min_value
        return ZeroShotHead((span * (high - low)).unsqueeze(0), torch.tensor([(only.min_value + only.max_value) / 2]))
    descriptions = embed([c.description for c in spec.classes])
    return ZeroShotHead(SCALE * descriptions, torch.zeros(len(spec.classes)))


def build_zero_shot(config: JobConfig, output_dir: Path, cancel: Cancellation) -> None:
    """Write the zero-shot checkpoint ``config.zero_shot`` describes, scored on the test file if any."""
    spec = config.zero_shot
    assert spec is not None
    if spec.task_type == "ner":
        build_zero_shot_ner(config, spec, output_dir, cancel)
        return
    labels = spec.labels  # as the experiment lists them (training.config)
    test = _test_examples(config, labels)
    with cancel.protected():
        report.write_progress(output_dir, status="Running", step=0, total_steps=1, epoch=0.0, loss=None)
    torch.manual_seed(config.parameters.seed)  # the LoRA A matrices: random, though B = 0 makes them inert
    # The smallest LoRA on the default targets, B initialised to zero: a replica's adapter that
    # changes nothing in the backbone. Cut over-long test rows rather than fail a build with no training.
    parameters = TrainingParameters(lora_r=1, lora_alpha=1, lora_dropout=0.0, pooling="mean", truncation=True,
                                    max_seq_length=config.parameters.max_seq_length)
    model, task = load_sequence_task(spec.task_type, config.base_model, parameters, labels,
                                     init_head=lambda m, t: _set_head(spec, m, t))
    _score_and_save(model, task, test, parameters, output_dir, cancel)


def _score_and_save(model: Any, task: Task, test: list[Example], parameters: TrainingParameters, output_dir: Path,
                    cancel: Cancellation) -> None:
    """Score the built model on the test rows (if any) and write it as the one checkpoint."""
    device = pick_device()
    model.to(device)
    results: dict[str, float] = {}
    if test:
        with cancel.protected():
            report.write_progress(output_dir, status="Testing", step=1, total_steps=1, epoch=1.0, loss=None)
        results = score(model, task, task.encode(test, "test"), parameters.per_device_eval_batch_size, device, cancel)
        log.info("zero-shot test results: %s", ", ".join(f"{k} {v:.4f}" for k, v in results.items()))
    write_checkpoint(model, task, output_dir, CHECKPOINT, results, cancel)
    with cancel.protected():
        report.write_progress(output_dir, status="Running", step=1, total_steps=1, epoch=1.0, loss=None)


def _test_examples(config: JobConfig, labels: Sequence[str]) -> list[Example]:
    if not config.test_path:
        return []
    examples = read_examples(config.task_type, Path(config.test_path), split_name="test")
    for example in examples:
        if isinstance(example, ClassificationExample) and example.label not in labels:
            raise DatasetError(f"test line {example.line}: label {example.label!r} is not one of the "
                               f"checkpoint's labels ({', '.join(labels)})")
    return examples


def _set_head(spec: ZeroShotSpec, model: PreTrainedModel, task: SequenceTask) -> None:
    """Embed the descriptions with ``model``'s own backbone and write the head into ``model``."""
    try:
        find_pooler(model)
    except PoolingUnsupported as exc:
        raise TrainingError(f"a zero-shot checkpoint reads sentence embeddings: {exc}") from None
    heads = head_modules(model)
    head = model.get_submodule(heads[0]) if len(heads) == 1 else None
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise TrainingError(f"a zero-shot head is one linear layer over the sentence embedding, but "
                            f"{type(model).__name__}'s head is {', '.join(heads)}")
    model.eval()
    weights = zero_shot_head(spec, lambda texts: _embed(*_hidden_states(model, task.tokenizer, task.limit.tokens, texts)))
    head.weight.copy_(weights.weight.to(head.weight))
    head.bias.copy_(weights.bias.to(head.bias))


def _hidden_states(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, max_length: int, texts: list[str]
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """The backbone's last hidden states of ``texts`` ``[texts, tokens, hidden]``, and their mask."""
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    backbone: Any = model.base_model
    with torch.no_grad():
        hidden = backbone(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).last_hidden_state
    return hidden, encoded["attention_mask"]


def _embed(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings as a sentence-transformers encoder makes them (module docstring)."""
    return masked_mean(hidden, mask, normalize=True)


def build_zero_shot_ner(config: JobConfig, spec: ZeroShotSpec, output_dir: Path, cancel: Cancellation) -> None:
    """The ner checkpoint: the base encoder with a head made from the entity types' descriptions."""
    test = read_examples("ner", Path(config.test_path), split_name="test") if config.test_path else []
    unknown = sorted(set(label_names(test)) - set(spec.labels))
    if unknown:
        raise DatasetError(f"the test data marks entity type(s) {', '.join(unknown)}, which are not among the "
                           f"experiment's ({', '.join(spec.labels)})")
    with cancel.protected():
        report.write_progress(output_dir, status="Running", step=0, total_steps=1, epoch=0.0, loss=None)
    parameters = TrainingParameters(truncation=True, max_seq_length=config.parameters.max_seq_length)
    model, task = load_token_model(config.base_model, parameters, ner_labels(spec.labels))
    model.eval()
    with torch.no_grad():
        _set_ner_head(spec, model, task)
    _score_and_save(model, task, test, parameters, output_dir, cancel)


def _set_ner_head(spec: ZeroShotSpec, model: PreTrainedModel, task: TokenTask) -> None:
    head = model.get_submodule(head_modules(model)[-1])
    if not isinstance(head, nn.Linear) or head.bias is None:
        raise TrainingError(f"a zero-shot NER head is one linear layer over the tokens' hidden states, but "
                            f"{type(model).__name__}'s is not")
    texts = [c.description for c in spec.classes]
    hidden, mask = _hidden_states(model, task.tokenizer, task.limit.tokens, texts)
    typical_norm = hidden[mask.bool()].norm(dim=-1).mean()
    descriptions = _embed(hidden, mask)
    outside = torch.zeros_like(descriptions[:1])
    head.weight.copy_(torch.cat([outside, SCALE * descriptions / typical_norm]).to(head.weight))
    head.bias.copy_(torch.tensor([SCALE * NER_THRESHOLD] + [0.0] * len(texts)).to(head.bias))
