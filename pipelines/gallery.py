"""Look into and manage a face gallery (made by python -m pipelines.enroll): what it holds, removing people or
faces, renaming people, its FAISS index.

    python -m pipelines.gallery people.gallery info                      # counts, model, settings, index, disk
    python -m pipelines.gallery people.gallery info --verify             # + the full consistency check
    python -m pipelines.gallery people.gallery list                      # people, face counts, face ids, photos
    python -m pipelines.gallery people.gallery list "Ada Lovelace"       # one person's faces
    python -m pipelines.gallery people.gallery remove "Ada Lovelace" Bob # every face of these people
    python -m pipelines.gallery people.gallery remove --face-id 12 40    # single faces (ids: list, search, enroll)
    python -m pipelines.gallery people.gallery remove --photo photos/bob/3.jpg   # the faces enrolled from a photo
    python -m pipelines.gallery people.gallery rename "Ada Lovelce" "Ada Lovelace"   # add --merge into an existing one
    python -m pipelines.gallery people.gallery index auto                # build (or rebuild) the FAISS index
    python -m pipelines.gallery people.gallery index none                # drop it: search is exact

``remove`` asks nothing and removes atomically (all or nothing); anything it is given that matches no face
(an unknown person, face id or photo) is an error and nothing is removed. It prints what went; removing drops
the FAISS index (rows are renumbered): ``index auto`` builds it again. ``index`` takes what ``enroll --index``
takes: auto (HNSW up to 2M faces, IVF above), hnsw, ivf, flat, a FAISS factory string (``IVF1024,SQfp16``),
or none (drop). The gallery is never created here. ``--json FILE`` also writes what is printed, as JSON
(atomically). Exit status 1 when the gallery cannot be opened, a name, id or photo is not in it, or rename's NEW
is enrolled already (without --merge); 2 for a command line that does not fit the command.
"""
import argparse
import json
import logging
import sys
from typing import Any, Dict, List

from pipelines._argtypes import json_file
from pipelines._cli import DefaultsHelpFormatter, run_cli

logger = logging.getLogger("pipelines.gallery")

