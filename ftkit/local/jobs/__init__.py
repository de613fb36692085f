"""Fine-tuning jobs on the local server: their lifecycle, the worker, the trainer process, training.

* :mod:`.jobstate` -- the job state machine, one function per transition (the only writer of a
  job's status: the platform service, the worker and the trainer all go through it);
* :mod:`.hyperparameters` -- checking a job's hyperparameters and resolving ``"auto"`` (views of
  the method registry, :mod:`ftkit.methods`; torch-free, so the HTTP side checks with it too);
* :mod:`.worker` -- the job worker in the server process: validates the files, queues, spawns and
  watches one trainer at a time, requeues after a crash; its decisions are pure functions;
* :mod:`.trainer` -- the trainer process, ``python -m ftkit.local.jobs.trainer --home DIR --job ID``,
  spawned by the worker: it runs :class:`.training.loop.JobRun` and reports only through the store;
* :mod:`.training` -- what a job trains: the shared loop, the step functions, the LoRA recipe,
  the starting model and one small module per method.

Jobs read and write the store (:mod:`ftkit.local.store`) and load, render and sample through
:mod:`ftkit.local.inference`; nothing here imports HTTP (``api``) or the services. Only the
trainer process imports torch, lazily.
"""
