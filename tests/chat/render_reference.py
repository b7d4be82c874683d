#!/usr/bin/python3
"""Oracle for loom's chat-template tests: renders with Python jinja2 in the environment transformers
builds (chat_template_utils._compile_jinja_template), so loom's output can be compared byte for byte.

Run with Debian's /usr/bin/python3 (python3-jinja2). Modes, each writing one JSON file:
  corpus   --templates DIR --tokenizers DIR --conversations FILE --out FILE
           every template (DIR/*.jinja, and the chat_template of DIR2/<name>/tokenizer_config.json)
           over every conversation, with transformers' apply_chat_template semantics;
  features --cases FILE --out FILE   one snippet per language feature (tests/chat/features.json);
  fuzz     --seed N --count N --out FILE   random expressions / filter chains (differential fuzz).
Each result is {"output": str} or {"error": "ExceptionType: message"}.
"""
import argparse
import copy
import datetime
import json
import os
import random
import sys

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension
from jinja2.sandbox import ImmutableSandboxedEnvironment

# The fixed clock strftime_now sees (loom's tests inject the same time).
FIXED_NOW = datetime.datetime(2024, 7, 26, 10, 30, 0)


class GenerationTag(Extension):
    """transformers' AssistantTracker: {% generation %}...{% endgeneration %} renders its body."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers replaces jinja2's tojson: plain json.dumps, no HTML escaping.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def strftime_now(format):
    return FIXED_NOW.strftime(format)


def make_env():
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


ENV = make_env()


def run(fn):
    try:
        return {"output": fn()}
    except RecursionError as e:
        return {"error": "RecursionError: " + str(e)[:200]}
    except Exception as e:  # every failure is data for the comparison
        return {"error": f"{type(e).__name__}: {e}"[:500]}


# ---- apply_chat_template (transformers semantics) ----

SPECIAL_TOKEN_ATTRIBUTES = ["bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"]


def special_tokens_map(config):
    out = {}
    for name in SPECIAL_TOKEN_ATTRIBUTES:
        v = config.get(name)
        if isinstance(v, dict):
            v = v.get("content")
        if v:
            out[name] = str(v)
    extra = config.get("extra_special_tokens")
    if isinstance(extra, dict):  # transformers 5: named extra special tokens join the map
        for name, v in extra.items():
            v = v.get("content") if isinstance(v, dict) else v
            if v:
                out[name] = str(v)
    return out


def continue_final_message_cut(rendered, messages):
    final_message = messages[-1]["content"]
    if isinstance(final_message, (list, tuple)):
        for block in reversed(final_message):
            if "text" in block:
                final_message = block["text"]
                break
        else:
            raise ValueError("continue_final_message is set but we could not find any text to continue")
    if final_message.strip() not in rendered:
        raise ValueError("continue_final_message is set but the final message does not appear in the chat")
    loc = rendered.rindex(final_message.strip())
    if rendered[loc : loc + len(final_message.lstrip())] == final_message:
        return rendered[: loc + len(final_message.lstrip())]
    return rendered[: loc + len(final_message.strip())]


_compiled = {}


def compile_cached(source):
    if source not in _compiled:
        try:
            _compiled[source] = ENV.from_string(source)
        except Exception as e:  # remembered so every conversation reports the same error
            _compiled[source] = e
    t = _compiled[source]
    if isinstance(t, Exception):
        raise t
    return t


def apply_chat_template(source, special, conv):
    add_gen = conv.get("add_generation_prompt", False)
    cont = conv.get("continue_final_message", False)
    if cont and add_gen:
        raise ValueError("continue_final_message and add_generation_prompt are not compatible")
    template = compile_cached(source)
    kwargs = {**special, **conv.get("kwargs", {})}
    rendered = template.render(
        messages=conv["messages"], tools=conv.get("tools"), documents=conv.get("documents"),
        add_generation_prompt=add_gen, **kwargs)
    if cont:
        rendered = continue_final_message_cut(rendered, conv["messages"])
    return rendered


# Special tokens the shared templates (which come without a tokenizer config) are rendered with.
SHARED_SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>"}


def corpus_templates(templates_dir, tokenizers_dir):
    if not os.path.isdir(templates_dir):
        sys.exit(f"render_reference: template folder {templates_dir} is missing")
    out = []
    for name in sorted(os.listdir(templates_dir)):
        if name.endswith(".jinja"):
            with open(os.path.join(templates_dir, name), encoding="utf-8", newline="") as f:
                out.append({"name": name, "source": f.read(), "special": SHARED_SPECIAL_TOKENS})
    for tok in ["llama3", "qwen3", "gemma3", "deepseek_v3"]:
        path = os.path.join(tokenizers_dir, tok, "tokenizer_config.json")
        if not os.path.isfile(path):
            sys.exit(f"render_reference: {path} is missing (run scripts/fetch-test-tokenizers.sh)")
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
        out.append({"name": "npm:" + tok, "source": config["chat_template"], "special": special_tokens_map(config)})
    return out


def mode_corpus(args):
    with open(args.conversations, encoding="utf-8") as f:
        conversations = json.load(f)
    results = []
    for t in corpus_templates(args.templates, args.tokenizers):
        for conv in conversations:
            r = run(lambda: apply_chat_template(t["source"], t["special"], conv))
            r.update({"template": t["name"], "conversation": conv["id"]})
            results.append(r)
    return {"results": results}


def mode_features(args):
    with open(args.cases, encoding="utf-8") as f:
        cases = json.load(f)
    results = []
    for case in cases:
        r = run(lambda: ENV.from_string(case["template"]).render(**case.get("context", {})))
        r["name"] = case["name"]
        results.append(r)
    return {"results": results}


# ---- differential fuzz: random expressions and filter chains ----

VALUES = ["0", "1", "-3", "7", "2.5", "-0.5", "1e3", "'abc'", "'A b-C'", "''", "' x '", "'é世'", "'{}'",
          "none", "true", "false", "[1, 2, 3]", "['b', 'a', 'B']", "[]", "{'k': 1, 'a': [2]}", "{}",
          "(1, 'x')", "x", "y", "s", "d", "l", "undefined_name", "d.k", "l[1]", "s[1:]", "l[::-1]"]
BINOPS = ["+", "-", "*", "/", "//", "%", "~", "==", "!=", "<", ">=", "in", "not in", "and", "or"]
FILTERS = ["length", "string", "upper", "lower", "trim", "first", "last", "list", "reverse|list", "sort",
           "unique|list", "join(',')", "default('dflt')", "default('z', true)", "int", "float", "abs", "round",
           "round(1)", "tojson", "tojson(indent=2)", "tojson(sort_keys=true)", "capitalize", "title",
           "items|list", "dictsort", "count", "wordcount", "replace('a', 'Z')", "indent(2)",
           "batch(2)|list", "map('string')|list", "select|list", "reject('none')|list", "safe",
           "selectattr('k')|list", "map(attribute='k')|list", "center(9)", "e"]
TESTS = ["defined", "undefined", "none", "string", "number", "integer", "float", "mapping", "iterable",
         "sequence", "boolean", "true", "false", "odd", "even", "divisibleby(3)", "eq(1)", "ne 'a'", "in [1, 'abc']"]
CONTEXT = {"x": 5, "y": -2.25, "s": "Hello World", "d": {"k": 3, "z": None}, "l": [3, 1, 2]}


def random_expr(rng, depth=0):
    r = rng.random()
    if depth > 2 or r < 0.3:
        return rng.choice(VALUES)
    if r < 0.55:
        return f"({random_expr(rng, depth + 1)} {rng.choice(BINOPS)} {random_expr(rng, depth + 1)})"
    if r < 0.8:
        chain = "|".join(rng.choice(FILTERS) for _ in range(rng.randint(1, 3)))
        return f"({random_expr(rng, depth + 1)}|{chain})"
    if r < 0.9:
        return f"({random_expr(rng, depth + 1)} is {rng.choice(['', 'not '])}{rng.choice(TESTS)})"
    return f"({random_expr(rng, depth + 1)} if {random_expr(rng, depth + 1)} else {random_expr(rng, depth + 1)})"


def mode_fuzz(args):
    rng = random.Random(args.seed)
    results = []
    for i in range(args.count):
        expr = random_expr(rng)
        template = "{{ " + expr + " }}"
        # A fresh copy per case: some filters mutate their operand in Python (indent on a list).
        r = run(lambda: ENV.from_string(template).render(**copy.deepcopy(CONTEXT)))
        r.update({"name": f"fuzz{i}", "template": template})
        results.append(r)
    return {"context": CONTEXT, "results": results}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["corpus", "features", "fuzz"])
    p.add_argument("--templates")
    p.add_argument("--tokenizers")
    p.add_argument("--conversations")
    p.add_argument("--cases")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--count", type=int, default=400)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    data = {"corpus": mode_corpus, "features": mode_features, "fuzz": mode_fuzz}[args.mode](args)
    data["jinja2_version"] = jinja2.__version__
    tmp = args.out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, indent=1)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
