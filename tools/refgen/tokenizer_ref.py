#!/usr/bin/env python3
"""Reference outputs for loom's tokenizer tests, produced by HF `tokenizers` (run on the GPU machine).

usage: tokenizer_ref.py --real DIR --data tests/tokenizer/data --corpus tests/tokenizer/corpus.jsonl
                        --out OUTDIR [--bench-out perf.json] [--loom-bench BIN]
DIR holds <name>/tokenizer.json for the six real tokenizers. Writes into OUTDIR, per tokenizer <name>:
  <name>.jsonl            one line per corpus line: ids (no specials), ids_special, decode (of ids),
                          decode_special (of ids_special, keeping specials), decode_skip (skipping them)
  <name>.decode.jsonl     random id sequences (invalid UTF-8 included) with text and text_skip
  <name>.codepoints.json  per 256-code-point page: [ids hash, decode hash] over every code point of
                          codepoints.json in a short context string (see cp_text)
  <name>.config.json      bos/eos as transformers' AutoTokenizer reports them (real tokenizers only)
  codepoints.json         the code points used, as [first, last] ranges (Python's unicodedata)
Hashes: the values v_i (token id as uint32 + 1, with 0xFFFFFFFF + 1 after each string; or UTF-8 byte
+ 1, with 257 after each string) give h = sum_i v_i * P^(i+1) mod 2^64, P = 1099511628211.
"""
import argparse
import json
import os
import random
import sys
import time
import traceback
import unicodedata

os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
import numpy as np
from tokenizers import Tokenizer

REAL = ["llama2", "llama3", "qwen3", "gemma3", "deepseek_v3", "gptoss"]
P = np.uint64(1099511628211)


def poly_hash(values):
    v = np.asarray(values, dtype=np.uint64) + np.uint64(1)
    if v.size == 0:
        return "0"
    with np.errstate(over="ignore"):
        powers = np.cumprod(np.full(v.size, P, dtype=np.uint64), dtype=np.uint64)
        return "%016x" % int(np.sum(v * powers, dtype=np.uint64))


def cp_text(c):
    ch = chr(c)
    return ch + " a" + ch + ch + "b\n1" + ch + "."


def codepoints():
    out = []
    for c in range(int(os.environ.get("LOOM_CP_LIMIT", "1114112"))):
        if unicodedata.category(chr(c)) not in ("Cn", "Cs", "Co"):
            out.append(c)
    return out


def ranges(cps):
    r = []
    for c in cps:
        if r and r[-1][1] == c - 1:
            r[-1][1] = c
        else:
            r.append([c, c])
    return r


def corpus_lines(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(l)["text"] for l in f if l.strip()]


def write_corpus(tok, lines, path):
    encs = tok.encode_batch(lines, add_special_tokens=False)
    encs_s = tok.encode_batch(lines, add_special_tokens=True)
    with open(path, "w", encoding="utf-8") as f:
        for e, es in zip(encs, encs_s):
            rec = {"ids": e.ids, "ids_special": es.ids,
                   "decode": tok.decode(e.ids, skip_special_tokens=False),
                   "decode_special": tok.decode(es.ids, skip_special_tokens=False),
                   "decode_skip": tok.decode(es.ids, skip_special_tokens=True)}
            f.write(json.dumps(rec, ensure_ascii=True) + "\n")


def write_decodes(tok, path, seed):
    rng = random.Random(seed)
    n = tok.get_vocab_size(with_added_tokens=True)
    specials = [t.content for t in tok.get_added_tokens_decoder().values()]
    special_ids = [tok.token_to_id(t) for t in specials][:50]
    with open(path, "w", encoding="utf-8") as f:
        for k in range(60):
            ids = [rng.randrange(n) for _ in range(rng.randint(1, 12))]
            if k % 3 == 0 and special_ids:
                ids.insert(rng.randrange(len(ids) + 1), rng.choice(special_ids))
            if k % 5 == 0:
                ids = ids + [n + 7]  # out of range: HF skips unknown ids
            rec = {"ids": ids, "text": tok.decode(ids, skip_special_tokens=False),
                   "text_skip": tok.decode(ids, skip_special_tokens=True)}
            f.write(json.dumps(rec, ensure_ascii=True) + "\n")


def write_codepoints(tok, cps, path):
    pages = {}
    by_page = {}
    for c in cps:
        by_page.setdefault(c >> 8, []).append(c)
    for page, cs in sorted(by_page.items()):
        texts = [cp_text(c) for c in cs]
        encs = tok.encode_batch(texts, add_special_tokens=False)
        idv, dv = [], []
        all_ids = [e.ids for e in encs]
        decs = tok.decode_batch(all_ids, skip_special_tokens=False)
        for ids, d in zip(all_ids, decs):
            idv.extend(ids)
            idv.append(0xFFFFFFFF)
            dv.extend(d.encode("utf-8", "surrogatepass"))
            dv.append(256)
        pages["%04x" % page] = [poly_hash(idv), poly_hash(dv)]
    with open(path, "w") as f:
        json.dump({"pages": pages}, f, indent=0)