COMMANDS = ("info", "list", "remove", "rename", "index")


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser("pipelines.gallery", description="Look into and manage a face gallery: info, list, "
                                "remove people or faces, rename people, build or drop its FAISS index",
                                add_help=add_help, formatter_class=DefaultsHelpFormatter)
    p.add_argument("gallery", help="gallery folder (made by python -m pipelines.enroll; never created here)")
    p.add_argument("command", choices=COMMANDS,
                   help="info: counts, model, settings, threshold, index, disk size; list: people with their face "
                        "ids and photos; remove: people (names), faces (--face-id) or photos (--photo); rename: OLD "
                        "NEW; index: build the FAISS index (KIND) or drop it (none)")
    p.add_argument("names", nargs="*", metavar="NAME|KIND",
                   help="list / remove: names of enrolled people; rename: OLD NEW; index: one KIND: auto (HNSW or IVF "
                        "by size), hnsw, ivf, flat, a FAISS factory string, or none (drop the index)")
    p.add_argument("--face-id", type=int, nargs="+", action="extend", default=None, metavar="ID",
                   help="remove: these faces (ids as list, search and enroll print them)")
    p.add_argument("--photo", nargs="+", action="extend", default=None, metavar="PATH",
                   help="remove: the faces enrolled from these photos (paths as enrolled; relative ones are also "
                        "looked up from the current folder)")
    p.add_argument("--merge", action="store_true",
                   help="rename: when NEW is already enrolled, move OLD's faces into it (without it that is refused)")
    p.add_argument("--verify", action="store_true",
                   help="info: also check the whole gallery (SQLite integrity, rows, unit vectors, index); exit "
                        "status 1 with every problem listed when it is damaged")
    p.add_argument("--json", type=json_file, default=None, help="also write what is printed to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="index: no progress bar")
    return p


def _check_command_line(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Refuse, before the gallery is opened, what the command cannot take (ConfigError: exit status 2)."""
    from lightface.engine.config import ConfigError
    from pipelines._argtypes import refuse_flags

    cmd = args.command
    if cmd != "remove":
        refuse_flags(args, parser, ["face_id", "photo"], f"only remove takes them, not {cmd}")
    if cmd != "info":
        refuse_flags(args, parser, ["verify"], f"only info takes it, not {cmd}")
    if cmd != "rename":
        refuse_flags(args, parser, ["merge"], f"only rename takes it, not {cmd}")
    if cmd == "rename" and len(args.names) != 2:
        raise ConfigError(f"rename takes OLD NEW (quote names with spaces); got {len(args.names)} name(s)")
    if cmd == "info" and args.names:
        raise ConfigError(f"info takes no names (got {' '.join(args.names)}); list NAME shows a person's faces")
    if cmd == "index" and len(args.names) != 1:
        raise ConfigError("index takes one KIND: auto, hnsw, ivf, flat, a FAISS factory string, or none (drop the "
                          "index); "
                          f"got {' '.join(args.names) if args.names else 'nothing'}")
    if cmd == "remove" and not (args.names or args.face_id or args.photo):
        raise ConfigError("remove what? give names of people, --face-id ID ..., or --photo PATH ... "
                          "(python -m pipelines.gallery GALLERY list shows them)")


def _info(gallery, verify: bool) -> Dict[str, Any]:
    out = gallery.describe()
    if verify:
        gallery.verify()  # raises CorruptGalleryError listing every problem
        out["verified"] = True
    model = out["model"]
    print(f"gallery:   {out['path']} ({out['bytes'] / 2 ** 20:.1f} MiB on disk)")
    print(f"faces:     {out['faces']} of {out['identities']} people" + (f", {out['dim']}-d" if out["dim"] else ""))
    print(f"model:     {gallery.model if model else 'none recorded (any model is taken)'}")
    print(f"threshold: {'none stored' if out['threshold'] is None else round(out['threshold'], 4)}"
          " (stored: identify's default when the model has none)")
    print(f"settings:  {json.dumps(out['settings'], sort_keys=True) if out['settings'] else 'none recorded'}")
    index = out["index"]
    if index is None:
        print("index:     none (exact search)")
    else:
        exact = out["faces"] - index["rows"]
        print(f"index:     FAISS {index['factory']} over {index['rows']} faces {json.dumps(index['params'])} "
              f"({index['file']})" + (f"; {exact} newer faces searched exactly" if exact > 0 else ""))
    if verify:
        print("verify:    ok")
    return out


def _face_entry(r) -> Dict[str, Any]:
    return {"face_id": int(r.face_id), "path": r.path, "det_score": None if r.det_score is None else
            round(float(r.det_score), 4), "duplicate_of": r.duplicate_of}


def _list(gallery, names: List[str]) -> Dict[str, Any]:
    faces = gallery.select_faces(identities=names) if names else gallery.faces()
    people: Dict[str, List[Any]] = {}
    for r in faces:
        people.setdefault(r.identity, []).append(r)
    out = {"gallery": str(gallery.path), "faces": len(faces), "people": []}
    for name in sorted(people):
        records = sorted(people[name], key=lambda r: r.face_id)
        print(f"{name}: {len(records)} face{'s' if len(records) != 1 else ''}")
        for r in records:
            dup = "" if r.duplicate_of is None else f"  (near-duplicate of face {r.duplicate_of})"
            print(f"  face {r.face_id:>6}  {r.path or '-'}{dup}")
        out["people"].append({"identity": name, "count": len(records), "faces": [_face_entry(r) for r in records]})
    print(f"{len(faces)} faces of {len(people)} people" + ("" if names else f" in {gallery.path}"))
    return out


def _remove(gallery, args: argparse.Namespace) -> Dict[str, Any]:
    try:
        doomed = gallery.select_faces(args.names, args.face_id or (), args.photo or ())
    except KeyError as err:
        raise ValueError(f"{err.args[0]}; nothing was removed") from None
    had_index = gallery.index_info is not None
    removed = gallery.remove_faces([r.face_id for r in doomed])
    left = set(gallery.identities())
    by_person: Dict[str, int] = {}
    for r in doomed:
        by_person[r.identity] = by_person.get(r.identity, 0) + 1
    for r in doomed:
        print(f"removed face {r.face_id} of {r.identity}: {r.path or '-'}")
    gone = sorted(n for n in by_person if n not in left)
    print(f"{gallery.path}: removed {removed} faces of {len(by_person)} people"
          + (f" ({', '.join(gone)} no longer enrolled)" if gone else "")
          + f"; {len(gallery)} faces of {len(left)} people left")
    if had_index and removed:
        print(f"the FAISS index was dropped (rows are renumbered); python -m pipelines.gallery {gallery.path} index "
              "auto builds it again (meanwhile search is exact)")
    return {"gallery": str(gallery.path), "removed": [{**_face_entry(r), "identity": r.identity} for r in doomed],
            "people_removed": gone, "faces": len(gallery), "people": len(left),
            "index_dropped": had_index and removed > 0}


def _rename(gallery, old: str, new: str, merge: bool) -> Dict[str, Any]:
    try:
        moved = gallery.rename(old, new, merge=merge)
    except KeyError as err:
        raise ValueError(f"{err.args[0]} (python -m pipelines.gallery {gallery.path} list shows the people)") from None
    except ValueError as err:
        raise ValueError(str(err).replace("pass merge=True", "pass --merge (merge=True)")) from None
    total = gallery.counts().get(new, 0)
    print(f"{gallery.path}: renamed {old!r} to {new!r} ({moved} faces); {new!r} has {total} faces")
    return {"gallery": str(gallery.path), "old": old, "new": new, "faces_moved": moved, "faces_of_new": total}


def _index(gallery, kind: str, progress: bool) -> Dict[str, Any]:
    if kind.lower() == "none":
        before = gallery.index_info
        gallery.drop_index()
        print(f"{gallery.path}: " + ("no FAISS index to drop" if before is None else
                                     f"dropped the FAISS index {before['factory']} ({before['file']})")
              + "; search is exact")
        return {"gallery": str(gallery.path), "index": None, "dropped": before}
    try:
        info = gallery.build_index(kind, progress=progress)
    except ImportError as err:  # faiss-cpu missing: one line, not a traceback
        raise RuntimeError(str(err)) from err
    print(f"{gallery.path}: built FAISS {info['factory']} over {info['rows']} faces {json.dumps(info['params'])}")
    return {"gallery": str(gallery.path), "index": info}


def main(args: argparse.Namespace) -> Dict[str, Any]:
    """Run one command on the gallery; returns what it printed, as a dict (``--json`` writes it)."""
    from lightface.gallery import FaceGallery
    from lightface.utils.atomic_write import write_text_atomic

    _check_command_line(args, get_args_parser())
    with FaceGallery(args.gallery, create=False) as gallery:
        if args.command == "info":
            out = _info(gallery, args.verify)
        elif args.command == "list":
            try:
                out = _list(gallery, args.names)
            except KeyError as err:
                raise ValueError(err.args[0]) from None
        elif args.command == "remove":
            out = _remove(gallery, args)
        elif args.command == "rename":
            out = _rename(gallery, *args.names, args.merge)
        else:
            out = _index(gallery, args.names[0], not args.no_progress)
    if args.json:
        write_text_atomic(args.json, json.dumps(out, indent=2, default=str))
    return out


if __name__ == "__main__":
    sys.exit(run_cli(main, get_args_parser))
