"""One fine-tuning job, start to finish: ``python -m enginehouse.training CONFIG_JSON_PATH``.

It reads and checks the datasets, loads the base model with LoRA, trains, and reports through
the files of ``report`` in the config's output directory; it always ends with ``outcome.json``
(Success, Failed with a reason a user can act on, or Cancelled) unless it is killed outright.
A zero-shot build (``zero_shot`` in the config) trains nothing: it writes one checkpoint made
from class descriptions (``zero_shot``).
"""

from __future__ import annotations

import logging
import math
import shutil
import sys
import warnings
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from transformers import PreTrainedModel

from enginehouse.training import report
from enginehouse.training.cancel import EXIT_CANCELLED, Cancellation, Cancelled
from enginehouse.training.checkpoints import CheckpointHead, read_checkpoint_head, score_baseline
from enginehouse.training.config import ConfigError, JobConfig, read_config
from enginehouse.training.data import (
    DatasetError,
    Example,
    check_test_labels,
    label_names,
    read_examples,
    split_examples,
)
from enginehouse.training.errors import TrainingError
from enginehouse.training.loop import Task, score, train
from enginehouse.training.models import pick_device
from enginehouse.training.parameters import check_parameters_for_task
from enginehouse.training.sequence_classification import load_sequence_task
from enginehouse.training.textgen import load_textgen
from enginehouse.training.token_classification import TokenTask, load_token_model, ner_labels, with_lora
from enginehouse.training.zero_shot import build_zero_shot

log = logging.getLogger("enginehouse.training")

EXIT_SUCCESS, EXIT_FAILED = 0, 1
# An ner model training starts from, with the task that encodes rows for it.
NerStart = tuple[PreTrainedModel, TokenTask]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m enginehouse.training CONFIG_JSON_PATH", file=sys.stderr)
        return 2
    _quiet_libraries()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    cancel = Cancellation()
    cancel.install()
    return run(Path(args[0]), cancel)


def _quiet_libraries() -> None:
    """The log is read by the job's user: no progress bars drawn for a terminal, no deprecation
    notices meant for developers."""
    from huggingface_hub.utils import disable_progress_bars
    from transformers.utils import logging as transformers_logging

    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)


def run(config_path: Path, cancel: Cancellation | None = None) -> int:
    """Run the job ``config_path`` describes; the exit status. Callable in-process (tests)."""
    cancel = cancel or Cancellation()
    output_dir = report.output_dir_of(config_path)
    try:
        with cancel.armed():
            config = read_config(config_path)
            output_dir = Path(config.output_dir)
            _run_job(config, output_dir, cancel)
    except BaseException as exc:
        status, reason = _outcome_of(exc, cancel)
    else:
        status, reason = "Success", None
    return _finish(output_dir, status, reason)


def _outcome_of(exc: BaseException, cancel: Cancellation) -> tuple[report.OutcomeStatus, str | None]:
    # A cancel landing inside library code (an import it interrupts) may come out as another
    # exception; it is still a cancel.
    if isinstance(exc, Cancelled) or cancel.requested:
        return "Cancelled", None
    if isinstance(exc, (ConfigError, DatasetError, TrainingError)):
        return "Failed", str(exc)
    if isinstance(exc, MemoryError):
        return "Failed", "the machine ran out of memory; lower per_device_train_batch_size or max_seq_length"
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return "Failed", "the accelerator ran out of memory; lower per_device_train_batch_size or max_seq_length"
    if not isinstance(exc, Exception):  # SystemExit and the like: not the job's failure
        raise exc
    log.error("the job failed", exc_info=exc)
    return "Failed", f"training failed unexpectedly: {type(exc).__name__}: {_first_line(exc)}"


def _run_job(config: JobConfig, output_dir: Path, cancel: Cancellation) -> None:
    parameters = config.parameters
    problem = check_parameters_for_task(config.task_type, parameters)
    if problem is not None:
        raise ConfigError(problem)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    log.info("job %s: %s on %s; parameters %s", config.job_id, config.task_type, config.base_model,
             parameters.model_dump_json())
    if config.zero_shot is not None:
        log.info("zero-shot %s checkpoint from %d class description(s)", config.zero_shot.mode,
                 len(config.zero_shot.classes))
        build_zero_shot(config, output_dir, cancel)
        return
    train_examples, test_examples, test_split_name = _datasets(config)
    log.info("datasets: %d training rows, %d test rows", len(train_examples), len(test_examples))
    # Running from now on, while the model loads; the step count is final once rows are
    # tokenised (text generation may drop rows a cut leaves nothing to learn from).
    steps = math.ceil(len(train_examples) / parameters.per_device_train_batch_size) * parameters.num_train_epochs
    with cancel.protected():
        report.write_progress(output_dir, status="Running", step=0, total_steps=steps, epoch=0.0, loss=None)
    init = _init_head(config, train_examples)  # checked before anything slow
    ner_start = _ner_start(config, train_examples)
    if config.baseline_checkpoint:
        _score_baseline(config, init, ner_start, test_examples, test_split_name, output_dir, steps, cancel)
    # One seed for everything random from here: the new head, the LoRA weights, the shuffling.
    torch.manual_seed(parameters.seed)
    task: Task
    if config.task_type == "text-generation":
        model, task = load_textgen(config.base_model, parameters)
    elif config.task_type == "ner":  # a fresh head for the rows' entity types, made after the seed
        loaded = ner_start or load_token_model(config.base_model, parameters, ner_labels(label_names(train_examples)))
        model, task = with_lora(loaded[0], parameters), loaded[1]
    elif init is None:
        model, task = load_sequence_task(config.task_type, config.base_model, parameters,
                                         label_names(train_examples))
    else:  # the head starts as the checkpoint's, with its labels in its order
        model, task = load_sequence_task(config.task_type, config.base_model, parameters, init.labels,
                                         init_head=init.initialize)
    train_rows = task.encode(train_examples, "train")
    test_rows = task.encode(test_examples, test_split_name) if test_examples else []
    device = pick_device()
    model.to(device)
    log.info("training on %s with %d thread(s)", device, torch.get_num_threads())
    train(model, task, train_rows, test_rows, parameters, output_dir, device, cancel)


