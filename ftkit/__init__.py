"""ftkit: a notebook course and toolkit for fine-tuning OpenAI-style chat models.

Modules, one per lesson:

* :mod:`ftkit.data` -- build, validate, split chat-JSONL training data (02_data_formatting)
* :mod:`ftkit.tokens` -- offline per-model token counting (02_data_formatting)
* :mod:`ftkit.catalog` -- dated models and prices (03_cost_math)

The local OpenAI-compatible fine-tuning server lives in :mod:`ftkit.local` (``pip install
ftkit[local]``).
"""

__version__ = "0.1.0"

from .backend import backend_info, backend_of, client  # noqa: E402

__all__ = ["__version__", "backend_info", "backend_of", "client"]