def write_config(folder, path):
    try:
        from transformers import AutoTokenizer
        t = AutoTokenizer.from_pretrained(folder)
        rec = {"bos_token_id": t.bos_token_id, "eos_token_id": t.eos_token_id,
               "hello_ids": t("Hello world")["input_ids"]}
    except Exception as e:  # recorded, so the note can say what transformers could not load
        rec = {"error": repr(e)[:300]}
    with open(path, "w") as f:
        json.dump(rec, f)


def spm_reference(data, lines, out):
    try:
        import sentencepiece as spm
    except ImportError:
        print("sentencepiece not installed: no spm_only reference", file=sys.stderr)
        return
    sp = spm.SentencePieceProcessor(model_file=os.path.join(data, "spm_only", "tokenizer.model"))
    with open(os.path.join(out, "spm_only.jsonl"), "w", encoding="utf-8") as f:
        for l in lines:
            ids = sp.encode(l)
            f.write(json.dumps({"ids": ids, "decode": sp.decode(ids)}, ensure_ascii=True) + "\n")


def bench(real, lines, out_path, loom_bench):
    text_lines, size = [], 0
    while size < 1_000_000:
        for l in lines:
            text_lines.append(l)
            size += len(l.encode()) + 1
    res = {"bytes": size, "lines": len(text_lines), "hf": {}}
    for name in REAL:
        path = os.path.join(real, name, "tokenizer.json")
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            tok = Tokenizer.from_file(path)
            loads.append(time.perf_counter() - t0)
        best, ntok = 1e9, 0
        for _ in range(3):
            t0 = time.perf_counter()
            ntok = 0
            for l in text_lines:
                ntok += len(tok.encode(l, add_special_tokens=False).ids)
            best = min(best, time.perf_counter() - t0)
        res["hf"][name] = {"load_ms_median": sorted(loads)[2] * 1e3, "encode_s": best,
                           "MB_per_s": size / best / 1e6, "tokens": ntok}
        print(name, res["hf"][name], flush=True)
    if loom_bench and os.path.exists(loom_bench):
        import subprocess
        r = subprocess.run([loom_bench, "--real", real, "--corpus", args_corpus], capture_output=True,
                           text=True, timeout=120)
        res["loom_stdout"] = r.stdout
        res["loom_stderr"] = r.stderr[-2000:]
    with open(out_path, "w") as f:
        json.dump(res, f, indent=1)


def main():
    global args_corpus
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--bench-out")
    ap.add_argument("--loom-bench")
    ap.add_argument("--skip-refs", action="store_true")
    a = ap.parse_args()
    args_corpus = a.corpus
    os.makedirs(a.out, exist_ok=True)
    lines = corpus_lines(a.corpus)
    hand = sorted(d for d in os.listdir(a.data) if os.path.exists(os.path.join(a.data, d, "tokenizer.json")))
    names = REAL + hand
    toks = {}
    if not a.skip_refs:
        for i, name in enumerate(names):
            folder = os.path.join(a.real if name in REAL else a.data, name)
            try:
                toks[name] = tok = Tokenizer.from_file(os.path.join(folder, "tokenizer.json"))
                write_corpus(tok, lines, os.path.join(a.out, name + ".jsonl"))
                write_decodes(tok, os.path.join(a.out, name + ".decode.jsonl"), seed=1000 + i)
                if name in REAL:
                    write_config(folder, os.path.join(a.out, name + ".config.json"))
                print("refs", name, flush=True)
            except BaseException:  # pyo3 panics are BaseException
                traceback.print_exc()
        try:
            spm_reference(a.data, lines, a.out)
        except BaseException:  # pyo3 panics are BaseException
            traceback.print_exc()
    if a.bench_out:
        bench(a.real, lines, a.bench_out, a.loom_bench)
    if not a.skip_refs:
        cps = codepoints()
        with open(os.path.join(a.out, "codepoints.json"), "w") as f:
            json.dump({"unicode": unicodedata.unidata_version, "ranges": ranges(cps)}, f)
        for name in names:
            if name not in toks:
                continue
            t0 = time.perf_counter()
            try:
                write_codepoints(toks[name], cps, os.path.join(a.out, name + ".codepoints.json"))
            except BaseException:  # pyo3 panics are BaseException
                traceback.print_exc()
            print("codepoints", name, "%.1fs" % (time.perf_counter() - t0), flush=True)

if __name__ == "__main__":
    main()
