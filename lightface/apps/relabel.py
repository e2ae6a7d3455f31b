"""Semantic bootstrapping of a noisy corpus (the application behind ``python -m pipelines.relabel``).

One bootstrapping round on one LMDB or several (one per source, stacked in
:class:`~lightface.data.multi_source.MultiSourceDataset` order, as ``train_lightcnn``
stacks them) has two composable steps:

1. **relabel** with a trained Light CNN's predictions (keep / relabel / drop,
   :func:`lightface.data.relabel.relabel_decisions`), when ``weights`` is given;
2. **clean up** with one embedding per sample (:func:`lightface.data.identity_cleanup.plan_cleanup`):
   duplicate identities across sources merged (mutual best centroid match), outliers dropped
   (low cosine to the rest of their class). The embeddings come from the model
   (``embeddings="model"``: its 256-d features, same forward pass as step 1), from a teacher
   stored beside each LMDB (``embeddings="dlib"``: ``<lmdb>/teacher_dlib.npy``, the teacher as
   a relabel oracle), or from a ``.npy`` file with one row per stacked sample.

It sits in the application layer because it combines every layer below it: a model
checkpoint (models), the Light CNN evaluation transforms (data), teacher embeddings
(distill), batched prediction (eval) and a device (engine).
"""
import csv
import json
import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from ..data.identity_cleanup import plan_cleanup
from ..data.lmdb_format import is_complete_dataset
from ..data.recognition import SampleTransformDataset, data_paths, lightcnn_transforms, open_training_lmdbs
from ..data.relabel import (ACTION_NAMES, DROP, KEEP, RELABEL, check_distinct_output, copy_with_labels,
                            merged_alignment, relabel_decisions)
from ..distill.teacher import TEACHERS, has_teacher_embeddings, load_teacher_embeddings, save_teacher_embeddings
from ..engine.distributed import resolve_device
from ..eval.predict import predict
from ..models.checkpoint import build_from_checkpoint
from ..models.lightcnn import LightCNN
from ..models.pretrained import file_or_shipped, require_default
from ..utils.atomic_write import write_text_atomic
from ..utils.checkpoint_io import load_checkpoint

__all__ = ["relabel_lmdb", "load_embeddings"]

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def _stored_class_sources(lmdb) -> Optional[List[Any]]:
    """The per-class sources a relabel output records (``metadata["build"]["class_sources"]``), or None."""
    stored = (lmdb.metadata.get("build") or {}).get("class_sources")
    return stored if isinstance(stored, list) and len(stored) == len(lmdb.classes) else None


def _layout(dataset, paths: List[str]):
    """(sample source position (N,), index inside the source (N,), source names, class sources (K,)).

    A class's source is its LMDB's source name, or, for an LMDB written by an earlier relabel round,
    the sources recorded per class there (a list for a class merged across sources), so a later
    round still merges across the original sources only."""
    sets = list(getattr(dataset, "datasets", [dataset]))
    names = list(dataset.names) if hasattr(dataset, "datasets") else [Path(paths[0]).stem]
    class_sources: List[Any] = []
    for name, d in zip(names, sets):
        class_sources += _stored_class_sources(d) or [name] * len(d.classes)
    if hasattr(dataset, "datasets"):
        src = np.asarray(dataset.sources, np.int64)
        local = np.arange(len(dataset), dtype=np.int64) - np.asarray(dataset.sample_offsets, np.int64)[src]
        return src, local, names, class_sources
    return np.zeros(len(dataset), np.int64), np.arange(len(dataset), dtype=np.int64), names, class_sources


def _source_set(entry) -> List[str]:
    return [entry] if isinstance(entry, str) else sorted(str(e) for e in entry)


