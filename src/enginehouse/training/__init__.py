"""Fine-tuning: LoRA adapters trained on a user's dataset, one job per worker process.

The API checks datasets and parameters with ``data`` and ``parameters`` (``TrainingParameters``,
``check_parameters_for_task``) before a job starts; the worker (``python -m enginehouse.training
CONFIG_JSON_PATH``) trains, or builds a zero-shot checkpoint (``zero_shot``), and reports through
the files ``report`` writes and reads.
"""
