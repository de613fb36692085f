"""What the local server does, independent of HTTP: one service per resource of OpenAI's API.

* :mod:`.platform` -- :class:`~.platform.Platform`: files, fine-tuning jobs (created through
  :mod:`ftkit.local.jobs.jobstate`, checked by :mod:`ftkit.local.jobs.hyperparameters`) and the one
  model lookup;
* :mod:`.chat` -- chat completions served (constraints, tool choice, logprobs, streaming): the one
  code path of the chat route, the Batch API, the Responses API, evals and model graders;
* :mod:`.completions` -- legacy text completions, with chat's engine and sampling;
* :mod:`.responses` -- the Responses API on the chat service, responses kept in the store;
* :mod:`.stored_completions` -- stored chat completions (``store: true``) and their messages;
* :mod:`.batches` -- the Batch API's runner;
* :mod:`.evals` -- the Evals API, run locally;
* :mod:`.grading` -- the graders endpoints (run / validate), judges served by the chat service.

Routes (:mod:`ftkit.local.api.routes`) call these and serialise with :mod:`ftkit.local.api.wire`,
whose :class:`~ftkit.local.api.wire.APIError` the services raise. Services generate through
:mod:`ftkit.local.inference` and keep state in :mod:`ftkit.local.store`; none imports torch.
"""
