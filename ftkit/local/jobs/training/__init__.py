"""Training on the local backend: one shared loop, one small module per method.

* :mod:`.recipe` -- the LoRA recipe (rank, alpha, target modules, base learning rates): used by
  the trainer, by :mod:`ftkit.concepts` (notebook 01) and by the benchmarks.
* :mod:`.steps` -- the training step as plain functions: length-grouped batching, collation,
  the token loss, evaluation, the learning-rate schedule, the optimiser step.
* :mod:`.loop` -- the loop every method shares: epochs and steps, metrics events, the results
  file, checkpoints, pause / resume / cancel and resuming after a crash.
* :mod:`.sft`, :mod:`.dpo` -- a method is what differs: how examples are read, the loss of a
  batch, and its metrics.
* :mod:`.tracking` -- the ``wandb`` integration: the run a job's config, steps and final metrics
  go to (offline under the job's folder without ``WANDB_API_KEY``); ``wandb`` is optional.
* :mod:`.starting` -- the starting model: a base model, or a fine-tuned one (its adapter merged
  into the base), with a fresh LoRA adapter on top; saving the result as one adapter over the base.

Everything here imports torch lazily or is only imported in the trainer process; the HTTP side
never imports this package (it uses :mod:`ftkit.local.jobs.hyperparameters` for the rules).
"""
