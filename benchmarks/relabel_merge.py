"""Multi-source merge with a teacher: how well does the embedding clean-up of ``pipelines.relabel``
find the CFP people who are also in LFW?

    python -m benchmarks.relabel_merge --corpus CORPUS \\
        --names ../shared/data/cfp_train/names.txt --embeddings dlib \\
        --merge-thresholds 0.5 0.6 0.7 0.8 0.9 --outlier-thresholds 0.1 0.2 0.3 0.4

Ground truth: CFP's ``names.txt`` (CFP id -> name) against the LFW class names
(``lfw/<Name_With_Underscores>``). A CFP-LFW link is a merged group holding ``cfp/<id>`` and
``lfw/<name>``; it is correct when the name of the CFP id is that LFW name, a spelling
variant when the two names are close (difflib ratio >= 0.75, or the same first name and a close last name: ``George Bush`` /
``George_W_Bush``, ``Jennifer Anniston`` / ``Jennifer_Aniston``; names.txt has many), wrong
otherwise. Precision: (exact [+ variant]) links / links; recall: exact links / CFP classes
whose exact namesake is an LFW class of the corpus. CelebA has numbers only, so its merges are counted, not scored. Outliers
(samples far from the rest of their class) are counted per source.

The merge and outlier decisions are the ones ``pipelines.relabel --embeddings`` makes
(:func:`lightface.data.identity_cleanup.plan_cleanup` over the stacked LMDBs); nothing is
written. Results: a markdown table on stdout and ``--json``.
"""
import argparse
import difflib
import json
import logging
from itertools import product
from pathlib import Path

import numpy as np

SOURCES = ("lfw", "cfp", "celeba")


def cfp_names(path):
    names = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        cid, name = line.split("\t", 1)
        names[f"cfp/{cid.strip()}"] = "lfw/" + name.strip().replace(" ", "_")
    return names


def variant(a: str, b: str) -> bool:
    """The same name spelt differently (``George_Bush`` / ``George_W_Bush``, ``Lebron`` / ``LeBron``)."""
    a, b = a.split("/", 1)[1].lower().replace("_", " "), b.split("/", 1)[1].lower().replace("_", " ")
    if difflib.SequenceMatcher(None, a, b).ratio() >= 0.75:
        return True
    wa, wb = a.split(), b.split()  # Recep Erdogen / Recep Tayyip Erdogan
    return wa[0] == wb[0] and difflib.SequenceMatcher(None, wa[-1], wb[-1]).ratio() >= 0.8


def score(plan, truth, lfw_classes):
    groups = plan["merged"]
    links = correct = spelling = 0
    wrong = []
    for g in groups:
        cfp = [c for c in g if c.startswith("cfp/")]
        lfw = [c for c in g if c.startswith("lfw/")]
        for c in cfp:
            for l in lfw:
                links += 1
                correct += truth.get(c) == l
                if truth.get(c) != l:
                    if truth.get(c) and variant(truth[c], l):
                        spelling += 1
                    else:
                        wrong.append(f"{c} ({truth.get(c, '?')[4:]}) + {l}")
    positives = sum(1 for c, l in truth.items() if l in lfw_classes)
    return {
        "groups": len(groups),
        "cfp_lfw_links": links,
        "correct": correct,
        "positives": positives,
        "precision": correct / links if links else float("nan"),
        "recall": correct / positives if positives else float("nan"),
        "spelling_variants": spelling,
        "precision_with_variants": (correct + spelling) / links if links else float("nan"),
        "wrong": wrong,
        "with_celeba": sum(any(c.startswith("celeba/") for c in g) for g in groups),
    }


def main(argv=None):
    from lightface.apps.relabel import _layout, load_embeddings
    from lightface.data.identity_cleanup import plan_cleanup
    from lightface.data.recognition import open_training_lmdbs

    p = argparse.ArgumentParser(prog="python -m benchmarks.relabel_merge", description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default=None,
                   help="folder with lfw.lmdb cfp.lmdb celeba.lmdb (python -m pipelines.build_corpus --data "
                        "../shared/data --out CORPUS); without it the benchmark is skipped")
    p.add_argument("--names", default="../shared/data/cfp_train/names.txt")
    p.add_argument("--embeddings", default="dlib", help="a teacher name or a .npy with one row per stacked sample")
    p.add_argument("--merge-thresholds", type=float, nargs="+", default=[0.5, 0.6, 0.7, 0.8, 0.9])
    p.add_argument("--outlier-thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4])
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.corpus is None:
        print("benchmarks.relabel_merge: skipped: no --corpus (python -m pipelines.build_corpus --data ../shared/data "
              "--out CORPUS builds one)")
        return []

    paths = [str(Path(args.corpus) / f"{s}.lmdb") for s in SOURCES]
    ds = open_training_lmdbs(paths)
    classes = [str(c) for c in ds.classes]
    labels = np.asarray(ds.labels)
    src, _, names, class_sources = _layout(ds, paths)
    emb = load_embeddings(paths, args.embeddings, len(labels))
    truth = cfp_names(args.names)
    truth = {c: l for c, l in truth.items() if c in set(classes)}
    lfw_classes = {c for c in classes if c.startswith("lfw/")}
    rows = []
    for mt, ot in product(args.merge_thresholds, args.outlier_thresholds):
        plan = plan_cleanup(emb, labels, classes, merge_threshold=mt, outlier_threshold=ot, class_sources=class_sources)
        row = {"merge_threshold": mt, "outlier_threshold": ot, **score(plan, truth, lfw_classes)}
        dropped = np.asarray(plan["dropped"], np.int64)
        row["dropped"] = int(len(dropped))
        row["dropped_per_source"] = {n: int((src[dropped] == k).sum()) for k, n in enumerate(names)}
        rows.append(row)
    print(f"{len(labels)} samples, {len(classes)} classes; {rows[0]['positives']} CFP classes have an LFW namesake")
    print("| merge thr | groups | CFP-LFW links | exact namesake | spelling variant | wrong | precision (exact) "
          "| precision (exact + variant) | recall (exact) | groups with CelebA |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    seen = set()
    for r in rows:
        if r["merge_threshold"] in seen:
            continue
        seen.add(r["merge_threshold"])
        print(f"| {r['merge_threshold']} | {r['groups']} | {r['cfp_lfw_links']} | {r['correct']} | {r['spelling_variants']} "
              f"| {len(r['wrong'])} | {r['precision']:.3f} | {r['precision_with_variants']:.3f} "
              f"| {r['recall']:.3f} ({r['correct']}/{r['positives']}) | {r['with_celeba']} |")
    print("\n| outlier thr | dropped | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    mt0 = args.merge_thresholds[0] if 0.8 not in args.merge_thresholds else 0.8
    for r in rows:
        if r["merge_threshold"] == mt0:
            print(f"| {r['outlier_threshold']} | {r['dropped']} | "
                  + " | ".join(str(r["dropped_per_source"][n]) for n in names) + " |")
    for r in rows:
        if r["merge_threshold"] == mt0 and r["outlier_threshold"] == rows[0]["outlier_threshold"]:
            print(f"\nwrong CFP-LFW links at merge threshold {mt0}: " + "; ".join(r["wrong"]))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    return rows


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    main()
