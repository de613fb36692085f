"""OpenAI's Evals API, run locally (``/v1/evals``): evals, their runs and output items.

OpenAI shut its hosted Evals down on 2026-11-30; the ``openai`` SDK still has ``client.evals``.
Here the same requests run on the local server:

* an **eval** is a data-source config (``custom``: an ``item_schema`` the rows must match;
  ``logs`` / ``stored_completions``: rows are stored chat completions) and **testing criteria**,
  which are OpenAI's graders run by :mod:`ftkit.graders` (``string_check``, ``text_similarity``,
  ``python``, ``score_model``, ``label_model``; the spec admits no ``multi`` here). A criterion
  passes at its ``pass_threshold``; without one (``string_check``, ``label_model``, and
  ``python`` / ``score_model`` that name none) at the top of its reward: 1, or the top of a
  ``score_model``'s ``range``;
* a **run** reads rows from its data source (``file_content``, a ``file_id`` of JSONL, or
  ``stored_completions`` / ``responses`` kept by this server), and -- for a ``completions`` or
  ``responses`` data source -- asks a served model for each row, its ``input_messages`` templates
  filled from ``item.*`` (and ``sample.*`` when the row has one) or an ``item_reference``; each
  answer becomes the ``sample`` the criteria grade. Runs execute in the background (a thread, like
  the Batch API's), every row's answer requested at once so the engine batches them;
  ``result_counts``, ``per_testing_criteria_results`` and ``per_model_usage`` grow as rows finish,
  and each row leaves one **output item** with every criterion's result. A run can be cancelled;
  one cut off by a restart starts again from its data source.

A row passes when every criterion passes; a row whose sampling failed, or where a grader reported
an error, is counted as ``errored`` (its output item says ``fail``). ``report_url`` is null: there
is no dashboard (the output items are the report).

Why one module of ~730 lines: :class:`EvalService` checks an eval, runs it and serialises it
against the same two pieces of state -- the eval's data-source config and its criteria -- and
the helpers below it (row checks, templates, tallies) serve only it; the graders themselves are
:mod:`ftkit.graders`, the answers :mod:`ftkit.local.services.chat`.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ... import graders
from ...graders import templates
from ..api.request_check import parse_json
from ..api.wire import APIError, after_cursor, not_found, unsupported_value
from ..store import Store, valid_id
from .chat import ChatService, response
from .stored_completions import StoredCompletions, check_metadata, matches

MAX_ROWS = 10_000
RUN_STATUSES = ("queued", "in_progress", "completed", "canceled", "failed")
DEFAULT_SEED = 42
#: the ``sample`` a criterion reads (what the eval's ``schema`` says about it)
SAMPLE_SCHEMA = {"type": "object", "properties": {
    "model": {"type": "string"}, "choices": {"type": "array"}, "output_text": {"type": "string"},
    "output_json": {}, "output_tools": {"type": "array"}}, "required": ["model", "choices"]}
#: a stored chat completion as a row's ``item``
STORED_ITEM_SCHEMA = {"type": "object", "properties": {
    "input": {"type": "array", "items": {"type": "object"}}, "model": {"type": "string"},
    "metadata": {"type": ["object", "null"]}, "id": {"type": "string"}}, "required": ["input"]}


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def eval_object(record: dict) -> dict:
    return {k: v for k, v in record.items() if not k.startswith("_")}


def run_object(run: dict) -> dict:
    return {k: v for k, v in run.items() if not k.startswith("_")}


class EvalService:
    """Evals, runs and output items over the store; runs execute in a background thread."""

    def __init__(self, store: Store, chat: ChatService, responses, grading, list_models, *, log=print) -> None:
        self.store = store
        self.chat = chat
        self.responses = responses  # the ResponsesService: ``responses`` data sources
        self.grading = grading  # the GradingService: judges for model graders
        self.list_models = list_models  # () -> served model ids
        self.stored = StoredCompletions(store)
        self.log = log
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        for run in self.store.list_eval_runs():  # cut off by a restart: run again from the data source
            if run["status"] == "in_progress":
                self.store.delete_eval_output_items(run["id"])
                self.store.save_eval_run({**run, **_empty_results(), "status": "queued"})
        self._thread = threading.Thread(target=self._loop, name="ftkit-evals", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)

    # -- evals ----------------------------------------------------------------------------------

    def create(self, body: dict) -> dict:
        created = int(time.time())
        record = {
            "object": "eval", "id": _id("eval_"), "name": body.get("name") or f"eval-{created}",
            "data_source_config": self._data_source_config(body["data_source_config"]),
            "testing_criteria": self._criteria(body["testing_criteria"]),
            "created_at": created, "metadata": check_metadata(body.get("metadata")), "_updated_at": created,
        }
        self.store.save_eval(record)
        return eval_object(record)

    def _data_source_config(self, config: dict) -> dict:
        kind = config.get("type")
        if kind == "custom":
            item_schema = config.get("item_schema")
            _check_schema(item_schema, "data_source_config.item_schema")
            schema = {"type": "object", "properties": {"item": item_schema}, "required": ["item"]}
            if config.get("include_sample_schema"):
                schema["properties"]["sample"] = SAMPLE_SCHEMA
                schema["required"].append("sample")
            return {"type": "custom", "schema": schema}
        metadata = config.get("metadata")
        if metadata is not None and not all(isinstance(v, str) for v in metadata.values()):
            raise APIError(400, "Invalid 'data_source_config.metadata': the stored completions' metadata to match, "
                                "as string values.", param="data_source_config.metadata", code="invalid_value")
        schema = {"type": "object", "properties": {"item": STORED_ITEM_SCHEMA, "sample": SAMPLE_SCHEMA},
                  "required": ["item", "sample"]}
        return {"type": kind, "metadata": metadata, "schema": schema}

    def _criteria(self, criteria: list) -> list[dict]:
        if not criteria:
            raise APIError(400, "Invalid 'testing_criteria': give at least one grader.", param="testing_criteria",
                           code="invalid_value")
        out, names = [], set()
        models = self.list_models()
        for i, spec in enumerate(criteria):
            param = f"testing_criteria[{i}]"
            grader, threshold = _split_threshold(spec)
            try:
                compiled = graders.compile_grader(grader, param=param, models=models)
            except graders.GraderError as e:
                raise APIError(400, e.message, param=e.param, code=e.code) from None
            if compiled.name in names:
                raise APIError(400, f"Invalid '{param}.name': {compiled.name!r} names another criterion too; each "
                                    "criterion's results are reported by its name.", param=f"{param}.name",
                               code="invalid_value")
            names.add(compiled.name)
            normalised = compiled.to_dict()
            if threshold is not None:
                normalised["pass_threshold"] = threshold
            out.append(normalised)
        return out

    def get(self, eval_id: str) -> dict:
        return eval_object(self._eval(eval_id))

    def _eval(self, eval_id: str) -> dict:
        record = self.store.get_eval(eval_id) if isinstance(eval_id, str) else None
        if record is None:
            raise not_found("eval", eval_id, "eval_id")
        return record

    def list(self, *, after: str | None, limit: int, order: str, order_by: str) -> tuple[list[dict], bool]:
        rows = self.store.list_evals()
        key = "_updated_at" if order_by == "updated_at" else "created_at"
        rows.sort(key=lambda r: r.get(key, r["created_at"]))  # stable: creation order among equals
        rows = [eval_object(r) for r in (rows[::-1] if order == "desc" else rows)]
        return after_cursor(rows, after, limit)

    def update(self, eval_id: str, body: dict) -> dict:
        record = self._eval(eval_id)
        if body.get("name") is not None:
            record["name"] = body["name"]
        if "metadata" in body:
            record["metadata"] = check_metadata(body["metadata"])
        record["_updated_at"] = int(time.time())
        self.store.save_eval(record)
        return eval_object(record)

    def delete(self, eval_id: str) -> dict:
        self._eval(eval_id)
        for run in self.store.list_eval_runs(eval_id):
            self._cancel_quietly(run)
        self.store.delete_eval(eval_id)
        return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}

    # -- runs -----------------------------------------------------------------------------------

    def create_run(self, eval_id: str, body: dict) -> dict:
        record = self._eval(eval_id)
        source = copy.deepcopy(body["data_source"])
        self._check_data_source(record, source)
        created = int(time.time())
        run = {"object": "eval.run", "id": _id("evalrun_"), "eval_id": eval_id, "status": "queued",
               "model": source.get("model") or "", "name": body.get("name") or f"run-{created}",
               "created_at": created, "report_url": None, **_empty_results(), "data_source": source,
               "metadata": check_metadata(body.get("metadata")), "error": None}
        self.store.save_eval_run(run)
        self._wake.set()
        return run_object(run)

    def _check_data_source(self, record: dict, source: dict) -> None:
        kind, inner = source.get("type"), source.get("source") or {}
        where = "data_source.source"
        if kind in ("completions", "responses"):
            model = source.get("model")
            if not model:
                raise APIError(400, f"Missing required parameter: 'data_source.model' (the served model that "
                                    f"answers each row of a {kind} run).", param="data_source.model",
                               code="missing_required_parameter")
            if model not in self.list_models():
                raise APIError(400, f"Invalid 'data_source.model': the model {model!r} is not served here; "
                                    f"served: {', '.join(sorted(self.list_models()))}.", param="data_source.model",
                               code="model_not_found")
            params = source.get("sampling_params") or {}
            if params.get("reasoning_effort") is not None:
                raise unsupported_value("data_source.sampling_params.reasoning_effort", params["reasoning_effort"],
                                        "null (the local models do not reason)")
            messages = source.get("input_messages")
            if messages is None and inner.get("type") not in ("stored_completions", "responses"):
                raise APIError(400, "Missing required parameter: 'data_source.input_messages' (a template over "
                                    "item.* or an item_reference).", param="data_source.input_messages",
                               code="missing_required_parameter")
            for i, message in enumerate((messages or {}).get("template") or []):
                for text in _texts(message.get("content"), f"data_source.input_messages.template[{i}].content"):
                    try:
                        templates.parse_template(text)
                    except templates.TemplateSyntaxError as e:
                        raise APIError(400, f"Invalid 'data_source.input_messages.template[{i}].content': bad "
                                            f"template: {e}", param=f"data_source.input_messages.template[{i}].content",
                                       code="invalid_value") from None
            reference = (messages or {}).get("item_reference")
            if messages and messages.get("type") == "item_reference" and not str(reference).startswith("item."):
                raise APIError(400, "Invalid 'data_source.input_messages.item_reference': a path into the row, such "
                                    f"as 'item.input', not {reference!r}.",
                               param="data_source.input_messages.item_reference", code="invalid_value")
        allowed = {"jsonl": ("file_content", "file_id"), "completions": ("file_content", "file_id", "stored_completions"),
                   "responses": ("file_content", "file_id", "responses")}[kind]
        if inner.get("type") not in allowed:
            raise APIError(400, f"Invalid '{where}.type': a {kind} data source reads {', '.join(allowed)}.",
                           param=f"{where}.type", code="invalid_value")
        if inner["type"] == "file_content":
            if len(inner["content"]) > MAX_ROWS:
                raise APIError(400, f"Invalid '{where}.content': at most {MAX_ROWS} rows.", param=f"{where}.content",
                               code="invalid_value")
            _check_rows(record, [{"item": row["item"], **({"sample": row["sample"]} if "sample" in row else {})}
                                 for row in inner["content"]], f"{where}.content", kind)
        elif inner["type"] == "file_id":
            if not (valid_id("file", inner["id"]) and self.store.get_file(inner["id"])):
                raise APIError(400, f"Invalid '{where}.id': no such file {inner['id']!r}.", param=f"{where}.id",
                               code="invalid_value")
        if kind == "jsonl" and record["data_source_config"]["type"] != "custom":
            raise APIError(400, "Invalid 'data_source.type': an eval of stored completions runs a completions data "
                                "source (its rows come with their answers).", param="data_source.type",
                           code="invalid_value")

    def get_run(self, eval_id: str, run_id: str) -> dict:
        return run_object(self._run(eval_id, run_id))

    def _run(self, eval_id: str, run_id: str) -> dict:
        self._eval(eval_id)
        run = self.store.get_eval_run(run_id) if isinstance(run_id, str) else None
        if run is None or run["eval_id"] != eval_id:
            raise not_found("eval run", run_id, "run_id")
        return run

    def list_runs(self, eval_id: str, *, after: str | None, limit: int, order: str,
                  status: str | None) -> tuple[list[dict], bool]:
        self._eval(eval_id)
        rows = [run_object(r) for r in self.store.list_eval_runs(eval_id) if status in (None, r["status"])]
        return after_cursor(rows[::-1] if order == "desc" else rows, after, limit)

    def cancel_run(self, eval_id: str, run_id: str) -> dict:
        run = self._run(eval_id, run_id)
        if run["status"] not in ("queued", "in_progress"):
            raise APIError(409, f"Eval run {run_id} is {run['status']}; only queued or in-progress runs can be "
                                "cancelled.", param="run_id", code="run_not_cancellable")
        self._cancel_quietly(run)
        return run_object(self.store.get_eval_run(run_id))

    def _cancel_quietly(self, run: dict) -> None:
        if run["status"] in ("queued", "in_progress"):
            self.store.save_eval_run({**self.store.get_eval_run(run["id"]), "status": "canceled"})

    def delete_run(self, eval_id: str, run_id: str) -> dict:
        run = self._run(eval_id, run_id)
        self._cancel_quietly(run)
        self.store.delete_eval_run(run_id)
        return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id}

    def output_items(self, eval_id: str, run_id: str, *, after: str | None, limit: int, order: str,
                     status: str | None) -> tuple[list[dict], bool]:
        self._run(eval_id, run_id)
        rows = self.store.list_eval_output_items(run_id, status)
        return after_cursor(rows[::-1] if order == "desc" else rows, after, limit)

    def output_item(self, eval_id: str, run_id: str, item_id: str) -> dict:
        self._run(eval_id, run_id)
        item = self.store.get_eval_output_item(item_id) if isinstance(item_id, str) else None
        if item is None or item["run_id"] != run_id:
            raise not_found("output item", item_id, "output_item_id")
        return item

    # -- running --------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            for run in self.store.list_eval_runs():
                if self._stop.is_set():
                    break
                if run["status"] == "queued":
                    try:
                        self.execute(run["id"])
                    except Exception as e:  # a broken run must not stop the others
                        self.log(f"eval run {run['id']} failed: {type(e).__name__}: {e}")
                        current = self.store.get_eval_run(run["id"])
                        if current is not None:
                            self.store.save_eval_run({**current, "status": "failed", "error": {
                                "code": "internal_error", "message": f"{type(e).__name__}: {e}"}})
            self._wake.wait(0.5)
            self._wake.clear()

    def execute(self, run_id: str) -> None:
        """Run a queued run to its end (the background thread calls this; tests may too)."""
        run = self.store.get_eval_run(run_id)
        record = self.store.get_eval(run["eval_id"])
        if record is None:
            return
        run = {**run, "status": "in_progress"}
        self.store.save_eval_run(run)
        source = run["data_source"]
        try:
            rows = self._rows(record, source)
        except APIError as e:
            self.store.save_eval_run({**run, "status": "failed", "error": {"code": e.code or "invalid_data_source",
                                                                           "message": e.message}})
            return
        samples = self._sample(source, rows)
        criteria = [(spec, graders.compile_grader(_split_threshold(spec)[0])) for spec in record["testing_criteria"]]
        context = graders.GradingContext(judge=self.grading.judge)
        tally = _Tally([spec["name"] for spec, _ in criteria])
        try:
            for index, (row, sampled) in enumerate(zip(rows, samples)):
                current = self.store.get_eval_run(run_id)
                if current is None or current["status"] != "in_progress":
                    return  # cancelled or deleted
                sample, shown, usage = sampled()
                results, errored = [], shown["error"] is not None
                if usage:
                    tally.use(shown["model"], usage)
                for spec, grader in criteria:
                    if errored:  # no answer to grade
                        results.append({"name": spec["name"], "type": spec["type"], "score": 0.0, "passed": False,
                                        "sample": None, "error": shown["error"]})
                        tally.grade(spec["name"], False)
                        continue
                    graded = grader.grade(sample, row["item"], context)
                    passed = graded.ok and graded.reward >= _threshold(spec)
                    errored = errored or not graded.ok
                    for model, used in graded.usage_per_model.items():
                        tally.use(model, used)
                    results.append({"name": spec["name"], "type": spec["type"], "score": graded.reward,
                                    "passed": passed, "sample": None, **graded.to_response()["metadata"]})
                    tally.grade(spec["name"], passed)
                passed = not errored and all(r["passed"] for r in results)
                tally.row(passed, errored)
                self.store.add_eval_output_item({
                    "object": "eval.run.output_item", "id": _id("outputitem_"), "run_id": run_id,
                    "eval_id": run["eval_id"], "created_at": int(time.time()), "status": "pass" if passed else "fail",
                    "datasource_item_id": index, "datasource_item": row["item"], "results": results,
                    "sample": shown})
                self._save_progress(run_id, tally)
        finally:
            context.close()
        current = self.store.get_eval_run(run_id)
        if current is not None and current["status"] == "in_progress":
            self.store.save_eval_run({**current, **tally.fields(), "status": "completed"})

    def _save_progress(self, run_id: str, tally: _Tally) -> None:
        current = self.store.get_eval_run(run_id)
        if current is not None and current["status"] == "in_progress":
            self.store.save_eval_run({**current, **tally.fields()})

    def _rows(self, record: dict, source: dict) -> list[dict]:
        """The run's rows: ``{"item": ..., "sample"?: ...}`` each, checked against the eval's schema."""
        inner, kind = source["source"], source["type"]
        if inner["type"] == "file_content":
            rows = [dict(row) for row in inner["content"]]
        elif inner["type"] == "file_id":
            rows = self._file_rows(inner["id"])
        elif inner["type"] == "stored_completions":
            records = self.stored.records(model=inner.get("model"), metadata=inner.get("metadata"),
                                          created_after=inner.get("created_after"),
                                          created_before=inner.get("created_before"))
            config_metadata = record["data_source_config"].get("metadata")
            records = [r for r in records if matches(r["completion"].get("metadata"), config_metadata or {})]
            rows = [_stored_row(r) for r in records[: inner.get("limit") or MAX_ROWS]]
        else:  # responses
            rows = [_response_row(r) for r in self.store.list_responses()
                    if _response_wanted(r["response"], inner)]
        if not rows:
            raise APIError(400, "the data source has no rows", code="empty_data_source")
        _check_rows(record, rows, "data_source.source", kind)
        return rows

    def _file_rows(self, file_id: str) -> list[dict]:
        if self.store.get_file(file_id) is None:
            raise APIError(400, f"the file {file_id} was deleted", code="file_not_found")
        rows = []
        text = self.store.file_path(file_id).read_bytes().decode("utf-8", errors="replace")
        for line_no, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = parse_json(line)
            except APIError as e:
                raise APIError(400, f"{file_id} line {line_no}: {e.message}", code="invalid_file") from None
            if not isinstance(value, dict):
                raise APIError(400, f"{file_id} line {line_no}: each line is a JSON object (the row's item, or "
                                    '{"item": ..., "sample": ...})', code="invalid_file")
            rows.append(value if isinstance(value.get("item"), dict) else {"item": value})
            if len(rows) > MAX_ROWS:
                raise APIError(400, f"{file_id}: more than {MAX_ROWS} rows", code="invalid_file")
        return rows

    def _sample(self, source: dict, rows: list[dict]) -> list:
        """For every row, a function giving (sample namespace, the output item's ``sample``, usage).
        Model answers are requested for every row at once (the engine batches them)."""
        kind = source["type"]
        if kind == "jsonl" or (source["source"]["type"] in ("stored_completions", "responses")
                               and source.get("model") is None):
            return [lambda row=row: _given_sample(row) for row in rows]
        params = source.get("sampling_params") or {}
        settings = {"temperature": params.get("temperature", 1.0), "top_p": params.get("top_p", 1.0),
                    "seed": params.get("seed", DEFAULT_SEED)}
        out = []
        if kind == "completions":
            for row in rows:
                messages = _input_messages(source, row)
                body = {"model": source["model"], "messages": messages, **settings}
                for key in ("max_completion_tokens", "response_format", "tools"):
                    if params.get(key) is not None:
                        body[key] = params[key]
                out.append(self._completion(body, messages, settings, params))
            return out
        pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="ftkit-eval-responses")
        for row in rows:
            messages = _input_messages(source, row)
            body = {"model": source["model"], "input": messages, "store": False,
                    "temperature": settings["temperature"], "top_p": settings["top_p"]}
            if params.get("max_completion_tokens") is not None:
                body["max_output_tokens"] = params["max_completion_tokens"]
            for key in ("text", "tools"):
                if params.get(key) is not None:
                    body[key] = params[key]
            out.append(self._response(pool, body, messages, settings, params))
        pool.shutdown(wait=False)
        return out

    def _completion(self, body: dict, messages: list[dict], settings: dict, params: dict):
        shown = _shown(messages, body["model"], settings, params)
        try:
            call = self.chat.prepare(body)
            future = self.chat.submit(call)
        except APIError as e:
            refused = (e.code or "invalid_request", e.message)
            return lambda: _failed(shown, *refused)

        def result():
            try:
                completion = response(call, future.result())
            except Exception as e:  # noqa: BLE001 -- this row's error, not the run's
                return _failed(shown, "server_error", f"{type(e).__name__}: {e}")
            choice = completion["choices"][0]
            sample = graders.build_sample(choice)
            sample["model"] = completion["model"]
            shown.update(output=[{"role": "assistant", "content": choice["message"]["content"] or ""}],
                         finish_reason=choice["finish_reason"], max_completion_tokens=call.request.max_tokens,
                         usage=_usage(completion["usage"]))
            return sample, shown, completion["usage"]

        return result

    def _response(self, pool: ThreadPoolExecutor, body: dict, messages: list[dict], settings: dict, params: dict):
        shown = _shown(messages, body["model"], settings, params)
        try:
            call = self.responses.prepare(body)
        except APIError as e:
            refused = (e.code or "invalid_request", e.message)
            return lambda: _failed(shown, *refused)
        future = pool.submit(asyncio.run, self.responses.create(call))

        def result():
            try:
                answer = future.result()
            except Exception as e:  # noqa: BLE001
                return _failed(shown, "server_error", f"{type(e).__name__}: {e}")
            text = "".join(part.get("text", "") for item in answer["output"] if item.get("type") == "message"
                           for part in item.get("content", []))
            tools = [item for item in answer["output"] if item.get("type") == "function_call"]
            finish = "length" if answer.get("status") == "incomplete" else "tool_calls" if tools else "stop"
            sample = graders.build_sample({"output_text": text, "output_tools": tools, "choices": [
                {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}]})
            sample["model"] = answer["model"]
            used = answer.get("usage") or {}
            usage = {"prompt_tokens": used.get("input_tokens", 0), "completion_tokens": used.get("output_tokens", 0),
                     "total_tokens": used.get("total_tokens", 0)}
            shown.update(output=[{"role": "assistant", "content": text}], finish_reason=finish,
                         max_completion_tokens=call.request.max_tokens, usage=_usage(usage))
            return sample, shown, usage

        return result


# -- helpers --------------------------------------------------------------------------------------


def _empty_results() -> dict:
    return {"result_counts": {"total": 0, "errored": 0, "failed": 0, "passed": 0}, "per_model_usage": [],
            "per_testing_criteria_results": []}


class _Tally:
    """What a run reports as its rows finish."""

    def __init__(self, names: list[str]) -> None:
        self.counts = {"total": 0, "errored": 0, "failed": 0, "passed": 0}
        self.criteria = {name: {"testing_criteria": name, "passed": 0, "failed": 0} for name in names}
        self.usage: dict[str, dict] = {}

    def row(self, passed: bool, errored: bool) -> None:
        self.counts["total"] += 1
        self.counts["errored" if errored else "passed" if passed else "failed"] += 1

    def grade(self, name: str, passed: bool) -> None:
        self.criteria[name]["passed" if passed else "failed"] += 1

    def use(self, model: str, usage: dict) -> None:
        into = self.usage.setdefault(model, {"model_name": model, "invocation_count": 0, "prompt_tokens": 0,
                                             "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0})
        into["invocation_count"] += 1
        for key in ("prompt_tokens", "completion_tokens", "total_tokens"):
            into[key] += int(usage.get(key) or 0)
        details = usage.get("prompt_tokens_details") or {}
        into["cached_tokens"] += int(usage.get("cached_tokens") or details.get("cached_tokens") or 0)

    def fields(self) -> dict:
        return {"result_counts": dict(self.counts), "per_model_usage": list(self.usage.values()),
                "per_testing_criteria_results": list(self.criteria.values())}


def _split_threshold(spec: dict) -> tuple[dict, float | None]:
    grader = {k: v for k, v in spec.items() if k != "pass_threshold"}
    if spec.get("type") in ("text_similarity", "score_model"):
        grader = dict(spec)  # these graders read pass_threshold themselves
    return grader, spec.get("pass_threshold")


def _threshold(spec: dict) -> float:
    if spec.get("pass_threshold") is not None:
        return float(spec["pass_threshold"])
    if spec["type"] == "score_model":
        return float((spec.get("range") or [0, 1])[1])
    return 1.0


def _check_schema(schema, param: str) -> None:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    if not isinstance(schema, dict):
        raise APIError(400, f"Invalid '{param}': a JSON schema object.", param=param, code="invalid_value")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise APIError(400, f"Invalid '{param}': not a valid JSON schema: {e.message[:200]}", param=param,
                       code="invalid_value") from None


def _check_rows(record: dict, rows: list[dict], param: str, kind: str) -> None:
    """Every row's ``item`` matches the eval's item schema; a ``jsonl`` row carries its ``sample``."""
    from jsonschema import Draft202012Validator

    config = record["data_source_config"]
    item_schema = config["schema"]["properties"]["item"] if config["type"] == "custom" else None
    validator = Draft202012Validator(item_schema) if item_schema is not None else None
    for i, row in enumerate(rows):
        where = f"{param}[{i}]"
        if not isinstance(row.get("item"), dict):
            raise APIError(400, f"Invalid '{where}.item': a JSON object.", param=f"{where}.item", code="invalid_value")
        if validator is not None:
            errors = sorted(validator.iter_errors(row["item"]), key=lambda e: list(e.absolute_path))
            if errors:
                error = errors[0]
                steps = list(error.absolute_path)
                if error.validator == "required":  # name the missing field itself
                    steps += [next(n for n in error.validator_value if n not in error.instance)]
                path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in steps)
                raise APIError(400, f"Invalid '{where}.item{path}': it does not match the eval's item_schema: "
                                    f"{error.message[:200]}", param=f"{where}.item{path}", code="invalid_value")
        if kind == "jsonl" and row.get("sample") is None:
            raise APIError(400, f"Missing '{where}.sample': a jsonl data source gives each row's answer "
                                "(a completions or responses data source asks a model instead).",
                           param=f"{where}.sample", code="missing_required_parameter")


def _texts(content, param: str) -> list[str]:
    parts = content if isinstance(content, list) else [content]
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif isinstance(part, dict) and part.get("type") in ("input_text", "output_text") and isinstance(
                part.get("text"), str):
            out.append(part["text"])
        else:
            raise unsupported_value(param, part, "text, or input_text / output_text parts (the local models read text)")
    return out


def _input_messages(source: dict, row: dict) -> list[dict]:
    """The chat messages for one row: the template filled from ``item`` (and ``sample``), the
    referenced list, or a stored completion's own input."""
    spec = source.get("input_messages")
    sample = graders.build_sample(row.get("sample")) if row.get("sample") is not None else {}
    if spec is None:
        return [dict(m) for m in row["item"]["input"]]
    if spec["type"] == "item_reference":
        value = row["item"]
        for step in spec["item_reference"].split(".")[1:]:
            value = value.get(step) if isinstance(value, dict) else None
        if not isinstance(value, list):
            raise APIError(400, f"{spec['item_reference']} is not a list of messages in this row",
                           code="invalid_item_reference")
        return [{"role": m.get("role", "user"), "content": m.get("content")} for m in value]
    messages = []
    for i, message in enumerate(spec["template"]):
        param = f"data_source.input_messages.template[{i}].content"
        try:
            text = "".join(templates.render(t, sample, row["item"]) for t in _texts(message.get("content"), param))
        except templates.TemplateError as e:
            raise APIError(400, f"{param}: {e}", code="invalid_template") from None
        messages.append({"role": message.get("role", "user"), "content": text})
    return messages


def _shown(messages: list[dict], model: str, settings: dict, params: dict) -> dict:
    """The output item's ``sample`` before the answer is known."""
    return {"input": [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str)
                       else json.dumps(m["content"])} for m in messages],
            "output": [], "finish_reason": "", "model": model,
            "usage": {"total_tokens": 0, "completion_tokens": 0, "prompt_tokens": 0, "cached_tokens": 0},
            "error": None, "temperature": settings["temperature"],
            "max_completion_tokens": params.get("max_completion_tokens") or 0, "top_p": settings["top_p"],
            "seed": settings["seed"]}


