"""``edgeface db ACTION``: manage the enrollment database directly on the device (no daemon needed).

Every action takes ``--config FILE`` and ``--json``; the default output is a human table. Changes
are safe while the daemon runs: writers serialise on the database's file lock, and the daemon
reloads the file when it changes.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeface.config import Settings, load_settings
from edgeface.errors import CommandError
from edgeface.matching.bulk import NO_CHIP, import_folder, rebuild
from edgeface.matching.db import FaceDatabase
from edgeface.matching.enroll import Enroller, EnrollmentGate, enrollment_vision
from edgeface.matching.records import PersonRecord
from edgeface.tools.progress import Progress
from edgeface.vision.manifest import load_manifest

if TYPE_CHECKING:
    from edgeface.vision.analyzer import FaceAnalyzer

ActionHandler = Callable[[argparse.Namespace, Settings], int]
_META_CHARS = 40  # metadata column width in `db list`


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {type(value).__name__}")
    return value


def register(sub: Any) -> None:
    parser = sub.add_parser("db", help="list, enroll, import, export, back up and repair the face database")
    actions = parser.add_subparsers(dest="db_action", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", type=Path, help="TOML settings file (database and vision sections)")
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")

    def action(name: str, help_text: str, handler: ActionHandler) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = actions.add_parser(name, help=help_text, parents=[common])
        p.set_defaults(handler=lambda args: handler(args, load_settings(args.config)))
        return p

    p = action("list", "list persons in creation order", _list)
    p.add_argument("--skip", type=int, default=0, help="persons to skip (paging)")
    p.add_argument("--limit", type=int, default=None, help="persons to show (default: all)")
    p = action("get", "show one person and their samples", _get)
    p.add_argument("person_id", metavar="ID")
    p = action("enroll", "enroll NAME from photos (adds to the person if NAME exists)", _enroll)
    p.add_argument("name", metavar="NAME")
    p.add_argument("images", metavar="IMG", type=Path, nargs="+", help="photo files, one face each")
    p.add_argument(
        "--metadata", "--meta", dest="meta", type=_json_object, help="metadata JSON object, e.g. '{\"access\": true}'"
    )
    p.add_argument("--force", action="store_true", help="enroll even if a face matches another person")
    p = action("import", "enroll a folder: one subfolder (or one image file) per person", _import)
    p.add_argument("folder", metavar="DIR", type=Path)
    p.add_argument("--force", action="store_true", help="keep faces that match another person")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p = action("export", "write a standalone copy of the database", _export)
    p.add_argument("out", metavar="OUT", type=Path)
    p = action("rename", "rename a person", _rename)
    p.add_argument("person_id", metavar="ID")
    p.add_argument("name", metavar="NAME")
    p = action("delete", "delete a person, or one sample with --sample", _delete)
    p.add_argument("person_id", metavar="ID")
    p.add_argument("--sample", metavar="SID", help="delete only this sample")
    action("backups", "list backups (newest first)", _backups)
    p = action("restore", "make a backup current (the current state becomes a backup)", _restore)
    p.add_argument("backup_id", metavar="BACKUP")
    p = action("reset", "remove every person (kept as a backup)", _reset)
    p.add_argument("--yes", action="store_true", help="confirm")
    p = action("rebuild", "re-embed stored face chips with the configured model", _rebuild)
    p.add_argument("--quiet", action="store_true", help="no progress bar")


# --- helpers ---------------------------------------------------------------------------------


def _model(settings: Settings) -> tuple[str, int]:
    spec = load_manifest(settings.vision.models_dir).embedder(settings.vision.embedder)
    assert spec.output is not None  # the manifest validates embedders to have one
    return spec.id, spec.output.size


def _open(settings: Settings) -> FaceDatabase:
    model_id, dim = _model(settings)
    db = settings.database
    return FaceDatabase.open(settings.db_path, model_id, dim, backups=db.backups, keep_images=db.keep_images)


def _print_json(value: object) -> int:
    print(json.dumps(value, indent=2, ensure_ascii=False))
    return 0


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    for row in [list(headers), *cells]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _short_meta(person: PersonRecord) -> str:
    text = person.metadata_text
    return text if len(text) <= _META_CHARS else text[: _META_CHARS - 3] + "..."


def _progress(label: str, quiet: bool) -> tuple[Callable[[int, int, str], None] | None, Callable[[], None]]:
    """A progress callback drawing on stderr, and a function ending its line."""
    if quiet:
        return None, lambda: None
    state: dict[str, Any] = {}

    def update(done: int, total: int, item: str) -> None:
        bar = state.setdefault("bar", Progress(label, total))
        bar.update(done, item, force=done == total)
        state["done"] = done

    def close() -> None:
        if "bar" in state:
            state["bar"].close(state["done"])

    return update, close


def _analyzer(settings: Settings) -> FaceAnalyzer:
    # Imported here, not at the top: it loads the LiteRT runtime and the models, which list, get,
    # backups, restore and the other bookkeeping actions must not need.
    from edgeface.vision.analyzer import FaceAnalyzer

    return FaceAnalyzer.from_config(enrollment_vision(settings.vision))


def _enroller(settings: Settings, db: FaceDatabase, analyzer: FaceAnalyzer) -> Enroller:
    threshold = settings.decision.match_threshold
    if threshold is None:
        threshold = analyzer.embedder.default_threshold
    return Enroller(db, analyzer, EnrollmentGate.from_config(settings.database), threshold)


# --- actions ---------------------------------------------------------------------------------


def _list(args: argparse.Namespace, settings: Settings) -> int:
    total, people = _open(settings).list(args.skip, args.limit)
    if args.json:
        return _print_json({"total": total, "skip": args.skip, "persons": [p.to_json(samples=False) for p in people]})
    _table(
        ["ID", "NAME", "SAMPLES", "CREATED", "METADATA"],
        [[p.id, p.name, f"{p.positives}+{p.negatives}", p.created, _short_meta(p)] for p in people],
    )
    print(f"{len(people)} of {total} persons")
    return 0


def _get(args: argparse.Namespace, settings: Settings) -> int:
    person = _open(settings).get(args.person_id)
    if args.json:
        return _print_json(person.to_json())
    print(f"id:        {person.id}\nname:      {person.name}\ncreated:   {person.created}")
    print(f"updated:   {person.updated}\nmetadata:  {person.metadata_text}")
    rows = []
    for s in person.samples:
        q = s.quality
        quality = f"{q.face_px:.0f}px sharp {q.sharpness:.0f} yaw {q.yaw:.0f}" if q else "-"
        rows.append([s.id, s.kind, s.source, s.created, quality, "yes" if s.has_chip else "no"])
    _table(["SAMPLE", "KIND", "SOURCE", "CREATED", "QUALITY", "CHIP"], rows)
    return 0


def _enroll(args: argparse.Namespace, settings: Settings) -> int:
    images = []
    for i, path in enumerate(args.images):
        try:
            images.append(path.read_bytes())
        except OSError as exc:
            raise CommandError("bad_request", f"image {i} ({path}) cannot be read: {exc.strerror}") from exc
    db = _open(settings)
    labels = [f"image {i} ({p})" for i, p in enumerate(args.images)]
    with _analyzer(settings) as analyzer:
        result = _enroller(settings, db, analyzer).from_images(
            args.name, images, args.meta, force=args.force, labels=labels
        )
    if args.json:
        return _print_json(result.to_json())
    verb = "enrolled new person" if result.created else "added to"
    print(f"{verb} {result.person.name} (id {result.person.id}): {len(result.sample_ids)} new samples")
    return 0


def _import(args: argparse.Namespace, settings: Settings) -> int:
    db = _open(settings)
    update, close = _progress("import", args.quiet or args.json)
    try:
        with _analyzer(settings) as analyzer:
            summary = import_folder(_enroller(settings, db, analyzer), args.folder, update, force=args.force)
    finally:
        close()
    if args.json:
        return _print_json(summary.to_json())
    print(
        f"{summary.images} images: {summary.faces_added} faces added; "
        f"{len(summary.persons_created)} persons created, {len(summary.persons_updated)} updated; "
        f"{len(summary.rejected)} rejected"
    )
    for r in summary.rejected:
        print(f"  {r.code}: {r.reason}")
    return 0


def _export(args: argparse.Namespace, settings: Settings) -> int:
    db = _open(settings)
    db.export(args.out)
    total = db.list()[0]
    if args.json:
        return _print_json({"path": str(args.out), "persons": total})
    print(f"exported {total} persons to {args.out}")
    return 0


def _rename(args: argparse.Namespace, settings: Settings) -> int:
    person = _open(settings).rename(args.person_id, args.name)
    if args.json:
        return _print_json(person.to_json(samples=False))
    print(f"renamed {person.id} to {person.name}")
    return 0


def _delete(args: argparse.Namespace, settings: Settings) -> int:
    db = _open(settings)
    if args.sample:
        person = db.delete_sample(args.person_id, args.sample)
        text = f"deleted sample {args.sample} of {person.name} ({person.id})"
    else:
        person = db.delete_person(args.person_id)
        text = f"deleted {person.name} ({person.id}); backups still hold them for the next {db.backups_kept} saves"
    if args.json:
        return _print_json({"deleted": args.sample or person.id, "person": person.to_json()})
    print(text)
    return 0


def _backups(args: argparse.Namespace, settings: Settings) -> int:
    backups = _open(settings).backups()
    if args.json:
        return _print_json([b.to_json() for b in backups])
    rows = [[b.id, b.created, "?" if b.persons is None else b.persons, b.size_bytes, b.error or "ok"] for b in backups]
    _table(["BACKUP", "CREATED", "PERSONS", "BYTES", "STATUS"], rows)
    return 0


def _restore(args: argparse.Namespace, settings: Settings) -> int:
    db = _open(settings)
    db.restore(args.backup_id)
    if args.json:
        return _print_json({"restored": args.backup_id, "generation": db.generation})
    print(f"restored backup {args.backup_id} as generation {db.generation} ({db.list()[0]} persons)")
    return 0


def _reset(args: argparse.Namespace, settings: Settings) -> int:
    if not args.yes:
        raise CommandError("bad_request", "reset removes every person; add --yes to confirm")
    db = _open(settings)
    before = db.generation
    db.reset()
    backup = str(before) if db.backups_kept else None
    if args.json:
        return _print_json({"generation": db.generation, "backup": backup})
    print("database emptied" + (f"; the previous contents are backup {backup}" if backup else ""))
    return 0


def _rebuild(args: argparse.Namespace, settings: Settings) -> int:
    model_id, dim = _model(settings)
    update, close = _progress("rebuild", args.quiet or args.json)
    try:
        with _analyzer(settings) as analyzer:
            summary = rebuild(
                settings.db_path,
                analyzer,
                model_id,
                dim,
                backups=max(1, settings.database.backups),  # the pre-rebuild file must survive as a backup
                keep_images=settings.database.keep_images,
                progress_cb=update,
            )
    finally:
        close()
    if args.json:
        return _print_json(summary.to_json())
    print(f"rebuilt for {summary.model_id}: {summary.persons} persons, {summary.samples} samples")
    for r in summary.lost_samples:
        print(f"  lost {r.reason}")
    for name in summary.lost_persons:
        print(f"  dropped {name}: no sample could be re-embedded")
    missing = sum(NO_CHIP in r.reason for r in summary.lost_samples)
    if missing:
        print(
            f"{missing} samples had no stored chip: they were enrolled with database.keep_images off, and "
            "only a new enrollment (`edgeface db enroll`) can describe them for the new model"
        )
    return 0
