"""``hutong mpi ...``: operate the master patient index from the command line.

    hutong mpi stats                      sources, persons, open reviews, model version
    hutong mpi train [--seed N]           estimate m/u from the stored records, activate a new version
    hutong mpi relink [--dry-run]         re-run linkage; report what changed; manual decisions kept
    hutong mpi review [--status S]        the review queue with field-by-field comparisons (JSON)
    hutong mpi link PATIENT PERSON        a human decision: this source is that person
    hutong mpi unlink PATIENT             ... this source is not its current person
    hutong mpi merge PERSON INTO_PERSON   two persons are one
    hutong mpi undo EVENT                 reverse a link, unlink or merge (unmerge)

Output is JSON on stdout; no names or ID numbers are printed except by
``review``, whose purpose is to show them to the reviewer.
"""

from __future__ import annotations

import argparse
import sys

from hutong.cli.context import print_json as _print
from hutong.cli.context import repository
from hutong.mpi import state as st
from hutong.mpi.service import Mpi
from hutong.platform import mpi_of


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("mpi", help="master patient index: train, relink, review, link/unlink/merge/undo",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database", metavar="URL", help="sqlite:///path or postgresql://... "
                                                     "(default: $HUTONG_DATABASE_URL or sqlite:///var/hutong.db)")
    p.add_argument("--actor", default="cli", help="who takes the decision (recorded with it)")
    ops = p.add_subparsers(dest="mpi_command", metavar="ACTION")
    ops.required = True
    ops.add_parser("stats", help="counts and the model version").set_defaults(func=run, action=_stats)
    t = ops.add_parser("train", help="estimate the model from the stored records (new active version)")
    t.add_argument("--seed", type=int, default=1)
    t.add_argument("--random-pairs", type=int, default=200_000)
    t.set_defaults(func=run, action=_train)
    r = ops.add_parser("relink", help="re-run linkage over every source; manual decisions are kept")
    r.add_argument("--dry-run", action="store_true", help="report what would change, change nothing")
    r.set_defaults(func=run, action=_relink)
    v = ops.add_parser("review", help="list the review queue (JSON)")
    v.add_argument("--status", default="open", choices=["open", "linked", "rejected", "unlinked", "obsolete"])
    v.add_argument("--limit", type=int, default=50)
    v.set_defaults(func=run, action=_review)
    lk = ops.add_parser("link", help="link a source patient to a person (pinned)")
    lk.add_argument("patient")
    lk.add_argument("person")
    lk.add_argument("--reason")
    lk.set_defaults(func=run, action=_link)
    ul = ops.add_parser("unlink", help="detach a source patient from its person")
    ul.add_argument("patient")
    ul.add_argument("--reason")
    ul.set_defaults(func=run, action=_unlink)
    mg = ops.add_parser("merge", help="merge PERSON into INTO_PERSON")
    mg.add_argument("person")
    mg.add_argument("into_person")
    mg.add_argument("--reason")
    mg.set_defaults(func=run, action=_merge)
    ud = ops.add_parser("undo", help="undo a link/unlink/merge event (an unmerge restores both persons)")
    ud.add_argument("event", type=int)
    ud.add_argument("--reason")
    ud.set_defaults(func=run, action=_undo)


def run(args: argparse.Namespace) -> int:
    """Open the database, run the action on its MPI, close it (connection pools included)."""
    with repository(args.database) as repo:
        rc: int = args.action(args, mpi_of(repo))
        return rc


def _stats(args: argparse.Namespace, mpi: Mpi) -> int:
    return _print({**st.index_counts(st.repo_reader(mpi.repo)), "model_version": mpi.model().version})


def _train(args: argparse.Namespace, mpi: Mpi) -> int:
    from hutong.mpi.train import train
    try:
        rep = train(mpi, seed=args.seed, random_pairs=args.random_pairs)
    except ValueError as e:
        print(f"hutong mpi train: {e}", file=sys.stderr)
        return 2
    return _print(rep.__dict__)


def _relink(args: argparse.Namespace, mpi: Mpi) -> int:
    from hutong.mpi.relink import relink
    return _print(relink(mpi, dry_run=args.dry_run, actor=args.actor).to_json())


def _review(args: argparse.Namespace, mpi: Mpi) -> int:
    return _print(mpi.review_items(status=args.status, limit=args.limit))


def _link(args: argparse.Namespace, mpi: Mpi) -> int:
    return _print({"event": mpi.link(args.patient, args.person, actor=args.actor, reason=args.reason)})


def _unlink(args: argparse.Namespace, mpi: Mpi) -> int:
    return _print({"event": mpi.unlink(args.patient, actor=args.actor, reason=args.reason)})


def _merge(args: argparse.Namespace, mpi: Mpi) -> int:
    return _print({"event": mpi.merge(args.person, args.into_person, actor=args.actor, reason=args.reason)})


def _undo(args: argparse.Namespace, mpi: Mpi) -> int:
    return _print({"event": mpi.undo(args.event, actor=args.actor, reason=args.reason)})