def _failed(shown: dict, code: str, message: str):
    shown["error"] = {"code": code, "message": message}
    return graders.build_sample(""), shown, None


def _usage(usage: dict) -> dict:
    details = usage.get("prompt_tokens_details") or {}
    return {"total_tokens": int(usage.get("total_tokens") or 0),
            "completion_tokens": int(usage.get("completion_tokens") or 0),
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "cached_tokens": int(details.get("cached_tokens") or 0)}


def _given_sample(row: dict):
    """A row that brings its own answer (jsonl, or a stored completion graded as it was)."""
    sample = row["sample"]
    namespace = graders.build_sample(sample)
    if isinstance(sample, dict) and sample.get("model"):
        namespace["model"] = sample["model"]
    text = namespace.get("output_text") or ""
    choice = (namespace.get("choices") or [{}])[0]
    shown = {"input": [{"role": m.get("role", "user"), "content": m.get("content") if isinstance(m.get("content"), str)
                        else json.dumps(m.get("content"))} for m in (row["item"].get("input") or [])
                       if isinstance(m, dict)],
             "output": [{"role": "assistant", "content": text}], "finish_reason": choice.get("finish_reason") or "stop",
             "model": namespace.get("model") or "",
             "usage": {"total_tokens": 0, "completion_tokens": 0, "prompt_tokens": 0, "cached_tokens": 0},
             "error": None, "temperature": 1.0, "max_completion_tokens": 0, "top_p": 1.0, "seed": DEFAULT_SEED}
    return namespace, shown, None


