"""keyledger: run the operator, migrate and audit its ledger, show, change and use keys.

Also installed as `kubectl-keyledger`, so `kubectl keyledger status -A` and
`kubectl keyledger rotate phi-primary -n acme` work.

Exit codes: 0 done (for `status`: every key shown is Ready), 1 not Ready, not
found or refused, 2 a usage error or the operator did not confirm in time,
3 the cluster could not be reached or read.
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys
from collections.abc import Sequence

from keyledger.cli.show import add_show_commands, show
from keyledger.heap import limit_arenas
from keyledger.settings import get_settings

_KOPF_SCOPE_OPTIONS = ("-n", "--namespace", "-A", "--all-namespaces", "--clusterwide")
_KOPF_PEERING_OPTIONS = ("--standalone", "-P", "--peering", "-p", "--priority", "--dev")


def kopf_scope(extra: Sequence[str], patterns: Sequence[str]) -> list[str]:
    """kopf's namespace options for KEYLEDGER_NAMESPACES, or the user's own.

    The scope must be kopf's and not a handler filter: kopf removes its finalizer
    from any resource whose handlers all filter it out, so two operators splitting
    namespaces by filter would strip each other's finalizers forever."""
    given = [a for a in extra if a.split("=", 1)[0] in _KOPF_SCOPE_OPTIONS]
    if given and patterns:
        raise SystemExit(
            f"keyledger run: KEYLEDGER_NAMESPACES ({','.join(patterns)}) and {given[0]} "
            "both set the namespaces to serve; keep one of them"
        )
    if given:
        return []
    if not patterns:
        return ["--all-namespaces"]
    return [f"--namespace={pattern}" for pattern in patterns]


def kopf_peering(extra: Sequence[str], peering: str, priority: int | None) -> list[str]:
    """kopf's peering options for KEYLEDGER_PEERING, unless the user gave their own.

    Peers of equal priority all pause (kopf's rule), so an unset priority is random."""
    if any(a.split("=", 1)[0] in _KOPF_PEERING_OPTIONS for a in extra):
        return []
    if not peering:
        return ["--standalone"]
    if priority is None:
        priority = secrets.randbelow(2**31 - 1) + 1
    return [f"--peering={peering}", f"--priority={priority}"]


def _run(extra: Sequence[str]) -> int:
    from kopf.cli import main as kopf_main  # noqa: PLC0415  # kopf only for this subcommand

    limit_arenas()
    settings = get_settings()
    scope = kopf_scope(extra, settings.namespace_patterns())
    peering = kopf_peering(extra, settings.peering, settings.peering_priority)
    args = ["run", "-m", "keyledger.main", *scope, *peering, *extra]
    kopf_main(args=args, standalone_mode=False)
    return 0


def _db_upgrade(revision: str) -> int:
    from keyledger.store.engine import upgrade_database  # noqa: PLC0415

    upgrade_database(get_settings().ledger_url(), revision)
    print(f"ledger migrated to {revision}")
    return 0


def _versions(tenant: str, key_name: str) -> int:
    from keyledger.operations.views import to_version  # noqa: PLC0415
    from keyledger.store.engine import make_engine, make_session_factory  # noqa: PLC0415
    from keyledger.store.repository import KeyLedger  # noqa: PLC0415

    sessions = make_session_factory(make_engine(get_settings().ledger_url()))
    with sessions() as session:
        ledger = KeyLedger(session)
        rows = [
            (to_version(r), r.last_refused_at, ledger.last_needed_at(r.id))
            for r in ledger.versions(tenant, key_name)
        ]
    if not rows:
        print(f"no versions of {tenant}/{key_name} in the ledger", file=sys.stderr)
        return 1
    for row, refused_at, needed_at in rows:
        print(
            json.dumps(
                {
                    "version": row.version,
                    "status": row.status.value,
                    "keyId": str(row.id),
                    "kmsKeyRef": row.kms_key_id,
                    "activatedAt": row.activated_at and row.activated_at.isoformat(),
                    "lastUsedAt": row.last_used_at and row.last_used_at.isoformat(),
                    # A client refused to open data under it: such data still exists.
                    "lastRefusedAt": refused_at and refused_at.isoformat(),
                    # Unused since: no client sealed, opened or asked for it after this.
                    "lastNeededAt": needed_at and needed_at.isoformat(),
                }
            )
        )
    return 0


