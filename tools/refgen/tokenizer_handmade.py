#!/usr/bin/env python3
"""Writes the small hand-built tokenizer.json files under tests/tokenizer/data/ (run here, no HF needed).

They exercise the components the six real tokenizers do not: Unigram, WordPiece, WordLevel, BPE with
subword prefix/suffix, Metaspace, Precompiled, Bert/Roberta/Template post-processors, every Split
behaviour, and the smaller normalizers/decoders. Vocabularies come from a tiny BPE/Unigram "training"
on a fixed text, so merges really fire. Expected outputs come from HF tokenizers (tokenizer_ref.py).
"""
import base64
import collections
import json
import math
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.normpath(os.path.join(HERE, "..", "..", "tests", "tokenizer", "data"))

TRAIN = ("the quick brown fox jumps over the lazy dog . the dog sleeps and the fox runs . "
         "tokenizers turn text into numbers and numbers into text . hello world hello there "
         "running jumping sleeping played playing player players 2024 1234 café naïve ") * 3


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def train_bpe(words, n_merges, base, strip=0):
    """Plain BPE training over a list of symbol lists; returns merges in order."""
    counts = collections.Counter(tuple(w) for w in words)
    merges = []
    vocab = list(base)
    for _ in range(n_merges):
        pairs = collections.Counter()
        for w, c in counts.items():
            for a, b in zip(w, w[1:]):
                pairs[(a, b)] += c
        if not pairs:
            break
        (a, b), _ = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append((a, b))
        new = a + b[strip:]
        if new not in vocab:
            vocab.append(new)
        nc = collections.Counter()
        for w, c in counts.items():
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            nc[tuple(out)] += c
        counts = nc
    return merges, vocab


def added(id_, content, special=True, lstrip=False, rstrip=False, single_word=False, normalized=False):
    return {"id": id_, "content": content, "single_word": single_word, "lstrip": lstrip,
            "rstrip": rstrip, "normalized": normalized, "special": special}


def base_doc(model, normalizer=None, pre=None, post=None, decoder=None, added_tokens=()):
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": list(added_tokens),
            "normalizer": normalizer, "pre_tokenizer": pre, "post_processor": post, "decoder": decoder,
            "model": model}


