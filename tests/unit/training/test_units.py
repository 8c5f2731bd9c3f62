"""The small pieces of the worker: scores, batching, cancellation, LoRA target defaults."""

from __future__ import annotations

import random
import signal
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from enginehouse.training.batching import attention_mask, evaluation_batches, pad, training_batches
from enginehouse.training.cancel import Cancellation, Cancelled
from enginehouse.training.errors import TrainingError
from enginehouse.training.evaluation import classification_scores, mean_absolute_error
from enginehouse.training.lora import attach_lora
from enginehouse.training.parameters import TrainingParameters


def test_classification_scores_match_hand_computed_values() -> None:
    gold = [0, 0, 0, 1, 1, 2]
    predicted = [0, 0, 1, 1, 2, 2]
    scores = classification_scores(gold, predicted)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # F1 per label: 0 -> 2*2/(3+2), 1 -> 2*1/(2+2), 2 -> 2*1/(1+2)
    assert scores["macro_f1"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    # A label only predicted (never gold) counts with F1 0, as scikit-learn does.
    assert classification_scores([0, 0], [0, 1])["macro_f1"] == pytest.approx((2 * 1 / 3 + 0) / 2)
    assert mean_absolute_error([1.0, 2.0], [1.5, 1.0]) == pytest.approx(0.75)


def test_training_batches_cover_every_row_once_in_a_seeded_order() -> None:
    lengths = [random.Random(0).randint(1, 50) for _ in range(203)]
    first = training_batches(lengths, 8, random.Random(5))
    assert first == training_batches(lengths, 8, random.Random(5))
    assert first != training_batches(lengths, 8, random.Random(6))
    assert sorted(i for batch in first for i in batch) == list(range(203))
    assert all(len(batch) <= 8 for batch in first) and sum(len(b) < 8 for b in first) <= 2
    evaluation = evaluation_batches(lengths, 8)
    assert [i for batch in evaluation for i in batch] == sorted(range(203), key=lambda i: lengths[i])


def test_padding_on_the_right() -> None:
    rows = [[5, 6, 7], [8]]
    assert pad(rows, 0).tolist() == [[5, 6, 7], [8, 0, 0]]
    assert attention_mask(rows).tolist() == [[1, 1, 1], [1, 0, 0]]


def test_a_cancel_waits_for_a_protected_block_and_only_counts_when_armed() -> None:
    cancel = Cancellation()
    cancel.install()
    try:
        signal.raise_signal(signal.SIGTERM)  # not armed: only recorded
        assert cancel.requested
        with pytest.raises(Cancelled), cancel.armed():
            pass  # a cancel that came before the job starts stops it at once
        cancel = Cancellation()
        cancel.install()
        finished = False
        with pytest.raises(Cancelled), cancel.armed(), cancel.protected():
            signal.raise_signal(signal.SIGTERM)
            finished = True
        assert finished
        cancel = Cancellation()
        cancel.install()
        with pytest.raises(Cancelled), cancel.armed():
            signal.raise_signal(signal.SIGTERM)
            pytest.fail("the signal should have stopped the block")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q_proj, self.v_proj, self.mlp = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.embed = nn.Embedding(10, 4)


class _Custom(nn.Module):
    """An architecture PEFT has no default targets for."""

    def __init__(self) -> None:
        super().__init__()
        self.config = SimpleNamespace(model_type="custom-arch", to_dict=dict, get=lambda *_: None)
        self.layers = nn.ModuleList([_Attention(), _Attention()])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers[1].q_proj(self.layers[0].v_proj(x))


def test_unknown_architectures_get_their_attention_projections() -> None:
    model = attach_lora(_Custom(), TrainingParameters(), peft_task="FEATURE_EXTRACTION")
    assert sorted(model.peft_config["default"].target_modules) == ["q_proj", "v_proj"]


def test_lora_on_a_layer_no_replica_can_serve_is_refused() -> None:
    with pytest.raises(TrainingError, match="not linear layers"):
        attach_lora(_Custom(), TrainingParameters(target_modules=["embed"]), peft_task="FEATURE_EXTRACTION")
    with pytest.raises(TrainingError, match="target_modules"):
        attach_lora(_Custom(), TrainingParameters(target_modules=["nothing_like_this"]), peft_task="FEATURE_EXTRACTION")
