#!/usr/bin/env python3
"""Reference prompts from real transformers for loom's chat-template tests (tests/chat/expected/).

Runs on the GPU machine (transformers + tokenizers installed, no internet). For each npm tokenizer
folder (tokenizer_config.json + tokenizer.json[.gz]) it loads the tokenizer with AutoTokenizer and
renders every conversation of tests/chat/conversations.json with
tokenizer.apply_chat_template(messages, tools=..., add_generation_prompt=..., continue_final_message=...,
tokenize=False, **kwargs), with strftime_now's clock frozen at 2024-07-26 10:30:00 (as in loom's tests).

Usage: python3 tools/refgen/chat_ref.py --tokenizers .devtmp/chat --out $OUT
Writes OUT/<name>.json = {"transformers_version", "loader", "special_tokens_map", "chat_template",
"results": [{"conversation", "output" | "error"}]}.
"""
import argparse
import datetime as dt
import gzip
import json
import os
import shutil
import sys
import tempfile
import traceback

NAMES = ["llama3", "qwen3", "gemma3", "deepseek_v3"]
FIXED_NOW = dt.datetime(2024, 7, 26, 10, 30, 0)


class FrozenDatetime(dt.datetime):
    @classmethod
    def now(cls, tz=None):
        return FIXED_NOW


def freeze_clock():
    from transformers.utils import chat_template_utils

    if hasattr(chat_template_utils, "datetime"):
        chat_template_utils.datetime = FrozenDatetime


def unpack(src, dst):
    os.makedirs(dst, exist_ok=True)
    for f in os.listdir(src):
        p = os.path.join(src, f)
        if f.endswith(".gz"):
            with gzip.open(p, "rb") as i, open(os.path.join(dst, f[:-3]), "wb") as o:
                shutil.copyfileobj(i, o)
        else:
            shutil.copy(p, os.path.join(dst, f))


def load(folder):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    try:
        return AutoTokenizer.from_pretrained(folder), "AutoTokenizer"
    except Exception:
        sys.stderr.write(traceback.format_exc())
        return PreTrainedTokenizerFast.from_pretrained(folder), "PreTrainedTokenizerFast"


def render(tok, conv):
    kwargs = dict(conv.get("kwargs", {}))
    return tok.apply_chat_template(
        conv["messages"],
        tools=conv.get("tools"),
        documents=conv.get("documents"),
        add_generation_prompt=conv.get("add_generation_prompt", False),
        continue_final_message=conv.get("continue_final_message", False),
        tokenize=False,
        **kwargs,
    )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tokenizers", required=True)
    p.add_argument("--conversations", default="tests/chat/conversations.json")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    import transformers

    freeze_clock()
    with open(args.conversations, encoding="utf-8") as f:
        conversations = json.load(f)
    os.makedirs(args.out, exist_ok=True)
    for name in NAMES:
        work = tempfile.mkdtemp()
        record = {"transformers_version": transformers.__version__, "name": name}
        try:
            unpack(os.path.join(args.tokenizers, name), work)
            tok, loader = load(work)
            record["loader"] = loader
            record["special_tokens_map"] = {k: (v if isinstance(v, (str, list)) else str(v)) for k, v in tok.special_tokens_map.items()}
            record["chat_template"] = tok.chat_template if isinstance(tok.chat_template, str) else None
            results = []
            for conv in conversations:
                try:
                    out = render(tok, conv)
                    if isinstance(out, list):  # batched by mistake: keep the first
                        out = out[0]
                    results.append({"conversation": conv["id"], "output": out})
                except Exception as e:
                    results.append({"conversation": conv["id"], "error": f"{type(e).__name__}: {e}"[:500]})
            record["results"] = results
        except Exception:
            record["fatal"] = traceback.format_exc()
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with open(os.path.join(args.out, name + ".json"), "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False, indent=1)
        print(name, record.get("loader"), "fatal" if "fatal" in record else f"{len(record['results'])} results")


if __name__ == "__main__":
    main()
