"""The one typed settings object. Every ENGINEHOUSE_* variable is declared here, once, with why.

Nothing else in the package reads ``os.environ`` for configuration; code takes a ``Settings``
(or the values it needs) as an argument so tests can build their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENGINEHOUSE_", extra="ignore")

    # Where the server keeps its state: the SQLite database (unless DATABASE_URL says otherwise),
    # admin.key, replica logs and the demo's models.
    data_dir: Path = Field(default=Path.home() / ".enginehouse")
    # SQLAlchemy URL of the control-plane database. Empty: SQLite at <data_dir>/enginehouse.db.
    # PostgreSQL: postgresql+psycopg://user@host:5432/dbname
    database_url: str = ""
    # Address the API, gateway and dashboard listen on.
    host: str = "127.0.0.1"
    port: int = 8400
    # Admin API key of the `default` organization on first start; random when empty.
    bootstrap_key: str = ""
    # Address of this server as clients see it (CLI default); empty: http://HOST:PORT.
    url: str = ""
    # API key the CLI sends (management subcommands).
    api_key: str = ""
    # Where replicas and fine-tuning jobs run: "local" (processes of this machine) or "ray" (actors
    # on a Ray cluster; needs the ray extra).
    provider: Literal["local", "ray"] = "local"
    # The Ray cluster to place replicas on (ray.init's address): "auto" finds the one this
    # machine belongs to; ray://HOST:10001 reaches one through Ray Client.
    ray_address: str = "auto"
    # With the ray provider: which model, dataset and checkpoint paths a replica or a fine-tuning
    # job fetches from this server (checked by sha256, cached on its node) rather than reading
    # them itself. "missing": those its node cannot see (no shared filesystem there); "always":
    # every path of this server's.
    ray_fetch_artifacts: Literal["missing", "always"] = "missing"
    # With the ray provider: the CPUs each fine-tuning job's actor reserves on its node (its
    # worker's torch threads too, unless TRAINING_THREADS says otherwise). A job no node has
    # that many CPUs for fails at once, saying so.
    ray_training_cpus: int = Field(default=1, ge=1)
    # With the ray provider: the GPUs each fine-tuning job asks for. "auto": one when some alive
    # node has a GPU, else none (it trains on CPUs); a number: that many (0: CPUs only).
    ray_training_gpus: Literal["auto"] | Annotated[int, Field(ge=0)] = "auto"
    # This server's address as the cluster's nodes reach it (replicas fetch artifacts there);
    # empty: http://HOST:PORT, with this machine's cluster address when HOST listens on all.
    cluster_url: str = ""
    # Seconds between two passes of the reconciler over all engines.
    reconcile_interval_s: float = 0.5
    # Seconds between two tries of a standby server (one sharing the PostgreSQL database with the
    # server that runs the reconciler) to take over; bounds how long a dead leader goes unreplaced.
    leader_poll_s: float = Field(default=2.0, gt=0, le=60)
    # How long a replica may take from process start to answering /health before it is failed.
    replica_start_timeout_s: float = 300.0
    # A ready replica whose health check has not answered this long (hung) is replaced.
    replica_hang_timeout_s: float = Field(default=30.0, gt=0)
    # Replica failures in a row, none ready in between, after which the engine is Failed; each is
    # retried after a backoff that doubles from 2 s (at most 60 s).
    replica_max_crashes: int = Field(default=5, ge=1)
    # A replica scaled down stops once its requests end, or after this long anyway.
    replica_drain_timeout_s: float = Field(default=120.0, gt=0)
    # How long an inference call waits for a waking engine before answering 503 + Retry-After.
    wake_wait_s: float = 60.0
    # CPU threads each replica's torch may use (0: torch's default, all cores).
    replica_threads: int = 0
    # Seconds the gateway waits for a replica's answer before giving up with 503.
    gateway_timeout_s: float = 600.0
    # Images given as file:// paths are read from this machine's disk only when this is true.
    allow_local_files: bool = False
    # Largest request body the server and each replica read, in bytes; a larger one is refused
    # with 413 before it is parsed. Leaves room for a few base64 images in one request.
    max_request_body_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)
    # Deepest nesting of arrays and objects a JSON body may have; deeper is a 400. Real bodies
    # (chat content parts, tool schemas) stay far below it; parsers recurse once per level.
    max_json_depth: int = Field(default=64, ge=8, le=512)
    # The most replicas one engine may run (autoscaling.max_replicas above it is a 422).
    max_replicas_per_engine: int = Field(default=8, ge=1)

    # Largest dataset file POST /v1/datasets takes, in bytes; a larger upload is a 413. Datasets
    # are streamed to disk, so this bounds disk use, not memory.
    max_dataset_bytes: int = Field(default=256 * 1024 * 1024, ge=1024)
    # Fine-tuning jobs that run at once; more wait as Pending. Each takes the whole CPU it is
    # given, so one at a time suits a small machine.
    max_training_jobs: int = Field(default=1, ge=1)
    # CPU threads each fine-tuning process's torch may use (0: torch's default, all cores; with
    # the ray provider, the CPUs its actor reserves, RAY_TRAINING_CPUS).
    training_threads: int = 0

    @property
    def datasets_dir(self) -> Path:
        """Where uploaded datasets (and experiments' examples, stored as datasets) are kept."""
        return self.data_dir / "datasets"

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'enginehouse.db'}"

    def resolved_url(self) -> str:
        return self.url or f"http://{self.host}:{self.port}"
