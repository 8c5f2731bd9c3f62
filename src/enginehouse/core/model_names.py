"""What a model name is: a path on this machine or a Hugging Face Hub id, and the name the
server keeps for it. No imports of the rest of the package: request schemas use it."""

from __future__ import annotations

from pathlib import Path


def looks_like_local_path(name: str) -> bool:
    """True for a model name that can only be a path (not a Hub id ``owner/name``)."""
    return name.startswith(("/", "./", "../", "~")) or Path(name).is_absolute()


def kept_model_name(name: str) -> str:
    """The name the server keeps for a base model it is given: a path (a directory that exists
    here, as a model loader would take it, or a name that can only be a path) as an absolute
    path, so that a replica or training job on another machine, which fetches the server's files
    by path, and a server started from another directory read the same directory; anything
    else, a Hub id, as given. A name that cannot be resolved stays as given: loading it says
    what is wrong."""
    try:
        path = Path(name).expanduser()
        if looks_like_local_path(name) or path.is_dir():
            return str(path.resolve())
    except (OSError, RuntimeError, ValueError):  # ~unknown-user, a NUL byte, a name too long
        pass
    return name
