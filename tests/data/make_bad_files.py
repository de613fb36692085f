"""Writes tests/data/bad/: malformed fine-tuning files, each with the codes it must produce.

    python tests/data/make_bad_files.py

Every file is ten good examples with one kind of mistake planted (or a whole-file problem).
``expected.json`` maps each file to the codes the validator must report and on which lines
(``null`` = the whole file), the model to validate for when it matters, and ``options`` for
``validate()`` when the case needs one (a small ``max_line_bytes``, so that the over-long line
stays a small file; the CLI's ``--max-line-mb`` is the same limit in MB). The files are
committed; this script documents how each was made and regenerates them byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent / "bad"
SYSTEM = {"role": "system", "content": "Triage the ticket. Reply with JSON."}


def good(i: int) -> dict:
    return {"messages": [SYSTEM, {"role": "user", "content": f"Ticket {i}: my invoice #{1000 + i} is wrong."},
                         {"role": "assistant", "content": json.dumps({"category": "billing", "n": i})}]}


def line(obj) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8")


def with_bad(bad_line: bytes, at: int = 3, n: int = 10) -> bytes:
    """n good examples with ``bad_line`` inserted as line ``at`` (1-based)."""
    lines = [line(good(i)) for i in range(n)]
    lines.insert(at - 1, bad_line)
    return b"\n".join(lines) + b"\n"


def msgs(*messages, **extra) -> bytes:
    return line({"messages": list(messages), **extra})


U = {"role": "user", "content": "Where is my parcel?"}
A = {"role": "assistant", "content": "{\"category\": \"shipping\"}"}
TOOLS = [{"type": "function", "function": {"name": "get_order", "description": "Look up an order",
                                           "parameters": {"type": "object", "properties": {"id": {"type": "string"}}}}}]


def call(args) -> dict:
    return {"id": "call_1", "type": "function", "function": {"name": "get_order", "arguments": args}}


def dpo(**override) -> dict:
    ex = {"input": {"messages": [SYSTEM, U]},
          "preferred_output": [{"role": "assistant", "content": "It ships today."}],
          "non_preferred_output": [{"role": "assistant", "content": "Dunno."}]}
    ex.update(override)
    return ex


def dpo_file(bad: dict, at: int = 3) -> bytes:
    lines = [line(dpo(preferred_output=[{"role": "assistant", "content": f"It ships today ({i})."}]))
             for i in range(10)]
    lines.insert(at - 1, line(bad))
    return b"\n".join(lines) + b"\n"


# name -> (content, {code: [lines] or None}, model[, options for validate()])
CASES: dict[str, tuple] = {
    "01_truncated_json": (with_bad(line(good(99))[:-7]), {"invalid_json": [3]}, None),
    "02_latin1_byte": (with_bad(line(good(99)).replace(b"invoice", b"factur\xe9")), {"invalid_utf8": [3]}, None),
    "03_bom": (b"\xef\xbb\xbf" + with_bad(line(good(99))), {"utf8_bom": [1]}, None),
    "04_blank_line": (with_bad(b"   "), {"blank_line": [3]}, None),
    "05_empty_file": (b"", {"empty_file": None}, None),
    "06_only_blank_lines": (b"\n\n  \n", {"empty_file": None, "blank_line": [1, 2, 3]}, None),
    "07_too_few_examples": (b"\n".join(line(good(i)) for i in range(5)) + b"\n", {"too_few_examples": None}, None),
    "08_array_not_object": (with_bad(b"[1, 2, 3]"), {"data_type": [3]}, None),
    "09_string_not_object": (with_bad(b'"just text"'), {"data_type": [3]}, None),
    "10_no_messages_key": (with_bad(line({"conversation": [U, A]})), {"missing_messages_list": [3]}, None),
    "11_empty_messages": (with_bad(msgs()), {"missing_messages_list": [3]}, None),
    "12_messages_not_a_list": (with_bad(line({"messages": "hello"})), {"missing_messages_list": [3]}, None),
    "13_message_without_role": (with_bad(msgs({"content": "hi"}, A)), {"message_missing_key": [3]}, None),
    "14_user_without_content": (with_bad(msgs({"role": "user"}, A)), {"message_missing_key": [3]}, None),
    "15_text_instead_of_content": (with_bad(msgs({"role": "user", "text": "hi"}, A)),
                                   {"message_unrecognized_key": [3], "message_missing_key": [3]}, None),
    "16_misspelled_role": (with_bad(msgs(U, {"role": "assistent", "content": "x"})),
                           {"unrecognized_role": [3], "example_missing_assistant_message": [3]}, None),
    "17_null_user_content": (with_bad(msgs({"role": "user", "content": None}, A)), {"missing_content": [3]}, None),
    "18_number_content": (with_bad(msgs({"role": "user", "content": 42}, A)), {"missing_content": [3]}, None),
    "19_no_assistant": (with_bad(msgs(SYSTEM, U)), {"example_missing_assistant_message": [3]}, None),
    "20_weight_two": (with_bad(msgs(U, {**A, "weight": 2})), {"invalid_weight": [3]}, None),
    "21_weight_true": (with_bad(msgs(U, {**A, "weight": True})), {"invalid_weight": [3]}, None),
    "22_weight_on_user": (with_bad(msgs({**U, "weight": 1}, A)), {"weight_not_on_assistant": [3]}, None),
    "23_arguments_not_a_string": (with_bad(msgs(U, {"role": "assistant", "content": None,
                                                    "tool_calls": [call({"id": "1"})]}, tools=TOOLS)),
                                  {"invalid_tool_calls": [3]}, None),
    "24_arguments_not_json": (with_bad(msgs(U, {"role": "assistant", "tool_calls": [call("{id: 1")]}, tools=TOOLS)),
                              {"invalid_tool_calls": [3]}, None),
    "25_tool_calls_on_user": (with_bad(msgs({**U, "tool_calls": [call('{"id": "1"}')]}, A)),
                              {"invalid_tool_calls": [3]}, None),
    "26_tools_not_a_list": (with_bad(msgs(U, A, tools={"name": "get_order"})), {"invalid_tools": [3]}, None),
    "27_tool_without_name": (with_bad(msgs(U, A, tools=[{"type": "function", "function": {"description": "x"}}])),
                             {"invalid_tools": [3]}, None),
    "28_tool_message_without_id": (with_bad(msgs(U, {"role": "assistant", "tool_calls": [call('{"id": "1"}')]},
                                                 {"role": "tool", "content": "{}"}, A, tools=TOOLS)),
                                   {"message_missing_key": [3]}, None),
    "29_legacy_prompt_completion": (with_bad(line({"prompt": "Ticket: refund?\n\n###\n\n", "completion": " billing END"})),
                                    {"legacy_prompt_completion": [3]}, None),
    "30_dpo_missing_rejected": (dpo_file({"input": {"messages": [U]}, "preferred_output": [A]}),
                                {"preference_missing_key": [3]}, None),
    "31_dpo_two_outputs": (dpo_file(dpo(preferred_output=[A, A])), {"preference_invalid_output": [3]}, None),
    "32_dpo_input_ends_with_assistant": (dpo_file(dpo(input={"messages": [U, A]})),
                                         {"preference_invalid_input": [3]}, None),
    "33_mixed_sft_and_dpo": (with_bad(line(dpo())), {"mixed_example_types": [3]}, None),
    "34_audio_content_part": (with_bad(msgs({"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}, A)),
                              {"invalid_content": [3]}, None),
    "35_image_from_assistant": (with_bad(msgs(U, {"role": "assistant", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/x.png"}}]})), {"invalid_content": [3]}, None),
    "36_duplicate_example": (with_bad(line(good(0))), {"duplicate_example": [3]}, None),
    "37_too_long_for_gpt35_0613": (with_bad(msgs(SYSTEM, {"role": "user", "content": "word " * 4200}, A)),
                                   {"example_too_long": [3]}, "gpt-3.5-turbo-0613"),
    "38_answer_far_longer": (with_bad(msgs(SYSTEM, U, {"role": "assistant", "content": "Let me explain. " * 60})),
                             {"assistant_message_too_long": [3]}, None),
    "39_empty_answer": (with_bad(msgs(SYSTEM, U, {"role": "assistant", "content": ""})),
                        {"empty_assistant_message": [3]}, None),
    "40_every_answer_weight_zero": (with_bad(msgs(SYSTEM, U, {**A, "weight": 0})), {"no_trained_messages": [3]}, None),
    "41_unknown_tool_call_id": (with_bad(msgs(U, {"role": "assistant", "tool_calls": [call('{"id": "1"}')]},
                                              {"role": "tool", "tool_call_id": "call_9", "content": "{}"}, A, tools=TOOLS)),
                                {"unknown_tool_call_id": [3]}, None),
    "42_unknown_top_level_key": (with_bad(msgs(SYSTEM, U, A, notes="internal")), {"example_unrecognized_key": [3]}, None),
    "43_name_not_a_string": (with_bad(msgs(SYSTEM, {**U, "name": 7}, A)), {"invalid_field": [3]}, None),
    "44_dpo_identical_outputs": (dpo_file(dpo(non_preferred_output=[{"role": "assistant", "content": "It ships today."}])),
                                 {"preference_identical_outputs": [3]}, None),
    "45_no_system_message": (with_bad(msgs(U, A)), {"missing_system_message": [3]}, None),
    # 1,000 levels: past what json.loads survives with Python's recursion limit (issue 12)
    "46_nested_too_deep": (with_bad(b'{"messages": ' + b"[" * 1000 + b"]" * 1000 + b"}"),
                           {"nesting_too_deep": [3]}, None),
    # a 3 kB line against a 2 kB limit (the default, 16 MB, would make a large file)
    "47_line_too_long": (with_bad(msgs(SYSTEM, {"role": "user", "content": "word " * 600}, A)),
                         {"line_too_long": [3]}, None, {"max_line_bytes": 2000}),
}


def main() -> None:
    HERE.mkdir(exist_ok=True)
    for old in HERE.glob("*.jsonl"):
        old.unlink()
    expected = {}
    for name, (content, codes, model, *options) in CASES.items():
        (HERE / f"{name}.jsonl").write_bytes(content)
        expected[f"{name}.jsonl"] = {"codes": codes, "model": model, **({"options": options[0]} if options else {})}
    (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {len(CASES)} files to {HERE}")


if __name__ == "__main__":
    main()
