"""The Batch API (``/v1/batches``): run a file of chat requests through the engine in bulk.

Input: a file of purpose ``batch`` whose lines are ``{"custom_id", "method": "POST",
"url": "/v1/chat/completions", "body": {...}}``. All lines go to the engine at once, so they are
decoded in large batches; results land in an output file (purpose ``batch_output``) and failed
lines in an error file, with the hosted line shapes. Statuses: ``validating`` → ``in_progress`` →
``finalizing`` → ``completed`` (or ``failed``, ``cancelling`` → ``cancelled``).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time

from ..api.request_check import check_body, parse_json
from ..api.wire import APIError, after_cursor, batch_object, not_found  # noqa: F401 -- batch_object: kept importable
from ..store import Store, new_id, valid_id
from .chat import ChatService, response

ENDPOINT = "/v1/chat/completions"
COMPLETION_WINDOWS = ("24h",)


class BatchRunner:
    """Runs batches in a background thread; each line goes through the chat service (the same
    request checks, model lookup, context and constraint checks as ``POST /v1/chat/completions``)."""

    def __init__(self, store: Store, chat: ChatService, *, log=print) -> None:
        self.store = store
        self.chat = chat
        self.log = log
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        for batch in self.store.list_batches():  # cut off by a restart: run again from the input file
            if batch["status"] in ("in_progress", "finalizing"):
                batch["status"] = "validating"
                self.store.save_batch(batch)
            elif batch["status"] == "cancelling":
                self._set(batch, "cancelled")
        self._thread = threading.Thread(target=self._loop, name="ftkit-batches", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=30)

    # -- API ------------------------------------------------------------------------------------

    def create(self, body: dict) -> dict:
        file_id = body.get("input_file_id")
        if body.get("endpoint") != ENDPOINT:
            raise APIError(400, f"The local backend runs batches for {ENDPOINT} only", param="endpoint",
                           code="invalid_value")
        if body.get("completion_window") not in COMPLETION_WINDOWS:
            raise APIError(400, "completion_window must be '24h'", param="completion_window", code="invalid_value")
        row = self.store.get_file(file_id) if isinstance(file_id, str) and valid_id("file", file_id) else None
        if row is None:
            raise APIError(400, f"invalid input_file_id: no such file {file_id}", param="input_file_id",
                           code="invalid_input_file")
        if row["purpose"] != "batch":
            raise APIError(400, f"File {file_id} has purpose '{row['purpose']}'; batches need purpose 'batch'",
                           param="input_file_id", code="invalid_input_file")
        now = int(time.time())
        batch = {
            "id": new_id("batch", "_"), "object": "batch", "endpoint": ENDPOINT, "errors": None,
            "input_file_id": file_id, "completion_window": "24h", "status": "validating",
            "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
            "expires_at": now + 24 * 3600, "finalizing_at": None, "completed_at": None, "failed_at": None,
            "expired_at": None, "cancelling_at": None, "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": body.get("metadata"),
        }
        self.store.save_batch(batch)
        self._wake.set()
        return batch

    def get(self, batch_id: str) -> dict:
        batch = self.store.get_batch(batch_id) if valid_id("batch", batch_id) else None
        if batch is None:
            raise not_found("batch", batch_id, "batch_id")
        return batch

    def list(self, *, after: str | None, limit: int) -> tuple[list[dict], bool]:
        return after_cursor(self.store.list_batches(), after, limit)

    def cancel(self, batch_id: str) -> dict:
        batch = self.get(batch_id)
        if batch["status"] not in ("validating", "in_progress"):
            raise APIError(400, f"Batch {batch_id} is {batch['status']}; it cannot be cancelled",
                           param="batch_id", code="batch_not_cancellable")
        return self._set(batch, "cancelling")

    # -- running --------------------------------------------------------------------------------

    def _set(self, batch: dict, status: str, **fields) -> dict:
        batch.update(fields, status=status)
        stamp = {"in_progress": "in_progress_at", "finalizing": "finalizing_at", "completed": "completed_at",
                 "failed": "failed_at", "cancelling": "cancelling_at", "cancelled": "cancelled_at"}.get(status)
        if stamp:
            batch[stamp] = int(time.time())
        self.store.save_batch(batch)
        return batch

    def _loop(self) -> None:
        while not self._stop.is_set():
            for batch in self.store.list_batches()[::-1]:
                if batch["status"] == "validating":
                    try:
                        self._run(batch)
                    except Exception as e:  # a broken batch must not stop the others
                        self.log(f"batch {batch['id']} failed: {type(e).__name__}: {e}")
                        self._set(batch, "failed", errors={"object": "list", "data": [
                            {"code": "internal_error", "message": f"{type(e).__name__}: {e}", "param": None,
                             "line": None}]})
            self._wake.wait(0.5)
            self._wake.clear()

    def _parse(self, batch: dict) -> tuple[list[tuple[str, object]], list[dict]]:
        """(custom_id, checked request body or APIError) per line, and file-level errors."""
        items, errors, seen = [], [], set()
        raw = self.store.file_path(batch["input_file_id"]).read_bytes().decode("utf-8", errors="replace")
        for line_no, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entry = parse_json(line)  # bounded: a line nested 100k deep is this line's error
                if not isinstance(entry, dict):
                    raise ValueError("each line must be a JSON object")
                custom_id = entry["custom_id"]
                if not isinstance(custom_id, str):
                    raise ValueError("custom_id must be a string")
                if entry.get("url") != ENDPOINT or entry.get("method", "POST") != "POST":
                    raise ValueError(f"url must be {ENDPOINT} with method POST")
                if custom_id in seen:
                    raise ValueError(f"duplicate custom_id {custom_id!r}")
                seen.add(custom_id)
            except (ValueError, KeyError, TypeError, APIError) as e:
                message = e.message if isinstance(e, APIError) else str(e)
                errors.append({"code": "invalid_request", "message": f"line {line_no}: {message}", "param": None,
                               "line": line_no})
                continue
            try:
                body = check_body("createChatCompletion", entry.get("body"))
                if body.get("stream"):
                    raise APIError(400, "Invalid value for 'stream': batch requests cannot stream.", param="stream",
                                   code="invalid_value")
                items.append((custom_id, body))
            except APIError as e:
                items.append((custom_id, e))
        return items, errors

    def _run(self, batch: dict) -> None:
        items, errors = self._parse(batch)
        if errors or not items:
            self._set(batch, "failed", errors={"object": "list", "data": errors or [
                {"code": "empty_file", "message": "the input file has no requests", "param": None, "line": None}]})
            return
        batch["request_counts"] = {"total": len(items), "completed": 0, "failed": 0}
        self._set(batch, "in_progress")
        futures = []
        for custom_id, body in items:  # all lines go to the engine at once: decoded in large batches
            try:
                if isinstance(body, APIError):
                    raise body
                call = self.chat.prepare(body)
            except APIError as e:
                futures.append((custom_id, e, None))
                continue
            futures.append((custom_id, call, self.chat.submit(call)))
        outputs, failures = [], []
        for custom_id, call, future in futures:
            if self.store.get_batch(batch["id"])["status"] == "cancelling":
                break
            line_id = "batch_req_" + secrets.token_hex(12)
            if future is None:
                failures.append({"id": line_id, "custom_id": custom_id,
                                 "response": {"status_code": call.status, "request_id": line_id, "body": call.body()},
                                 "error": None})
                continue
            try:
                body = response(call, future.result())
            except Exception as e:
                failures.append({"id": line_id, "custom_id": custom_id, "response": None,
                                 "error": {"code": "server_error", "message": f"{type(e).__name__}: {e}"}})
                continue
            outputs.append({"id": line_id, "custom_id": custom_id,
                            "response": {"status_code": 200, "request_id": line_id, "body": body}, "error": None})
            batch["request_counts"]["completed"] = len(outputs)
            if len(outputs) % 25 == 0:
                self.store.save_batch(batch)
        batch = {**self.store.get_batch(batch["id"]), "request_counts": batch["request_counts"]}
        if batch["status"] == "cancelling":
            self._set(batch, "cancelled")
            return
        batch["request_counts"].update(completed=len(outputs), failed=len(failures))
        self._set(batch, "finalizing")
        fields = {"output_file_id": self._write(outputs, "batch_output.jsonl") if outputs else None,
                  "error_file_id": self._write(failures, "batch_errors.jsonl") if failures else None}
        self._set(batch, "completed", **fields)

    def _write(self, lines: list[dict], filename: str) -> str:
        content = "".join(json.dumps(line) + "\n" for line in lines).encode()
        file_id = new_id("file")
        self.store.file_path(file_id).write_bytes(content)
        self.store.add_file(file_id, filename=filename, purpose="batch_output", size=len(content),
                            sha256=hashlib.sha256(content).hexdigest())
        return file_id