def bytelevel_bpe():
    b2u = bytes_to_unicode()
    words = [[b2u[b] for b in (" " + w).encode()] for w in TRAIN.split()]
    base = [b2u[b] for b in range(256)]
    merges, vocab = train_bpe(words, 80, base)
    specials = ["<|endoftext|>", "<|pad|>"]
    vmap = {t: i for i, t in enumerate(vocab)}
    n = len(vmap)
    toks = [added(n, "<|endoftext|>"), added(n + 1, "<|pad|>"),
            added(n + 2, "[LSTRIP]", lstrip=True), added(n + 3, "[RSTRIP]", rstrip=True),
            added(n + 4, "word", special=False, single_word=True),
            added(n + 5, "hello world", special=False, normalized=True),
            added(n + 6, "<mask>", lstrip=True, rstrip=True)]
    model = {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
             "vocab": vmap, "merges": [[a, b] for a, b in merges]}
    return base_doc(
        model,
        normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
        pre={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        post={"type": "RobertaProcessing", "sep": ["<|endoftext|>", n], "cls": ["<|pad|>", n + 1],
              "trim_offsets": True, "add_prefix_space": True},
        decoder={"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        added_tokens=toks), specials


def suffix_bpe():
    words = [list(w[:-1]) + [w[-1] + "</w>"] if len(w) > 1 else [w + "</w>"] for w in TRAIN.split()]
    base = sorted({c for w in words for c in w})
    merges, vocab = train_bpe(words, 60, base)
    vocab = ["<unk>"] + vocab
    vmap = {t: i for i, t in enumerate(vocab)}
    model = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
             "end_of_word_suffix": "</w>", "fuse_unk": True, "byte_fallback": False,
             "vocab": vmap, "merges": [a + " " + b for a, b in merges]}
    return base_doc(
        model,
        normalizer={"type": "Sequence", "normalizers": [
            {"type": "NFKD"}, {"type": "StripAccents"}, {"type": "Lowercase"},
            {"type": "Strip", "strip_left": True, "strip_right": True}]},
        pre={"type": "Sequence", "pretokenizers": [
            {"type": "WhitespaceSplit"}, {"type": "Punctuation", "behavior": "Isolated"},
            {"type": "Digits", "individual_digits": True}]},
        post={"type": "TemplateProcessing",
              "single": [{"SpecialToken": {"id": "<unk>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "<unk>", "type_id": 0}}],
              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
              "special_tokens": {"<unk>": {"id": "<unk>", "ids": [0], "tokens": ["<unk>"]}}},
        decoder={"type": "BPEDecoder", "suffix": "</w>"},
        added_tokens=[added(0, "<unk>")]), None


def prefix_bpe_bytefallback():
    # continuing_subword_prefix + byte_fallback + ignore_merges, Metaspace decoder chain.
    words = [["▁"] + ["##" + c for c in w] for w in TRAIN.split()]
    base = sorted({c for w in words for c in w})
    merges, vocab = train_bpe(words, 60, base, strip=2)
    bytes_ = ["<0x%02X>" % b for b in range(256)]
    vocab = ["<unk>", "<s>", "</s>"] + bytes_ + [v for v in vocab if v not in bytes_] + ["▁hello▁world"]
    vmap = {t: i for i, t in enumerate(vocab)}
    model = {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": "##",
             "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": True, "ignore_merges": True,
             "vocab": vmap, "merges": [[a, b] for a, b in merges]}
    return base_doc(
        model,
        normalizer={"type": "Sequence", "normalizers": [
            {"type": "NFC"}, {"type": "Replace", "pattern": {"Regex": "\\s+"}, "content": " "},
            {"type": "Prepend", "prepend": "▁"}, {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
        pre={"type": "Split", "pattern": {"String": "▁"}, "behavior": "MergedWithNext", "invert": False},
        post={"type": "TemplateProcessing",
              "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": "</s>", "type_id": 0}}],
              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
              "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]},
                                 "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}},
        decoder={"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": "##"}, "content": ""},
            {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        added_tokens=[added(0, "<unk>"), added(1, "<s>"), added(2, "</s>")]), None


def wordpiece_bert():
    words = TRAIN.split() + ["hello", "world", "中", "文", "!", ",", "."]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    chars = sorted({c for w in words for c in w} | set("abcdefghijklmnopqrstuvwxyz0123456789"))
    for c in chars:
        vocab.append(c)
        vocab.append("##" + c)
    for w in sorted(set(words)):
        if w not in vocab:
            vocab.append(w)
    for sub in ["##ing", "##s", "##ed", "##er", "##ers", "play", "jump", "run", "##ning", "##izer", "token"]:
        if sub not in vocab:
            vocab.append(sub)
    vmap = {t: i for i, t in enumerate(vocab)}
    model = {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
             "max_input_chars_per_word": 20, "vocab": vmap}
    return base_doc(
        model,
        normalizer={"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                    "strip_accents": None, "lowercase": True},
        pre={"type": "BertPreTokenizer"},
        post={"type": "BertProcessing", "sep": ["[SEP]", 3], "cls": ["[CLS]", 2]},
        decoder={"type": "WordPiece", "prefix": "##", "cleanup": True},
        added_tokens=[added(i, t) for i, t in enumerate(vocab[:5])]), None


def wordlevel_splits():
    words = sorted(set(TRAIN.split())) + ["-", "--", "a-b", "x", "1", "12", "123", ",", "!", "?"]
    vocab = ["<unk>", "<cls>", "<sep>"] + words
    vmap = {t: i for i, t in enumerate(vocab)}
    model = {"type": "WordLevel", "vocab": vmap, "unk_token": "<unk>"}
    return base_doc(
        model,
        normalizer={"type": "Sequence", "normalizers": [{"type": "NFD"}, {"type": "StripAccents"},
                                                         {"type": "Lowercase"}]},
        pre={"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"String": "--"}, "behavior": "Removed", "invert": False},
            {"type": "Split", "pattern": {"Regex": "\\d+"}, "behavior": "Contiguous", "invert": False},
            {"type": "Split", "pattern": {"Regex": "[,!?]"}, "behavior": "MergedWithPrevious", "invert": False},
            {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Removed", "invert": False},
            {"type": "Split", "pattern": {"Regex": "\\w+"}, "behavior": "Isolated", "invert": True},
            {"type": "Whitespace"}]},
        post={"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<cls>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                        {"SpecialToken": {"id": "<sep>", "type_id": 0}}],
             "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
             "special_tokens": {"<cls>": {"id": "<cls>", "ids": [1], "tokens": ["<cls>"]},
                                "<sep>": {"id": "<sep>", "ids": [2], "tokens": ["<sep>"]}}}]},
        decoder=None,
        added_tokens=[added(0, "<unk>"), added(1, "<cls>"), added(2, "<sep>")]), None


def merged_next_split():
    # Split with MergedWithNext + invert, and ByteLevel without regex, Metaspace pre-tokenizer (split=False).
    doc, _ = bytelevel_bpe()
    doc["added_tokens"] = doc["added_tokens"][:2]
    doc["normalizer"] = {"type": "Strip", "strip_left": False, "strip_right": True}
    doc["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "[a-z]+"}, "behavior": "MergedWithNext", "invert": True},
        {"type": "Split", "pattern": {"String": "o"}, "behavior": "Contiguous", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    doc["post_processor"] = None
    return doc, None


def read_varint(b, i):
    v = s = 0
    while True:
        c = b[i]
        i += 1
        v |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return v, i


def parse_proto(b):
    """Minimal protobuf wire-format reader: {field: [values]} (bytes for length-delimited)."""
    out, i = collections.defaultdict(list), 0
    while i < len(b):
        key, i = read_varint(b, i)
        f, wt = key >> 3, key & 7
        if wt == 0:
            v, i = read_varint(b, i)
        elif wt == 1:
            v, i = b[i:i + 8], i + 8
        elif wt == 2:
            n, i = read_varint(b, i)
            v, i = b[i:i + n], i + n
        elif wt == 5:
            v, i = b[i:i + 4], i + 4
        else:
            raise ValueError("wire type %d" % wt)
        out[f].append(v)
    return out


def unigram_precompiled():
    proto = parse_proto(open(os.path.join(DATA, "spm_only", "tokenizer.model"), "rb").read())
    vocab, unk_id = [], 0
    for i, p in enumerate(proto[1]):
        pp = parse_proto(p)
        piece = pp[1][0].decode()
        score = struct.unpack("<f", pp[2][0])[0] if pp[2] else 0.0
        typ = pp[3][0] if pp[3] else 1
        if typ == 2:
            unk_id = i
        vocab.append([piece, score])
    norm = parse_proto(proto[3][0])
    charsmap = base64.b64encode(norm[2][0]).decode()
    model = {"type": "Unigram", "unk_id": unk_id, "vocab": vocab, "byte_fallback": True}
    specials = [added(i, vocab[i][0]) for i in range(3)]
    return base_doc(
        model,
        normalizer={"type": "Sequence", "normalizers": [
            {"type": "Precompiled", "precompiled_charsmap": charsmap},
            {"type": "Replace", "pattern": {"Regex": " {2,}"}, "content": " "}]},
        pre={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
        post={"type": "TemplateProcessing",
              "single": [{"Sequence": {"id": "A", "type_id": 0}}, {"SpecialToken": {"id": vocab[2][0], "type_id": 0}}],
              "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
              "special_tokens": {vocab[2][0]: {"id": vocab[2][0], "ids": [2], "tokens": [vocab[2][0]]}}},
        decoder={"type": "Sequence", "decoders": [
            {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": True},
            {"type": "ByteFallback"}, {"type": "Fuse"}]},
        added_tokens=specials), None


def unigram_plain():
    # Unigram without byte fallback (unk fusing), Metaspace prepend_scheme "first" with split=False,
    # NFKC + Lowercase normalizers, Metaspace-only decoder.
    c = collections.Counter()
    for w in TRAIN.split():
        w = "▁" + w
        for i in range(len(w)):
            for j in range(i + 1, min(len(w), i + 6) + 1):
                c[w[i:j]] += 1
    items = [(s, n) for s, n in c.items() if n >= 6 or len(s) == 1]
    total = sum(n for _, n in items)
    vocab = [["<unk>", 0.0], ["<s>", 0.0], ["</s>", 0.0]]
    vocab += [[s, math.log(n / total) - 0.1 * len(s)] for s, n in sorted(items)]
    model = {"type": "Unigram", "unk_id": 0, "vocab": vocab, "byte_fallback": False}
    return base_doc(
        model,
        normalizer={"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
        pre={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        post={"type": "BertProcessing", "sep": ["</s>", 2], "cls": ["<s>", 1]},
        decoder={"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False},
        added_tokens=[added(0, "<unk>"), added(1, "<s>"), added(2, "</s>"),
                      added(len(vocab), " <sp> ", special=False, normalized=False)]), None


def main():
    files = {
        "bytelevel_roberta": bytelevel_bpe,
        "bpe_suffix": suffix_bpe,
        "bpe_prefix_bytefallback": prefix_bpe_bytefallback,
        "wordpiece_bert": wordpiece_bert,
        "wordlevel_splits": wordlevel_splits,
        "split_merged_next": merged_next_split,
        "unigram_precompiled": unigram_precompiled,
        "unigram_metaspace": unigram_plain,
    }
    for name, fn in files.items():
        doc, _ = fn()
        d = os.path.join(DATA, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
            json.dump(doc, f, ensure_ascii=False, indent=None)
        print(name, os.path.getsize(os.path.join(d, "tokenizer.json")))


if __name__ == "__main__":
    main()