def _ledger_tool(args: argparse.Namespace) -> int:
    """Commands that read or administer the ledger itself: audit, report, grants."""
    if args.command == "report":
        from keyledger.cli.report import report  # noqa: PLC0415

        return report(args.tenant, args.format)
    if args.command in ("grant", "revoke", "grants"):
        from keyledger.cli import grants as tenant_grants  # noqa: PLC0415

        if args.command == "grants":
            return tenant_grants.list_grants(args.role)
        return tenant_grants.change_grant(args.role, args.tenant, grant=args.command == "grant")
    from keyledger.cli import audit as audit_trail  # noqa: PLC0415

    if args.audit_command == "verify":
        return audit_trail.verify(args.tenant)
    return audit_trail.export(args.tenant, args.since)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="keyledger", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the operator (further arguments go to `kopf run`)")
    db = commands.add_parser("db", help="the ledger database's schema").add_subparsers(
        dest="db_command", required=True
    )
    upgrade = db.add_parser("upgrade", help="migrate the ledger schema up (the migrations Job)")
    upgrade.add_argument("revision", nargs="?", default="head", help="default: head")
    add_show_commands(commands)
    versions = commands.add_parser("versions", help="list a key's versions from the ledger")
    versions.add_argument("tenant")
    versions.add_argument("key_name")
    for kind, help_text in (
        ("rotate", "make a new version of an EncryptionKey now"),
        ("rollback", "make the previous version primary again (within the rollback window)"),
        ("compromise", "mark the current version compromised: disabled, replaced, audited"),
    ):
        request = commands.add_parser(kind, help=help_text)
        request.add_argument("name", help="EncryptionKey name")
        request.add_argument("-n", "--namespace", default="default")
        request.add_argument(
            "--wait",
            type=float,
            default=60.0,
            help="seconds to wait for the operator (0: do not wait)",
        )
        if kind == "compromise":
            request.add_argument("--reason", required=True, help="why; kept in the audit trail")
    for kind, help_text in (
        ("pause", "freeze an EncryptionKey: no KMS or ledger changes until resumed"),
        ("resume", "let a paused EncryptionKey catch up on what waited"),
    ):
        freeze = commands.add_parser(kind, help=help_text)
        freeze.add_argument("name", help="EncryptionKey name")
        freeze.add_argument("-n", "--namespace", default="default")
        freeze.add_argument("--wait", type=float, default=60.0, help="seconds to wait (0: no wait)")
    audit = commands.add_parser("audit", help="the audit trail: verify its hash chains, export it")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser(
        "verify", help="walk each tenant's chain; name the first row changed, inserted or deleted"
    )
    verify.add_argument("--tenant", help="one tenant's chain (default: every tenant's)")
    export = audit_commands.add_parser("export", help="audit rows as JSON lines, oldest first")
    export.add_argument("--tenant", help="one tenant's rows (default: every tenant's)")
    export.add_argument("--since", help="RFC 3339 time, or a duration back from now (24h, 7d)")
    compliance = commands.add_parser(
        "report", help="compliance report: versions, overdue duties, audit chain verdict"
    )
    compliance.add_argument("--tenant", help="one tenant (default: every tenant)")
    compliance.add_argument("--format", choices=("table", "json", "csv"), default="table")
    for kind, help_text in (
        ("grant", "let a database role see a tenant's ledger rows (PostgreSQL row security)"),
        ("revoke", "hide a tenant's ledger rows from a database role again"),
    ):
        change = commands.add_parser(kind, help=help_text)
        change.add_argument("role", help="PostgreSQL role the service connects as")
        change.add_argument("tenant")
    grants = commands.add_parser("grants", help="list which roles see which tenants")
    grants.add_argument("--role")
    from keyledger.cli import data  # noqa: PLC0415  # the client, not loaded for `run`

    data.add_commands(commands)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        # Everything after `run` belongs to kopf, options included.
        return _run(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "db":
        return _db_upgrade(args.revision)
    if args.command in ("status", "history"):
        return show(args)
    if args.command in ("audit", "report", "grant", "revoke", "grants"):
        return _ledger_tool(args)
    if args.command in ("encrypt", "decrypt", "rewrap"):
        return data.run(args)
    if args.command in ("pause", "resume"):
        from keyledger.cli.requests import set_paused  # noqa: PLC0415

        return set_paused(args.name, args.namespace, args.command == "pause", args.wait)
    if args.command in ("rotate", "rollback", "compromise"):
        from keyledger.cli.requests import request_transition  # noqa: PLC0415
        from keyledger.lifecycle.actions import RequestKind  # noqa: PLC0415

        return request_transition(
            RequestKind(args.command),
            args.name,
            args.namespace,
            getattr(args, "reason", None),
            args.wait,
        )
    return _versions(args.tenant, args.key_name)


if __name__ == "__main__":
    sys.exit(main())
