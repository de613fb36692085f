"""ftkit.validation: every code on a crafted file, the CLI's exit codes, and what must be accepted."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ftkit import data
from ftkit.validation import CODES, InvalidTrainingFile, validate

BAD = Path(__file__).parent / "data" / "bad"
EXPECTED = json.loads((BAD / "expected.json").read_text())


def test_the_corpus_is_large_and_covers_every_code():
    assert len(EXPECTED) >= 30
    covered = {code for case in EXPECTED.values() for code in case["codes"]}
    assert covered == set(CODES), f"codes without a crafted file: {set(CODES) - covered}"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_file_reports_its_codes_on_its_lines(name):
    case = EXPECTED[name]
    report = validate(BAD / name, model=case["model"], **case.get("options", {}))
    got: dict[str, set] = {}
    for p in report.problems:
        got.setdefault(p.code, set()).add(p.line)
    for code, lines in case["codes"].items():
        assert code in got, f"{name}: expected {code}, got {sorted(got)}"
        assert got[code] == (set(lines) if lines is not None else {None}), (name, code, got[code])
    unexpected_errors = {p.code for p in report.errors} - set(case["codes"])
    assert not unexpected_errors, f"{name}: unexpected errors {unexpected_errors}"
    assert report.ok == (not any(CODES[c][0] == "error" for c in case["codes"]))


def run_cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ftkit", *args], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_cli_names_line_and_code_without_traceback(name):
    case = EXPECTED[name]
    args = ["validate", str(BAD / name)] + (["--model", case["model"]] if case["model"] else [])
    if "max_line_bytes" in case.get("options", {}):
        args += ["--max-line-mb", str(case["options"]["max_line_bytes"] / 1e6)]
    result = run_cli(*args)
    has_errors = any(CODES[c][0] == "error" for c in case["codes"])
    assert result.returncode == (1 if has_errors else 0), result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    for code, lines in case["codes"].items():
        assert code in result.stdout
        if lines:
            assert f"line {lines[0]}" in result.stdout


def test_cli_exit_codes_for_valid_and_unusable_input(tmp_path):
    good = tmp_path / "good.jsonl"
    data.write_jsonl([_example(i) for i in range(12)], good)
    ok = run_cli("validate", str(good), "--model", "gpt-4o-mini-2024-07-18")
    assert ok.returncode == 0 and "OK" in ok.stdout and "o200k_base" in ok.stdout
    for args in (["validate", str(tmp_path / "missing.jsonl")], ["validate", str(tmp_path)],
                 ["validate", str(good), "--model", "not-a-model"], ["frobnicate"]):
        result = run_cli(*args)
        assert result.returncode == 2, args
        assert "Traceback" not in result.stdout + result.stderr
    as_json = run_cli("validate", str(BAD / "16_misspelled_role.jsonl"), "--json")
    report = json.loads(as_json.stdout)
    assert as_json.returncode == 1 and report["ok"] is False
    assert any(p["code"] == "unrecognized_role" and p["line"] == 3 for p in report["problems"])


def test_misspelled_role_gets_a_suggestion():
    report = validate(BAD / "16_misspelled_role.jsonl")
    problem = next(p for p in report.problems if p.code == "unrecognized_role")
    assert problem.field == "messages[1].role" and "did you mean 'assistant'" in problem.message


def test_validation_never_changes_the_input():
    for name in ("02_latin1_byte.jsonl", "03_bom.jsonl", "01_truncated_json.jsonl"):
        before = hashlib.sha256((BAD / name).read_bytes()).hexdigest()
        validate(BAD / name)
        assert hashlib.sha256((BAD / name).read_bytes()).hexdigest() == before


def test_lines_after_a_bad_line_are_still_checked():
    report = validate(BAD / "02_latin1_byte.jsonl")
    assert report.n_examples == 11 and len(report.token_counts()) == 10  # every good line counted


def _example(i, **assistant_extra):
    return data.chat_example([data.system("Triage."), data.user(f"ticket {i}"),
                              {"role": "assistant", "content": f'{{"n": {i}}}', **assistant_extra}])


# What the cookbook recipe gets wrong must be accepted.


def test_valid_tool_calling_data_is_accepted():  # openai-cookbook #812
    tools = [data.function_tool("get_order", "Look up an order", {"type": "object",
                                                                   "properties": {"id": {"type": "string"}}})]
    examples = []
    for i in range(10):
        first, second = data.tool_call("get_order", {"id": str(i)}), data.tool_call("get_order", {"id": f"{i}b"})
        examples.append(data.chat_example([
            data.system("Support bot."), data.user(f"Where are orders {i} and {i}b?"),
            data.assistant(None, tool_calls=[first, second]),
            data.tool({"status": "shipped"}, first["id"]), data.tool({"status": "packed"}, second["id"]),
            data.assistant(f"Order {i} shipped; {i}b is packed."),
        ], tools=tools, parallel_tool_calls=True))
    report = validate(examples, model="gpt-4.1-mini-2025-04-14")
    assert report.ok and not report.problems, report.summary()
    assert report.token_counts()["trained"].min() > 0


def test_weight_refusal_and_function_call_are_accepted():  # openai-cookbook #1270
    examples = [data.chat_example([data.system("s"), data.user("draft it"), data.assistant("draft", weight=0),
                                   data.user("better"), data.assistant("final", weight=1)]) for _ in range(5)]
    examples += [data.chat_example([data.system("s"), data.user(f"do a bad thing {i}"),
                                    data.assistant(None, refusal="I can't help with that.")]) for i in range(3)]
    examples += [{"messages": [data.system("s"), data.user(f"weather {i}"),
                               {"role": "assistant", "content": None,
                                "function_call": {"name": "weather", "arguments": "{}"}}],
                  "functions": [{"name": "weather", "parameters": {"type": "object"}}]} for i in range(2)]
    report = validate(examples)
    assert not report.errors, report.summary()
    weighted = report.token_counts().iloc[0]
    assert weighted["trained"] == 1  # only "final" is learned; the weight-0 draft is not


def test_crlf_line_endings_and_special_token_text(tmp_path):
    path = tmp_path / "crlf.jsonl"
    lines = [json.dumps(_example(i)) for i in range(9)]
    lines.append(json.dumps(data.chat_example([data.system("s"), data.user("text with <|endoftext|> inside"),
                                               data.assistant("ok <|im_end|>")])))
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode())
    report = validate(path, model="gpt-4o-mini")
    assert report.ok and report.n_examples == 10 and not report.problems, report.summary()


def test_report_as_tables_and_text():
    report = validate(BAD / "16_misspelled_role.jsonl")
    frame = report.to_dataframe()
    assert list(frame.columns) == ["line", "severity", "code", "field", "message"]
    assert (frame["line"] == 3).any()
    table = report.summary_table()
    assert table.iloc[0]["severity"] == "error" and 3 in table.iloc[0]["first_lines"]
    assert "INVALID" in report.summary() and "line 3" in report.summary()
    with pytest.raises(InvalidTrainingFile, match="unrecognized_role"):
        report.raise_for_errors()


def test_too_long_uses_the_models_limit_and_billing_caps_it():
    report = validate(BAD / "37_too_long_for_gpt35_0613.jsonl", model="gpt-3.5-turbo-0613")
    assert report.max_example_tokens == 4096
    long_tokens = int(report.token_counts().query("line == 3")["total"].iloc[0])
    assert long_tokens > 4096
    assert report.billed_tokens(3) == (report.total_token_count - long_tokens + 4096) * 3
    # gpt-4o-mini allows 65,536 tokens per example: the same file has no such warning
    assert "example_too_long" not in validate(BAD / "37_too_long_for_gpt35_0613.jsonl", model="gpt-4o-mini").codes()


def test_records_and_dataframes_are_validated_too():
    import pandas as pd

    records = [_example(i) for i in range(10)] + [{"messages": [{"role": "user", "content": "hi"}]}]
    report = validate(records)
    assert report.source == "<records>"
    assert [(p.line, p.code) for p in report.errors] == [(11, "example_missing_assistant_message")]
    assert validate(pd.DataFrame(records)).errors[0].line == 11


def test_fast_parser_accepts_exactly_what_json_accepts(tmp_path):
    """Lines go through orjson first and through json when orjson refuses them: the standard
    library decides what is valid (NaN, 64-bit overflow), and gives the messages."""
    ok = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}
    lines = [json.dumps(ok)] * 10
    lines[2] = json.dumps({**ok, "extra": float("nan")})  # json writes NaN; orjson refuses it
    lines[3] = json.dumps({**ok, "big": 2**80})  # beyond orjson's integers
    lines[4] = '{"messages": [}'
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = validate(path)
    assert report.n_examples == 10
    bad_json = [p for p in report.problems if p.code == "invalid_json"]
    assert [p.line for p in bad_json] == [5]
    assert bad_json[0].message.startswith("Expecting value at column 15")
    assert len(report.total_tokens) == 9  # the NaN and big-integer lines were parsed and counted


# Hostile input (issue 12): over-deep and over-long lines are errors of their line, the next
# lines are still checked; what is not a regular file is refused at once; memory stays bounded.


def _good_lines(n: int) -> list[bytes]:
    return [json.dumps(_example(i)).encode() for i in range(n)]


@pytest.mark.parametrize("depth", [1_000, 100_000])
@pytest.mark.parametrize("where", ["messages", "tools", "object"])
def test_over_deep_line_is_an_error_of_that_line(tmp_path, depth, where):
    deep = {"messages": b'{"messages": ' + b"[" * depth + b"]" * depth + b"}",
            "tools": b'{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}], '
                     b'"tools": ' + b"[" * depth + b"]" * depth + b"}",
            "object": b'{"x": ' * depth + b"1" + b"}" * depth}[where]
    lines = _good_lines(12)
    lines.insert(2, deep)
    lines.insert(5, b'{"messages": [}')  # a later bad line is still found
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    report = validate(path)
    assert [(p.line, p.code) for p in report.errors] == [(3, "nesting_too_deep"), (6, "invalid_json")]
    assert f"nested {depth + (where != 'object'):,} levels deep" in report.errors[0].message
    assert len(report.token_counts()) == 12  # every good line after it was checked and counted
    if (depth, where) != (100_000, "tools"):
        return  # one CLI run is enough (each costs a process start)
    result = run_cli("validate", str(path))
    assert result.returncode == 1 and "Traceback" not in result.stderr and "internal error" not in result.stderr
    assert "nesting_too_deep" in result.stdout and "line 3" in result.stdout


def test_nesting_up_to_the_limit_is_fine_and_brackets_in_strings_do_not_count(tmp_path):
    schema: dict = {"type": "string"}
    for _ in range(40):  # a tool schema nested 80+ levels: unusual, but allowed
        schema = {"type": "object", "properties": {"inner": schema}}
    tools = [data.function_tool("deep", "d", schema)]
    examples = [data.chat_example([data.system("s"), data.user("[" * 500 + f" {i}"),
                                   data.assistant("{" * 300)], tools=tools) for i in range(10)]
    report = validate(examples)
    assert report.ok, report.summary()
    path = tmp_path / "ok.jsonl"
    data.write_jsonl(examples, path)
    assert validate(path).ok
    assert validate(path, max_depth=50).codes()["nesting_too_deep"] == 10


def test_over_deep_records_are_reported_too():
    deep: list = []
    for _ in range(5_000):
        deep = [deep]
    records = [_example(i) for i in range(10)] + [{"messages": deep}]
    report = validate(records)
    assert [(p.line, p.code) for p in report.errors] == [(11, "nesting_too_deep")]


def test_over_long_line_is_an_error_of_that_line(tmp_path):
    lines = _good_lines(11)
    lines.insert(1, json.dumps(data.chat_example([data.user("word " * 400), data.assistant("ok")])).encode())
    lines.insert(4, b"x" * 10_000)  # not even JSON: never parsed, only measured
    path = tmp_path / "long.jsonl"
    path.write_bytes(b"\r\n".join(lines))  # CRLF, and no newline after the last line
    report = validate(path, max_line_bytes=1_500)
    assert [(p.line, p.code) for p in report.errors] == [(2, "line_too_long"), (5, "line_too_long")]
    assert "10,000 bytes long; the limit is 1,500 bytes" in report.errors[1].message
    assert report.n_lines == 13 and len(report.token_counts()) == 11
    assert validate(path).codes()["line_too_long"] == 0  # under the default limit (16 MB)
    result = run_cli("validate", str(path), "--max-line-mb", "0.0015")
    assert result.returncode == 1 and "line 2" in result.stdout and "line_too_long" in result.stdout
    assert run_cli("validate", str(path), "--max-line-mb", "-1").returncode == 2


def test_a_file_without_newlines_is_read_in_bounded_memory(tmp_path):
    import tracemalloc

    path = tmp_path / "endless.jsonl"
    with open(path, "wb") as fh:  # 24 MB without a newline: more than the limit it is read with
        for _ in range(24):
            fh.write(b"[" * 1_000_000)
    tracemalloc.start()
    try:
        report = validate(path, max_line_bytes=2_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(p.line, p.code) for p in report.errors] == [(None, "too_few_examples"), (1, "line_too_long")]
    assert "24.0 MB long" in report.errors[1].message
    assert peak < 8_000_000, peak  # the limit plus small reads, never the file


@pytest.mark.parametrize("kind", ["fifo", "device", "directory", "symlink to a device"])
def test_what_is_not_a_regular_file_is_refused_at_once(tmp_path, kind):
    import os
    import time

    from ftkit.validation import UnusableInputError

    path = tmp_path / "input.jsonl"
    if kind == "fifo":
        os.mkfifo(path)  # no writer: opening it for reading would block forever
    elif kind == "device":
        path = Path("/dev/zero")  # endless, no newline
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to("/dev/zero")
    if kind in ("fifo", "device"):  # the two that hung (a hang would hit run_cli's timeout)
        result = run_cli("validate", str(path))
        assert result.returncode == 2, result.stdout + result.stderr
        assert str(path) in result.stderr and "Traceback" not in result.stderr
        assert "not a regular file" in result.stderr
    start = time.monotonic()
    with pytest.raises(UnusableInputError, match="FIFO" if kind == "fifo" else "directory" if kind == "directory"
                       else "character device"):
        validate(path)
    assert time.monotonic() - start < 30
