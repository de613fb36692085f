"""Which grammar library constrains the local engine's decoding: llguidance, xgrammar, outlines-core.

    python benchmarks/compare_grammar_libs.py [--repeats 5] [--libs llguidance,xgrammar,outlines-core]

Measured with SmolLM2-135M-Instruct's tokenizer (vocabulary 49,152), each library configured the
way the engine would use it (JSON with the separators ", " and ": ", no other whitespace):

* install: what ``pip install`` brings in (the library's own files and its required packages);
* tokenizer set-up: the one-off cost per tokenizer;
* compile: schema -> ready matcher, including the first token mask (some libraries compile lazily),
  for the course's ticket schema and a few bigger ones;
* per-token overhead: computing the next-token mask + advancing the matcher, stepping through a
  valid answer token by token (applying the mask to the logits is the engine's, the same for all);
* coverage: for each JSON Schema feature, one valid and one invalid document: "enforced" (valid
  accepted, invalid refused), "ignored" (the invalid one passes too), "refused" (compile error)
  or "wrong" (the valid one is refused).

A library that is not installed is reported as such. The table in benchmarks/README.md comes from
this script; the engine uses the winner (see ftkit/local/inference/grammar.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import time

from _common import cpu_info, save

TICKET_SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "technical", "account", "shipping", "feature_request"]},
        "urgency": {"type": "string", "enum": ["low", "medium", "high"]},
        "product": {"type": "string", "enum": ["mobile_app", "web_app", "api", "hardware"]},
    },
    "required": ["category", "urgency", "product"],
    "additionalProperties": False,
}
TICKET_DOC = {"category": "technical", "urgency": "low", "product": "api"}


def _strict_object(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


INVOICE_SCHEMA = _strict_object({
    "invoice_id": {"type": "string"},
    "customer": _strict_object({"name": {"type": "string"}, "email": {"type": ["string", "null"]},
                                "country": {"type": "string", "enum": ["DE", "FR", "GB", "US", "JP"]}}),
    "lines": {"type": "array", "items": _strict_object({
        "sku": {"type": "string"}, "quantity": {"type": "integer"}, "unit_price": {"type": "number"},
        "discount": {"anyOf": [{"type": "number"}, {"type": "null"}]}})},
    "paid": {"type": "boolean"},
    "notes": {"type": ["string", "null"]},
})
INVOICE_DOC = {"invoice_id": "INV-2041", "customer": {"name": "Ada Lovelace", "email": None, "country": "GB"},
               "lines": [{"sku": "HUB-2", "quantity": 2, "unit_price": 79.5, "discount": None},
                         {"sku": "CAM-1", "quantity": 1, "unit_price": 129.0, "discount": 10.0}],
               "paid": True, "notes": "deliver after 5pm"}

TREE_SCHEMA = {
    "$defs": {"node": _strict_object({"label": {"type": "string"},
                                      "children": {"type": "array", "items": {"$ref": "#/$defs/node"}}})},
    **_strict_object({"root": {"$ref": "#/$defs/node"}}),
}
TREE_DOC = {"root": {"label": "a", "children": [{"label": "b", "children": []},
                                                 {"label": "c", "children": [{"label": "d", "children": []}]}]}}

WIDE_SCHEMA = _strict_object({
    f"field_{i:02d}": [{"type": "string"}, {"type": "integer"}, {"type": "boolean"},
                       {"type": "string", "enum": ["x", "y", "z"]}][i % 4] for i in range(60)})
WIDE_DOC = {f"field_{i:02d}": ["text", i, True, "y"][i % 4] for i in range(60)}

BIG_ENUM_SCHEMA = _strict_object({"city": {"type": "string", "enum": [f"city_{i:03d}" for i in range(400)]},
                                  "count": {"type": "integer"}})
BIG_ENUM_DOC = {"city": "city_321", "count": 7}

SCHEMAS = {
    "tickets (3 enums)": (TICKET_SCHEMA, TICKET_DOC),
    "invoice (nested, array, nullable)": (INVOICE_SCHEMA, INVOICE_DOC),
    "tree ($defs recursion)": (TREE_SCHEMA, TREE_DOC),
    "wide (60 properties)": (WIDE_SCHEMA, WIDE_DOC),
    "enum of 400 values": (BIG_ENUM_SCHEMA, BIG_ENUM_DOC),
}


def _field(schema: dict) -> dict:
    return _strict_object({"x": schema})


#: feature -> (schema, valid document, invalid document)
FEATURES = {
    "enum": (_field({"type": "string", "enum": ["a", "b"]}), {"x": "a"}, {"x": "c"}),
    "const": (_field({"const": "fixed"}), {"x": "fixed"}, {"x": "other"}),
    "anyOf (nested)": (_field({"anyOf": [{"type": "integer"}, _strict_object({"y": {"type": "boolean"}})]}),
                       {"x": {"y": True}}, {"x": "s"}),
    "type list [string, null]": (_field({"type": ["string", "null"]}), {"x": None}, {"x": 3}),
    "$defs + $ref recursion": (TREE_SCHEMA, TREE_DOC, {"root": {"label": "a", "children": [{"label": 1}]}}),
    "additionalProperties false": (_field({"type": "integer"}), {"x": 1}, {"x": 1, "extra": 2}),
    "additionalProperties true": ({"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"],
                                   "additionalProperties": True}, {"x": 1, "extra": [1]}, {"x": "s"}),
    "optional property": ({"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}},
                           "required": ["x"], "additionalProperties": False}, {"x": 1}, {"y": 1}),
    "pattern": (_field({"type": "string", "pattern": "^[A-Z]{3}-[0-9]{2}$"}), {"x": "ABC-12"}, {"x": "abc-12"}),
    "format: date-time": (_field({"type": "string", "format": "date-time"}), {"x": "2026-11-27T10:00:00Z"},
                          {"x": "yesterday"}),
    "format: email": (_field({"type": "string", "format": "email"}), {"x": "ada@example.com"}, {"x": "not an email"}),
    "format: uuid": (_field({"type": "string", "format": "uuid"}), {"x": "123e4567-e89b-12d3-a456-426614174000"},
                     {"x": "123"}),
    "minLength / maxLength": (_field({"type": "string", "minLength": 2, "maxLength": 3}), {"x": "abc"},
                              {"x": "abcd"}),
    "minimum / maximum": (_field({"type": "integer", "minimum": 1, "maximum": 5}), {"x": 5}, {"x": 6}),
    "exclusiveMinimum": (_field({"type": "number", "exclusiveMinimum": 0}), {"x": 0.5}, {"x": 0}),
    "multipleOf": (_field({"type": "integer", "multipleOf": 5}), {"x": 15}, {"x": 7}),
    "minItems / maxItems": (_field({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}),
                            {"x": [1, 2]}, {"x": [1, 2, 3]}),
    "uniqueItems": (_field({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}), {"x": [1, 2]},
                    {"x": [1, 1]}),
    "prefixItems": (_field({"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}],
                            "items": False}), {"x": [1, "a"]}, {"x": ["a", 1]}),
    "oneOf": (_field({"oneOf": [{"type": "integer"}, {"type": "boolean"}]}), {"x": True}, {"x": "s"}),
    "allOf": (_field({"allOf": [{"type": "integer"}, {"minimum": 3}]}), {"x": 3}, {"x": 2}),
    "not": (_field({"not": {"type": "integer"}}), {"x": "s"}, {"x": 1}),
    "if / then / else": (_field({"if": {"type": "integer"}, "then": {"minimum": 0}, "else": {"type": "string"}}),
                         {"x": 1}, {"x": -1}),
    "patternProperties": ({"type": "object", "patternProperties": {"^n_": {"type": "integer"}},
                           "additionalProperties": False}, {"n_a": 1}, {"n_a": "s"}),
    "minProperties": ({"type": "object", "additionalProperties": {"type": "integer"}, "minProperties": 2},
                      {"a": 1, "b": 2}, {"a": 1}),
}

SEPARATORS = (", ", ": ")


def _dump(doc) -> str:
    return json.dumps(doc, separators=SEPARATORS)


# -- one adapter per library: setup(tokenizer) -> state; compile(state, schema) -> grammar;
#    run(state, grammar, ids) -> (accepted all tokens and may end, seconds per token)

class LLGuidance:
    name, dist = "llguidance", "llguidance"

    def setup(self, tok):
        import llguidance.hf

        self.tok = llguidance.hf.from_tokenizer(tok)
        self.vocab = self.tok.vocab_size

    def compile(self, schema):
        import llguidance
        import llguidance.torch

        grammar = llguidance.LLMatcher.grammar_from_json_schema(
            schema, defaults={"whitespace_flexible": False, "item_separator": SEPARATORS[0],
                              "key_separator": SEPARATORS[1]})
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.tok)
        if is_error:
            raise ValueError(messages[0])
        matcher = llguidance.LLMatcher(self.tok, grammar, log_level=0)
        mask = llguidance.torch.allocate_token_bitmask(1, self.vocab)
        llguidance.torch.fill_next_token_bitmask(matcher, mask, 0)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return grammar

    def run(self, grammar, ids):
        import llguidance
        import llguidance.torch

        matcher = llguidance.LLMatcher(self.tok, grammar, log_level=0)
        mask = llguidance.torch.allocate_token_bitmask(1, self.vocab)
        start = time.perf_counter()
        for token in ids:
            llguidance.torch.fill_next_token_bitmask(matcher, mask, 0)
            if not matcher.consume_token(token):
                return False, None
        return matcher.is_accepting(), (time.perf_counter() - start) / len(ids)


class XGrammar:
    name, dist = "xgrammar", "xgrammar"

    def setup(self, tok):
        import xgrammar as xgr

        self.info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
        self.compiler = xgr.GrammarCompiler(self.info, max_threads=2, cache_enabled=False)
        self.eos = tok.eos_token_id

    def compile(self, schema):
        import xgrammar as xgr

        grammar = self.compiler.compile_json_schema(json.dumps(schema), any_whitespace=False, separators=SEPARATORS,
                                                    strict_mode=True)
        mask = xgr.allocate_token_bitmask(1, self.info.vocab_size)
        xgr.GrammarMatcher(grammar).fill_next_token_bitmask(mask, 0)
        return grammar

    def run(self, grammar, ids):
        import xgrammar as xgr

        matcher = xgr.GrammarMatcher(grammar)
        mask = xgr.allocate_token_bitmask(1, self.info.vocab_size)
        start = time.perf_counter()
        for token in ids:
            matcher.fill_next_token_bitmask(mask, 0)
            if not matcher.accept_token(token):
                return False, None
        seconds = (time.perf_counter() - start) / len(ids)
        return matcher.accept_token(self.eos) and matcher.is_terminated(), seconds


class OutlinesCore:
    name, dist = "outlines-core", "outlines-core"

    def setup(self, tok):
        import outlines_core

        vocab: dict[str, list[int]] = {}
        for token, token_id in tok.get_vocab().items():
            if token_id != tok.eos_token_id:  # outlines' own recipe: tokens as the strings they decode to
                vocab.setdefault(tok.convert_tokens_to_string([token]), []).append(token_id)
        self.vocabulary = outlines_core.Vocabulary(tok.eos_token_id, vocab)
        self.vocab = len(tok)

    def compile(self, schema):
        import outlines_core
        from outlines_core.kernels.torch import allocate_token_bitmask

        regex = outlines_core.json_schema.build_regex_from_schema(json.dumps(schema), "[ ]?")
        index = outlines_core.Index(regex, self.vocabulary)
        mask = allocate_token_bitmask(self.vocab)
        outlines_core.Guide(index).write_mask_into(mask.data_ptr(), mask.numel(), mask.element_size())
        return index

    def run(self, index, ids):
        import outlines_core
        from outlines_core.kernels.torch import allocate_token_bitmask

        guide = outlines_core.Guide(index)
        mask = allocate_token_bitmask(self.vocab)
        start = time.perf_counter()
        for token in ids:
            guide.write_mask_into(mask.data_ptr(), mask.numel(), mask.element_size())
            if not guide.accepts_tokens([token]):
                return False, None
            guide.advance(token, return_tokens=False)
        return guide.is_finished(), (time.perf_counter() - start) / len(ids)


LIBRARIES = {lib.name: lib for lib in (LLGuidance(), XGrammar(), OutlinesCore())}


def install_footprint(dist: str) -> dict:
    d = importlib.metadata.distribution(dist)
    needs = [r.split(";")[0].strip() for r in (d.requires or []) if "extra ==" not in r]
    return {"version": d.version, "own_mb": round(sum(f.size or 0 for f in d.files or []) / 1e6, 1),
            "requires": needs}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--libs", default=",".join(LIBRARIES))
    parser.add_argument("--out", default="benchmarks/results/grammar_libs.json")
    args = parser.parse_args(argv)

    from transformers import AutoTokenizer

    from ftkit.local.inference.weights import DEFAULT_BASE_MODEL, ensure_cached

    tok = AutoTokenizer.from_pretrained(ensure_cached(DEFAULT_BASE_MODEL))
    result: dict = {"cpu": cpu_info()["cpu"], "avx512_bf16": cpu_info()["avx512_bf16"], "vocabulary": len(tok), "libraries": {}}
    print(f"CPU {result['cpu']} (AVX512-BF16: {result['avx512_bf16']}), vocabulary {len(tok)}")
    for name in args.libs.split(","):
        lib = LIBRARIES[name]
        entry: dict = {}
        result["libraries"][name] = entry
        try:
            entry["install"] = install_footprint(lib.dist)
            start = time.perf_counter()
            lib.setup(tok)
            entry["tokenizer_setup_s"] = round(time.perf_counter() - start, 3)
        except ImportError as e:
            entry["error"] = f"not installed: {e}"
            print(f"{name}: not installed")
            continue
        entry["compile_ms"], entry["per_token_us"] = {}, {}
        for title, (schema, doc) in SCHEMAS.items():
            ids = tok(_dump(doc), add_special_tokens=False)["input_ids"]
            try:
                times = []
                for _ in range(args.repeats):
                    start = time.perf_counter()
                    grammar = lib.compile(schema)
                    times.append(time.perf_counter() - start)
                entry["compile_ms"][title] = round(min(times) * 1000, 2)
                per_token = []
                for _ in range(args.repeats):
                    ok, seconds = lib.run(grammar, ids)
                    if not ok:
                        raise ValueError("refused a valid document")
                    per_token.append(seconds)
                entry["per_token_us"][title] = round(min(per_token) * 1e6, 1)
            except Exception as e:  # noqa: BLE001 -- a library's failure is a result here
                entry["compile_ms"][title] = entry["per_token_us"][title] = f"failed: {str(e).splitlines()[0][:100]}"
        entry["coverage"] = {}
        for feature, (schema, good, bad) in FEATURES.items():
            try:
                grammar = lib.compile(schema)
            except Exception as e:  # noqa: BLE001
                entry["coverage"][feature] = "refused: " + str(e).splitlines()[0][:100]
                continue
            good_ok, _ = lib.run(grammar, tok(_dump(good), add_special_tokens=False)["input_ids"])
            bad_ok, _ = lib.run(grammar, tok(_dump(bad), add_special_tokens=False)["input_ids"])
            entry["coverage"][feature] = "wrong" if not good_ok else ("ignored" if bad_ok else "enforced")
        print(f"\n{name} {entry['install']['version']}: tokenizer set-up {entry['tokenizer_setup_s']} s, "
              f"{entry['install']['own_mb']} MB, requires {entry['install']['requires']}")
        for title in SCHEMAS:
            print(f"  {title:36} compile {entry['compile_ms'][title]!s:>10} ms   "
                  f"per token {entry['per_token_us'][title]!s:>8} us")
        for feature, outcome in entry["coverage"].items():
            print(f"  {feature:36} {outcome}")
    return save(result, args.out)


if __name__ == "__main__":
    main()
