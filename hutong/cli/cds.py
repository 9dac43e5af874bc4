"""``hutong cds ...``: decision-support knowledge versions from the command line.

    hutong cds load FILE --effective-from DATE [--effective-to DATE] [--author ACCOUNT] [--note TEXT]
                   [--concept-map CM.json ...]
    hutong cds seed --effective-from DATE [--author ACCOUNT]      (the demo region's 互认 knowledge)
    hutong cds list
    hutong cds show VERSION [--body]
    hutong cds approve VERSION --approver ACCOUNT
    hutong cds retire VERSION --by ACCOUNT
    hutong cds concept-maps VERSION                               (local code maps as FHIR ConceptMaps)
    hutong cds diff OLD NEW                                       (rows added, removed, changed)

FILE is a mutual-recognition (检查检验结果互认) knowledge set in JSON or YAML (hutong.cds.knowledge
describes it; hutong/cds/seed/recognition.json is an example); with ``load --kind safety`` it is
the privilege and drug-allergy rules' configuration (hutong.cds.safety_config), and ``list
--kind safety`` lists those versions.  approve, retire, show and diff take a version of any kind.  Each ``--concept-map`` is one
institution's local code map as a FHIR R4 ConceptMap (as ``concept-maps`` writes them); it
replaces that institution's codes of the same system in FILE.  A loaded version is a draft:
it fires only after a committee account other than its author approves it (four-eyes), from
its effective date.  ACCOUNT is an account id or username: ``--approver`` and ``--by`` must
be active ``committee`` accounts (``hutong accounts add-user --role committee``); ``--author``
a committee or commission account (default: this command line, as the local operator).
Every step is written to the audit log.  Output is JSON on stdout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import orjson

from hutong.cli.context import print_json as _print
from hutong.cli.context import repository
from hutong.errors import InvalidRequest
from hutong.security.principal import LOCAL_OPERATOR, Principal
from hutong.store.repository import Repository

DB_HELP = "sqlite:///path or postgresql://... (default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)"
SEED = Path(__file__).resolve().parent.parent / "cds" / "seed" / "recognition.json"
KINDS = ("recognition", "safety")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("cds", help="decision-support knowledge: load, list, show, approve, retire",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help=DB_HELP)
    ops = p.add_subparsers(dest="cds_command", metavar="ACTION")
    ops.required = True

    ld = ops.add_parser("load", help="load a knowledge set (JSON or YAML) as a new draft version")
    ld.add_argument("file", type=Path)
    ld.add_argument("--kind", choices=KINDS, default=KINDS[0], help="what the file holds (default: recognition)")
    ld.add_argument("--concept-map", type=Path, action="append", default=[], metavar="FILE",
                    help="an institution's local code map (FHIR ConceptMap JSON); repeatable")
    _draft_args(ld)
    ld.set_defaults(func=run, action=_load)

    sd = ops.add_parser("seed", help="load the demo region's 互认 knowledge (hutong/cds/seed) as a draft")
    _draft_args(sd)
    sd.set_defaults(func=run, action=_seed)

    ls = ops.add_parser("list", help="every version, newest first")
    ls.add_argument("--kind", choices=KINDS, default=KINDS[0])
    ls.set_defaults(func=run, action=_list)

    sh = ops.add_parser("show", help="one version")
    sh.add_argument("version")
    sh.add_argument("--body", action="store_true", help="with the knowledge set itself")
    sh.set_defaults(func=run, action=_show)

    ap = ops.add_parser("approve", help="approve a draft (a committee account other than its author)")
    ap.add_argument("version")
    ap.add_argument("--approver", required=True, metavar="ACCOUNT")
    ap.set_defaults(func=run, action=_approve)

    rt = ops.add_parser("retire", help="retire a version (withdraw a draft, or take an active one out of force)")
    rt.add_argument("version")
    rt.add_argument("--by", required=True, metavar="ACCOUNT")
    rt.set_defaults(func=run, action=_retire)

    cm = ops.add_parser("concept-maps", help="a version's local code maps as FHIR ConceptMaps (a Bundle)")
    cm.add_argument("version")
    cm.set_defaults(func=run, action=_concept_maps)

    df = ops.add_parser("diff", help="what changed from one version to another (for the reviewers)")
    df.add_argument("old")
    df.add_argument("new")
    df.set_defaults(func=run, action=_diff)


def _draft_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--effective-from", required=True, metavar="DATE", help="first day in force (YYYY-MM-DD)")
    p.add_argument("--effective-to", metavar="DATE", help="last day in force (default: until retired)")
    p.add_argument("--author", metavar="ACCOUNT", help="the author's account (default: the local operator)")
    p.add_argument("--note", help="what changed, for the reviewers")


def run(args: argparse.Namespace) -> int:
    with repository(args.database) as repo:
        rc: int = args.action(args, repo)
        return rc


def _versions(repo: Repository, kind: str = KINDS[0]) -> Any:
    from hutong.cds.versions import KnowledgeVersions
    from hutong.security.audit import AuditLog

    if kind == "safety":
        from hutong.cds.safety_config import SafetyVersions

        return SafetyVersions(repo, AuditLog(repo))
    return KnowledgeVersions(repo, AuditLog(repo), kind=kind)


def _of(repo: Repository, version_id: str) -> Any:
    """The versions of the kind ``version_id`` holds (HT-0502 later when there is none)."""
    from hutong.cds.versions import kind_of

    return _versions(repo, kind_of(repo, version_id) or KINDS[0])


def _who(repo: Repository, account: str | None) -> Principal:
    from hutong.cds.versions import account_principal

    return LOCAL_OPERATOR if account is None else account_principal(repo, account)


def read_knowledge(path: Path) -> Any:
    """A knowledge set from a JSON or YAML file (HT-0500 when it cannot be read)."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise InvalidRequest("HT-0500", f"knowledge file {path.name}: {type(e).__name__}") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(raw)
        except yaml.YAMLError:
            raise InvalidRequest("HT-0500", f"knowledge file {path.name} is not valid YAML") from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("HT-0500", f"knowledge file {path.name} is not valid JSON") from None