def _stored_row(record: dict) -> dict:
    completion = record["completion"]
    choice = completion["choices"][0]
    item = {"input": record["request"].get("messages") or [], "model": completion["model"],
            "metadata": completion.get("metadata"), "id": completion["id"]}
    sample = {"model": completion["model"], "choices": completion["choices"],
              "output_text": choice["message"].get("content") or "",
              "output_tools": choice["message"].get("tool_calls") or []}
    return {"item": item, "sample": sample}


def _response_wanted(answer: dict, source: dict) -> bool:
    if source.get("model") and answer.get("model") != source["model"]:
        return False
    if source.get("metadata") and not matches(answer.get("metadata"), source["metadata"]):
        return False
    if source.get("created_after") is not None and answer["created_at"] < source["created_after"]:
        return False
    if source.get("created_before") is not None and answer["created_at"] > source["created_before"]:
        return False
    search = source.get("instructions_search")
    return not search or search.lower() in (answer.get("instructions") or "").lower()


def _response_row(record: dict) -> dict:
    answer = record["response"]
    messages = []
    for item in record.get("input_items") or []:
        if item.get("type", "message") == "message":
            content = item.get("content")
            text = content if isinstance(content, str) else "".join(
                p.get("text", "") for p in content or [] if isinstance(p, dict))
            messages.append({"role": item.get("role", "user"), "content": text})
    text = "".join(part.get("text", "") for out in answer.get("output", []) if out.get("type") == "message"
                   for part in out.get("content", []))
    item = {"input": messages, "model": answer.get("model"), "metadata": answer.get("metadata"), "id": answer["id"]}
    sample = {"model": answer.get("model"), "output_text": text,
              "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]}
    return {"item": item, "sample": sample}