def _carry_teacher_embeddings(paths: Sequence[PathLike], target: Path, keep_rows: np.ndarray) -> List[str]:
    """Copy the rows ``keep_rows`` of every teacher's embeddings that all sources have into ``target``
    (the new LMDB's folder), so ``train_lightcnn --data OUT --distill dlib`` trains on the cleaned
    corpus without recomputing the teacher. Returns the teachers carried over; one whose files cannot
    be read is left out with a warning (carrying them is an extra, the relabelled LMDB stands without)."""
    carried = []
    for teacher in sorted(TEACHERS):
        if not all(has_teacher_embeddings(p, teacher) for p in paths):
            continue
        try:
            emb = np.concatenate([load_teacher_embeddings(p, teacher) for p in paths])
            save_teacher_embeddings(target, emb[keep_rows], teacher)
        except (ValueError, OSError) as e:
            log.warning("the %s teacher embeddings are not carried over (%s); compute them for the new LMDB with "
                        "python -m pipelines.teacher_embeddings --data OUT --teacher %s", teacher, e, teacher)
            continue
        carried.append(teacher)
    return carried


def load_embeddings(paths: Sequence[PathLike], embeddings: str, count: int) -> np.ndarray:
    """The (N, D) per-sample embeddings of the stacked LMDBs ``paths``: a teacher name
    (``"dlib"``: ``<lmdb>/teacher_dlib.npy`` of every LMDB, concatenated) or a ``.npy`` file
    with ``count`` rows. NaN rows (teacher failed) are left untouched by the cleanup."""
    if embeddings in TEACHERS:
        emb = np.concatenate([load_teacher_embeddings(p, embeddings) for p in paths])
    elif str(embeddings).endswith(".npy"):
        if not Path(embeddings).is_file():
            raise FileNotFoundError(f"--embeddings {embeddings}: no such file")
        emb = np.asarray(np.load(embeddings), np.float32)
    else:
        raise ValueError(f"--embeddings must be 'model', a teacher ({', '.join(sorted(TEACHERS))}) or a .npy file, "
                         f"got {embeddings!r}")
    if emb.ndim != 2 or emb.shape[0] != count:
        raise ValueError(f"--embeddings {embeddings}: expected one row per sample ({count}), got shape {emb.shape}")
    return emb


