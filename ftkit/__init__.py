"""ftkit: a notebook course and toolkit for fine-tuning OpenAI-style chat models.

Modules, one per lesson:

* :mod:`ftkit.data` -- build, validate, split chat-JSONL training data (02_data_formatting)
* :mod:`ftkit.tokens` -- offline per-model token counting (02_data_formatting)
* :mod:`ftkit.concepts` -- full fine-tuning vs LoRA on the real model (01_concepts)
* :mod:`ftkit.catalog`, :mod:`ftkit.cost` -- dated models and prices, cost and break-even (03_cost_math)
* :mod:`ftkit.graders` -- OpenAI's graders, run locally, for evals and RFT (07_reinforcement_fine_tuning)
* :mod:`ftkit.course` -- quick mode, data paths, the ``make course`` runner

The local OpenAI-compatible fine-tuning server lives in :mod:`ftkit.local` (``pip install
ftkit[local]``).
"""

__version__ = "0.1.0"

from .backend import backend_info, backend_of, client  # noqa: E402

__all__ = ["__version__", "backend_info", "backend_of", "client"]