def with_concept_maps(data: Any, maps: list[Any]) -> Any:
    """``data`` with each ConceptMap's codes in place of that institution's codes of the same system."""
    from hutong.cds.knowledge import LOCAL_CODE_PREFIX, local_codes_from_concept_map

    if not maps:
        return data
    if not isinstance(data, dict):
        raise InvalidRequest("HT-0501", "knowledge: must be an object")
    entries = [e for cm in maps for e in local_codes_from_concept_map(cm)]
    replaced = {(e["institution"], e["system"]) for e in entries}
    kept = [e for e in data.get("local_codes") or () if not (
        isinstance(e, dict) and (e.get("institution"), e.get("system") or LOCAL_CODE_PREFIX + str(
            e.get("institution"))) in replaced)]
    return {**data, "local_codes": [*kept, *entries]}


def _load(args: argparse.Namespace, repo: Repository) -> int:
    data = with_concept_maps(read_knowledge(args.file), [read_knowledge(p) for p in args.concept_map])
    return _draft(args, repo, data, args.kind)


def _seed(args: argparse.Namespace, repo: Repository) -> int:
    return _draft(args, repo, read_knowledge(SEED))


def _draft(args: argparse.Namespace, repo: Repository, data: Any, kind: str = KINDS[0]) -> int:
    v = _versions(repo, kind).draft(_who(repo, args.author), data, effective_from=args.effective_from,
                              effective_to=args.effective_to, note=args.note)
    return _print(v.to_json())


def _list(args: argparse.Namespace, repo: Repository) -> int:
    return _print([v.to_json() for v in _versions(repo, args.kind).list()])


def _show(args: argparse.Namespace, repo: Repository) -> int:
    vs = _of(repo, args.version)
    out = vs.get(args.version).to_json()
    if args.body:
        out["knowledge"] = orjson.loads(vs.body(args.version))
    return _print(out)


def _approve(args: argparse.Namespace, repo: Repository) -> int:
    return _print(_of(repo, args.version).approve(args.version, _who(repo, args.approver)).to_json())


def _retire(args: argparse.Namespace, repo: Repository) -> int:
    return _print(_of(repo, args.version).retire(args.version, _who(repo, args.by)).to_json())


def _concept_maps(args: argparse.Namespace, repo: Repository) -> int:
    from hutong.cds.knowledge import concept_maps, parse

    vs = _versions(repo)
    v = vs.get(args.version)
    maps = concept_maps(parse(orjson.loads(vs.body(args.version))), version=str(v.seq),
                        status={"draft": "draft", "active": "active"}.get(v.status, "retired"))
    return _print({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": m} for m in maps]})


def _diff(args: argparse.Namespace, repo: Repository) -> int:
    from hutong.cds.knowledge import diff

    vs = _of(repo, args.old)
    old, new = vs.get(args.old), _of(repo, args.new).get(args.new)
    if old.kind != new.kind:
        raise InvalidRequest("HT-0501", f"version {args.old} holds {old.kind} knowledge, {args.new} {new.kind}")
    if old.kind == KINDS[0]:
        return _print(diff(vs.rows(args.old), vs.rows(args.new)))
    # Other kinds keep no rows: their top-level entries that differ.
    a, b = orjson.loads(vs.body(args.old)), orjson.loads(vs.body(args.new))
    return _print({k: {"from": a.get(k), "to": b.get(k)} for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)})