def relabel_lmdb(
    data: Union[PathLike, Sequence[PathLike]],
    weights: Optional[PathLike],
    out: PathLike,
    threshold: float = 0.7,
    batch_size: int = 128,
    workers: int = 0,
    device: str = "auto",
    resize: Optional[int] = None,
    crop: Optional[int] = None,
    overwrite: bool = False,
    progress: bool = True,
    *,
    embeddings: Optional[str] = None,
    relabel: bool = True,
    merge: bool = True,
    drop: bool = True,
    merge_threshold: float = 0.8,
    outlier_threshold: float = 0.3,
    min_class_size: int = 3,
    center: bool = True,
) -> Dict[str, Any]:
    """Relabel (and optionally clean up) the LMDB(s) ``data`` and write the result to ``out``.

    Args:
        data: a lightface LMDB, or several (one per source; their classes are stacked in order
            as in :class:`~lightface.data.multi_source.MultiSourceDataset`).
        weights: a ``train_lightcnn`` checkpoint whose classifier covers the (stacked) classes
            of ``data``, or a shipped model's name (an embedder: ``relabel=False``); None to skip
            the prediction step (then ``embeddings="model"`` takes the features of the shipped
            recogniser, :func:`~lightface.models.default_weights` ``("recognition")``).
        out: the new LMDB. Without clean-up it has the same classes (kept samples unchanged,
            relabelled ones with the predicted label, dropped ones left out); with clean-up,
            merged classes become one (named ``"a+b"``) and outliers are left out.
            ``out/relabel_report.json`` holds the counts and settings,
            ``out/relabel_changes.csv`` every relabelled / dropped sample of the prediction
            step, ``out/cleanup_merged.csv`` every merged group and ``out/cleanup_dropped.csv``
            every outlier (source, index, class, score).
        threshold: probability needed to switch a disagreeing label (the paper: 0.7).
        resize, crop: evaluation preprocessing (resize, then centre crop); default: the values
            stored in the checkpoint's training config, else 144 / 128.
        overwrite: replace an existing ``out``.
        embeddings: None (no clean-up), ``"model"`` (the model's features), a teacher name
            (``"dlib"``) or a ``.npy`` path (one row per stacked sample).
        relabel: apply the prediction step when ``weights`` is given (False: use the model
            only for its embeddings).
        merge, drop: the two halves of the clean-up; ``merge_threshold`` / ``outlier_threshold``
            / ``min_class_size`` / ``center``: see :func:`~lightface.data.identity_cleanup.plan_cleanup`.

    Returns:
        the report dict (``counts`` of the prediction step, ``cleanup``, ``totals``, paths ...).
    """
    paths = data_paths(data)
    out = Path(out)
    for p in paths:
        check_distinct_output(p, out)
    if is_complete_dataset(out) and not overwrite:  # before the prediction pass, not after it
        raise FileExistsError(f"--out {out} already holds a complete dataset; pass --overwrite (overwrite=True) to "
                              "replace it, or choose another --out")
    if weights is None and embeddings is None:
        raise ValueError("relabel needs --weights (a model to predict with), or --embeddings: model (the shipped "
                         "recogniser's features without --weights), a teacher or a .npy file")
    if embeddings is None and (weights is None or not relabel):
        raise ValueError("nothing to do: no prediction step (--weights, without --no-relabel) and no --embeddings clean-up")
    if embeddings is not None and not (merge or drop):
        raise ValueError("--embeddings with both --no-merge and --no-drop does nothing; drop one of them")
    # settings are checked here, before hours of prediction
    use_model = weights is not None and (relabel or embeddings == "model")
    if use_model and relabel and not 0.0 < threshold <= 1.0:
        raise ValueError(f"--threshold must be in (0, 1] (a probability), got {threshold}")
    if embeddings is not None:
        if merge and not -1.0 <= merge_threshold <= 1.0:
            raise ValueError(f"--merge-threshold must be a cosine in [-1, 1], got {merge_threshold}")
        if drop and not -1.0 <= outlier_threshold <= 1.0:
            raise ValueError(f"--outlier-threshold must be a cosine in [-1, 1], got {outlier_threshold}")
    if weights is not None and not use_model:
        log.warning("--weights %s is not used: --no-relabel and the clean-up takes its embeddings from %s, not the "
                    "model (pass --embeddings model to use its features)", weights, embeddings)
        weights = None
    if weights is None and embeddings == "model":
        # the recogniser that ships with lightface, as every other tool uses it: an embedder (it has no classifier)
        entry = require_default("recognition", "recognition", "relabel --embeddings model",
                                "--weights: a train_lightcnn checkpoint or a shipped model's name")
        weights = entry.path()  # sha256-checked
        relabel, use_model = False, True
        log.info("--embeddings model without --weights: the shipped recogniser %s (embeddings only, no prediction "
                 "step; merge threshold %s: docs/noisy_labels.md, 'With the model's features', says which suits it)",
                 entry.name, merge_threshold)
    elif weights is not None and use_model:
        weights = file_or_shipped(os.fspath(weights), "--weights")  # a file, else a shipped model's name
    dataset = open_training_lmdbs(paths, "input")
    merged_alignment(getattr(dataset, "datasets", [dataset]), paths)  # OUT records one crop: refused before predicting
    classes = [str(c) for c in dataset.classes]
    labels = np.asarray(dataset.labels, np.int64)
    n = len(labels)
    sample_src, local_index, source_names, class_sources = _layout(dataset, paths)
    data_repr = paths[0] if len(paths) == 1 else paths
    if embeddings is not None and merge and len({a for c in class_sources for a in _source_set(c)}) < 2:
        log.warning("%s holds one source (%s) and no per-class sources of an earlier relabel round: merging joins "
                    "classes of different sources only, so this run only drops outliers; give the sources as "
                    "separate --data LMDBs to merge them", data_repr, source_names[0])

    # -- step 1: the model's predictions (and features)
    action = np.full(n, KEEP, np.int8)
    new_label = labels.copy()
    decisions = None
    features = None
    if use_model:
        weights = Path(weights)
        raw = load_checkpoint(weights)
        train_cfg = raw.get("config", {}) if isinstance(raw, dict) else {}
        ckpt_classes = raw.get("classes") if isinstance(raw, dict) else None
        if relabel and ckpt_classes is not None and [str(c) for c in ckpt_classes] != classes:
            raise ValueError(f"{weights} was trained on other classes than {data_repr}; relabel needs the model of this "
                             "data set (several LMDBs: the same ones in the same order as in training)")
        dev = resolve_device(device)
        model = build_from_checkpoint(raw, map_location=dev, expect=LightCNN)
        num_classes = getattr(model, "num_classes", 0)
        if relabel and not num_classes:
            raise ValueError(f"{weights} has no classifier (an embedding model), so it cannot predict the classes of "
                             f"{data_repr}; use it with --no-relabel --embeddings model, or relabel with a "
                             "train_lightcnn checkpoint trained on these LMDBs")
        if relabel and num_classes != len(classes):
            raise ValueError(f"{weights}: classifier has {num_classes} outputs but {data_repr} has {len(classes)} classes")
        resize = resize or int(train_cfg.get("resize", 144))
        crop = crop or int(train_cfg.get("crop", 128))
        eval_set = SampleTransformDataset(dataset, lightcnn_transforms(crop, resize)[1])
        want_features = embeddings == "model"
        with torch.inference_mode():
            result = predict(model, eval_set, batch_size, workers, dev, features=want_features, progress=progress,
                             classify=relabel)
        probs, pred_labels, indices = result[:3]
        if want_features:
            features = np.empty((n, result[3].shape[1]), np.float32)
            features[indices] = result[3]
        if relabel:
            order = np.argsort(indices)
            decisions = relabel_decisions(probs[order], pred_labels[order], threshold)
            action, new_label = decisions.action, decisions.new_label
            log.info("relabel %s: %s (threshold %.2f)", data_repr, decisions.counts(), threshold)
    counts = {name: int((action == code).sum()) for code, name in ACTION_NAMES.items()}

    # -- step 2: merge duplicate identities across sources, drop outliers
    out_classes = classes
    final_label = np.where(action == DROP, -1, new_label)
    plan = None
    alive = np.flatnonzero(action != DROP)
    if embeddings is not None:
        emb = features if embeddings == "model" else load_embeddings(paths, embeddings, n)
        if not np.isfinite(emb[alive]).all(1).any():
            raise ValueError(f"--embeddings {embeddings}: no sample has a usable (finite) embedding, so nothing can be "
                             "merged or dropped; recompute them (a teacher: python -m pipelines.teacher_embeddings)")
        plan = plan_cleanup(emb[alive], new_label[alive], classes,
                            merge_threshold=merge_threshold if merge else np.inf,
                            outlier_threshold=outlier_threshold if drop else -np.inf,
                            class_sources=class_sources, min_class_size=min_class_size, center=center)
        out_classes = plan["classes"]
        final_label[alive] = plan["labels"]
        log.info("clean-up %s with %s embeddings: %d merged groups, %d outliers dropped", data_repr, embeddings,
                 plan["stats"]["merge_groups"], plan["stats"]["dropped"])

    keep_rows = np.flatnonzero(final_label >= 0)
    if len(keep_rows) == 0:
        why = f"prediction threshold {threshold}" if decisions is not None else "no prediction step"
        if plan is not None and drop:
            why += f", outlier threshold {outlier_threshold}"
        raise ValueError(f"relabel {data_repr}: every sample would be dropped ({why}); nothing to write")
    # the sources of every output class (a list: a class merged across sources), for the next round's merge
    member_sources = {name: _source_set(cs) for name, cs in zip(classes, class_sources)}
    groups = {"+".join(g): g for g in plan["merged"]} if plan is not None else {}
    out_class_sources: List[Any] = []
    for name in out_classes:
        atoms = sorted({a for member in groups.get(name, [name]) for a in member_sources[member]})
        out_class_sources.append(atoms[0] if len(atoms) == 1 else atoms)
    build_info = {"relabelled_from": data_repr, "relabel_weights": None if weights is None else str(weights),
                  "relabel_threshold": threshold if decisions is not None else None, "relabel_counts": counts,
                  "sources": source_names, "class_sources": out_class_sources}
    if plan is not None:
        build_info["cleanup"] = {"embeddings": embeddings, **{k: v for k, v in plan["stats"].items()
                                                              if not k.endswith("threshold")},
                                 "merge_threshold": merge_threshold if merge else None,
                                 "outlier_threshold": outlier_threshold if drop else None}
    report: Dict[str, Any] = {}

    def photo(row: int) -> str:
        """The stored sample's own record of where it came from (its image path in the source), to look it up."""
        return str((dataset.record(int(row)).get("attributes") or {}).get("source", ""))

    def publish(target: Path) -> None:
        """Write the report, the CSVs and the carried teacher rows into ``target`` (``OUT.partial``), so
        that they appear together with the dataset when it is renamed to ``out``."""
        report["teachers_carried"] = _carry_teacher_embeddings(paths, target, keep_rows)
        report.update({
            "data": data_repr,
            "sources": source_names,
            "weights": None if weights is None else str(weights),
            "out": str(out),
            "threshold": threshold if decisions is not None else None,
            "samples": int(n),
            "counts": counts,
            "written": int(len(keep_rows)),
            "classes": len(classes),
            "lmdb": {"out": str(out), "written": int(len(keep_rows))},
        })
        if decisions is not None:
            changed = np.flatnonzero(action != KEEP)
            with open(target / "relabel_changes.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["index", "action", "old_label", "old_class", "new_label", "new_class", "predicted", "confidence",
                            "source", "source_index", "photo"])
                for row in changed:
                    a = int(action[row])
                    new = int(new_label[row])
                    w.writerow([int(row), ACTION_NAMES[a], int(labels[row]), classes[labels[row]],
                                new if a == RELABEL else "", classes[new] if a == RELABEL else "",
                                int(decisions.predicted[row]), f"{float(decisions.confidence[row]):.4f}",
                                source_names[sample_src[row]], int(local_index[row]), photo(row)])
            report["changes_csv"] = str(out / "relabel_changes.csv")
        if plan is not None:
            dropped = alive[np.asarray(plan["dropped"], np.int64)]
            scores = np.full(n, np.nan)
            scores[alive] = plan["scores"]
            with open(target / "cleanup_merged.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["group", "new_class", "classes", "sources", "min_centroid_cosine"])
                for g, (names, cos) in enumerate(zip(plan["merged"], plan["merged_cosine"])):
                    srcs = ["+".join(_source_set(class_sources[classes.index(c)])) for c in names]
                    w.writerow([g, "+".join(names), " ".join(names), " ".join(srcs), f"{cos:.4f}"])
            with open(target / "cleanup_dropped.csv", "w", newline="", encoding="utf-8") as f:
                w = csv.writer(f)
                w.writerow(["source", "source_index", "index", "class", "score", "photo"])
                for row in dropped:
                    w.writerow([source_names[sample_src[row]], int(local_index[row]), int(row), classes[new_label[row]],
                                f"{float(scores[row]):.4f}", photo(row)])
            report["cleanup"] = {
                "embeddings": str(embeddings),
                "merge_threshold": merge_threshold if merge else None,
                "outlier_threshold": outlier_threshold if drop else None,
                "min_class_size": min_class_size,
                "merge_groups": plan["stats"]["merge_groups"],
                "merged_classes": int(sum(len(g) for g in plan["merged"])),
                "dropped": plan["stats"]["dropped"],
                "without_embedding": plan["stats"]["without_embedding"],
                "classes_after": plan["stats"]["classes_after"],
                "merged": plan["merged"],
                "merged_csv": str(out / "cleanup_merged.csv"),
                "dropped_csv": str(out / "cleanup_dropped.csv"),
            }
        report["totals"] = {
            "samples": int(n),
            "written": int(len(keep_rows)),
            "relabelled": counts["relabelled"],
            "dropped": int(n - len(keep_rows)),
            "dropped_by_prediction": counts["dropped"],
            "dropped_outliers": 0 if plan is None else plan["stats"]["dropped"],
            "merge_groups": 0 if plan is None else plan["stats"]["merge_groups"],
            "classes_before": len(classes),
            "classes_after": len(out_classes),
        }
        write_text_atomic(target / "relabel_report.json", json.dumps(report, indent=2, default=str) + "\n")

    write_summary = copy_with_labels(dataset, out, keep_rows, final_label[keep_rows], overwrite=overwrite,
                                     progress=progress, build_info=build_info, classes=out_classes,
                                     origins=source_names, before_publish=publish)
    # the summary is known only now: rewrite the report in place (OUT is complete with or without it)
    report["lmdb"] = write_summary
    write_text_atomic(out / "relabel_report.json", json.dumps(report, indent=2, default=str) + "\n")
    return report