def _init_head(config: JobConfig, train_examples: list[Example]) -> CheckpointHead | None:
    """The ``init_checkpoint``'s head, checked to fit the job: the training rows' labels are among
    its labels (it may have more, which then stay in the trained head) and it reads what the
    trained head will."""
    if not config.init_checkpoint or config.task_type == "ner":  # an ner checkpoint is a whole model
        return None
    head = read_checkpoint_head(config.init_checkpoint, config.task_type, "init_checkpoint")
    head.check_labels(label_names(train_examples), "training data")
    head.check_pooling(config.parameters)
    return head


def _score_baseline(config: JobConfig, init: CheckpointHead | None, ner_start: NerStart | None,
                    test_examples: list[Example], split_name: str, output_dir: Path, steps: int,
                    cancel: Cancellation) -> None:
    """``baseline.json``: the baseline checkpoint scored on the test split, before training. The
    init checkpoint's head (or ner model), already read, when the baseline is the same checkpoint
    (an experiment's trained version starts from version 1 and is scored beside it)."""
    with cancel.protected():
        report.write_progress(output_dir, status="Testing", step=0, total_steps=steps, epoch=0.0, loss=None)
    if config.task_type == "ner":  # a whole model, scored as it is
        same = ner_start is not None and config.baseline_checkpoint == config.init_checkpoint
        model, task = ner_start if same else load_token_model(str(config.baseline_checkpoint), config.parameters, None)
        device = pick_device()
        results = score(model.to(device), task, task.encode(test_examples, split_name),
                        config.parameters.per_device_eval_batch_size, device, cancel)
    else:
        if init is not None and config.baseline_checkpoint == config.init_checkpoint:
            head = replace(init, what="baseline_checkpoint")
        else:
            head = read_checkpoint_head(str(config.baseline_checkpoint), config.task_type, "baseline_checkpoint")
        results = score_baseline(head, config.task_type, config.base_model, config.parameters, test_examples,
                                 split_name, cancel)
    with cancel.protected():
        report.write_baseline(output_dir, results)


def _ner_start(config: JobConfig, train_examples: list[Example]) -> NerStart | None:
    """An ner job's ``init_checkpoint`` as the model training starts from, with its head and labels
    (an experiment's trained version starts from version 1), checked to know the training rows'
    entity types; None without one."""
    if config.task_type != "ner" or not config.init_checkpoint:
        return None
    model, task = load_token_model(config.init_checkpoint, config.parameters, None)
    unknown = sorted(set(label_names(train_examples)) - set(task.labels))
    if unknown:
        raise TrainingError(f"init_checkpoint {config.init_checkpoint} finds {', '.join(task.labels[1:])}, but the "
                            f"training data marks {', '.join(unknown)}; use a checkpoint with those types")
    return model, task


def _datasets(config: JobConfig) -> tuple[list[Example], list[Example], str]:
    """The training rows, the test rows, and the name of the file the test rows' lines are in."""
    assert config.train_path is not None  # the config's own check: only a zero-shot build has none
    train = read_examples(config.task_type, Path(config.train_path), split_name="train")
    if config.test_path:
        test = read_examples(config.task_type, Path(config.test_path), split_name="test")
        check_test_labels(train, test)
        return train, test, "test"
    if config.train_test_split_ratio is not None:
        train, test = split_examples(train, config.train_test_split_ratio, config.parameters.seed)
        return train, test, "train"
    return train, [], "test"


def _finish(output_dir: Path | None, status: report.OutcomeStatus, reason: str | None) -> int:
    if output_dir is None:
        print(f"{status}: {reason}; no output directory to report it in", file=sys.stderr)
        return EXIT_FAILED
    try:
        for partial in output_dir.glob(".checkpoint-*.partial"):
            shutil.rmtree(partial, ignore_errors=True)
        report.write_outcome(output_dir, status, reason)
    except OSError as exc:
        print(f"{status}: {reason}; the outcome cannot be written to {output_dir}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    log.info("outcome: %s%s", status, f": {reason}" if reason else "")
    return {"Success": EXIT_SUCCESS, "Cancelled": EXIT_CANCELLED}.get(status, EXIT_FAILED)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else "no details"
