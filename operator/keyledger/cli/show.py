"""`kubectl keyledger status` and `history`: read keys, change nothing.

Both read what the operator publishes (the resource's status and its
Kubernetes events), so they need only `get`/`list` on EncryptionKeys and
events: the ledger database is not touched.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from keyledger.api import ENCRYPTION_KEYS, GROUP, VERSION
from keyledger.kube import load_kubernetes_config

EXIT_OK = 0
EXIT_NOT_READY_OR_MISSING = 1
EXIT_UNREACHABLE = 3

# Conditions shown in the CONDITIONS column when True; Ready has a column of its own.
_NOTABLE = ("Rotating", "RollbackAvailable", "Expiring", "Drifted", "Paused")


class ClusterUnreachable(Exception):
    """The API could not be asked; the message says what to check."""


def add_show_commands(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="a table of EncryptionKeys: phase, version, next rotation, rollback window, "
        "conditions, last use",
        description="Exit code 0 when every key shown is Ready, 1 when one is not (or the "
        "named key does not exist), 3 when the cluster cannot be reached.",
    )
    status.add_argument("name", nargs="?", help="one EncryptionKey (default: all)")
    _scope(status)
    _output(status)
    history = commands.add_parser(
        "history",
        help="an EncryptionKey's versions and the events that changed them",
        description="Versions come from status.versions (newest first), events from the "
        "Kubernetes events of the resource (kept by the cluster for about an hour by "
        "default; the ledger's key_events table keeps them for good). Exit code 1 when the "
        "key does not exist, 3 when the cluster cannot be reached.",
    )
    history.add_argument("name", help="EncryptionKey name")
    history.add_argument("-n", "--namespace", help="default: the kubeconfig context's")
    _output(history)


def show(args: argparse.Namespace) -> int:
    try:
        namespace = args.namespace or _context_namespace()
        if args.command == "status":
            return _status(args.name, None if args.all_namespaces else namespace, args.output)
        return _history(args.name, namespace, args.output)
    except ClusterUnreachable as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE


# -- status -------------------------------------------------------------------------------


def status_row(key: Mapping[str, Any]) -> dict[str, Any]:
    """What `status` shows of one key, as data (the -o json|yaml form)."""
    metadata = key.get("metadata") or {}
    status = key.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or ()}
    ready = conditions.get("Ready") or {}
    return {
        "namespace": metadata.get("namespace"),
        "name": metadata.get("name"),
        "tenant": (key.get("spec") or {}).get("tenant"),
        "phase": status.get("phase"),
        "version": status.get("version"),
        "ready": ready.get("status", "Unknown"),
        "reason": ready.get("reason"),
        "nextRotationAt": status.get("nextRotationAt"),
        "rollbackExpiresAt": status.get("rollbackExpiresAt"),
        "lastUsedAt": status.get("lastUsedAt"),
        "conditions": [t for t in _NOTABLE if (conditions.get(t) or {}).get("status") == "True"],
    }


def render_status(rows: Sequence[Mapping[str, Any]], all_namespaces: bool) -> str:
    header = ["NAME", "TENANT", "PHASE", "VERSION", "READY", "NEXT ROTATION"]
    header += ["ROLLBACK UNTIL", "LAST USED", "CONDITIONS"]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    table = []
    for row in rows:
        ready = row["ready"] if row["ready"] == "True" else f"{row['ready']} ({row['reason']})"
        cells = [
            row["name"],
            row["tenant"],
            row["phase"],
            row["version"],
            ready,
            row["nextRotationAt"],
            row["rollbackExpiresAt"],
            row["lastUsedAt"],
            ",".join(row["conditions"]),
        ]
        if all_namespaces:
            cells.insert(0, row["namespace"])
        table.append(cells)
    return _table(header, table)


def _status(name: str | None, namespace: str | None, output: str | None) -> int:
    api = _api()
    if name is not None:
        found = _get_key(api, name, namespace or "default")
        if found is None:
            print(_missing(name, namespace or "default"), file=sys.stderr)
            return EXIT_NOT_READY_OR_MISSING
        keys = [found]
    else:
        keys = _list_keys(api, namespace)
    rows = [status_row(k) for k in sorted(keys, key=_sort_key)]
    if not rows:
        where = f"namespace {namespace}" if namespace else "any namespace"
        print(f"no EncryptionKeys in {where}", file=sys.stderr)
    elif output:
        print(_dump(rows, output), end="")
    else:
        print(render_status(rows, all_namespaces=namespace is None))
    return EXIT_OK if all(r["ready"] == "True" for r in rows) else EXIT_NOT_READY_OR_MISSING


# -- history ------------------------------------------------------------------------------


def history_of(key: Mapping[str, Any], events: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """A key's versions (newest first) and its events (oldest first), as data."""
    uid = (key.get("metadata") or {}).get("uid")
    mine = [e for e in events if (e.get("involvedObject") or {}).get("uid") in (uid, None)]
    return {
        "versions": [
            {
                "version": v.get("version"),
                "phase": v.get("phase"),
                "kmsKeyRef": v.get("kmsKeyRef"),
                "activatedAt": v.get("activatedAt"),
                "rotatedAt": v.get("rotatedAt"),
                "rollbackExpiresAt": v.get("rollbackExpiresAt"),
                "lastUsedAt": v.get("lastUsedAt"),
            }
            for v in (key.get("status") or {}).get("versions") or ()
        ],
        "events": sorted(
            (
                {
                    "time": _event_time(e),
                    "type": e.get("type"),
                    "reason": e.get("reason"),
                    "count": e.get("count") or 1,
                    "message": e.get("message"),
                }
                for e in mine
            ),
            key=lambda e: e["time"] or "",
        ),
    }


def render_history(history: Mapping[str, Any]) -> str:
    versions = _table(
        ["VERSION", "PHASE", "ACTIVATED", "ROTATED", "ROLLBACK UNTIL", "LAST USED", "KMS REF"],
        [
            [
                v["version"],
                v["phase"],
                v["activatedAt"],
                v["rotatedAt"],
                v["rollbackExpiresAt"],
                v["lastUsedAt"],
                v["kmsKeyRef"],
            ]
            for v in history["versions"]
        ],
    )
    events = _table(
        ["TIME", "TYPE", "REASON", "COUNT", "MESSAGE"],
        [[e["time"], e["type"], e["reason"], e["count"], e["message"]] for e in history["events"]],
    )
    if not history["events"]:
        events = "no events (the cluster keeps them for about an hour)"
    return f"{versions}\n\nEVENTS\n{events}"


def _history(name: str, namespace: str, output: str | None) -> int:
    api = _api()
    key = _get_key(api, name, namespace)
    if key is None:
        print(_missing(name, namespace), file=sys.stderr)
        return EXIT_NOT_READY_OR_MISSING
    history = history_of(key, _events(name, namespace))
    print(_dump(history, output) if output else render_history(history), end="\n" * (not output))
    return EXIT_OK


# -- the API --------------------------------------------------------------------------------


def _api() -> client.CustomObjectsApi:
    try:
        load_kubernetes_config()
    except (config.ConfigException, OSError) as error:
        raise ClusterUnreachable(
            f"no cluster to talk to ({error}); set KUBECONFIG or run inside a cluster"
        ) from None
    return client.CustomObjectsApi()


def _context_namespace() -> str:
    try:
        _, active = config.list_kube_config_contexts()  # type: ignore[no-untyped-call]
    except (config.ConfigException, OSError):
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


def _call(what: str, call: Any) -> Any:
    try:
        return call()
    except ApiException as error:
        if error.status == 404:
            return None
        hint = "ask for get/list on it (the keyledger-key-viewer role grants it)"
        if error.status in (401, 403):
            raise ClusterUnreachable(
                f"not allowed to read {what} (HTTP {error.status}); {hint}"
            ) from None
        raise ClusterUnreachable(f"reading {what} failed with HTTP {error.status}") from None
    except (HTTPError, OSError) as error:
        raise ClusterUnreachable(
            f"cannot reach the Kubernetes API ({type(error).__name__}); check KUBECONFIG and "
            "that the cluster is up"
        ) from None


def _get_key(api: client.CustomObjectsApi, name: str, namespace: str) -> dict[str, Any] | None:
    return cast(
        dict[str, Any] | None,
        _call(
            f"encryptionkey {namespace}/{name}",
            lambda: api.get_namespaced_custom_object(
                GROUP, VERSION, namespace, ENCRYPTION_KEYS, name
            ),
        ),
    )


def _list_keys(api: client.CustomObjectsApi, namespace: str | None) -> list[dict[str, Any]]:
    if namespace is None:
        found = _call(
            "encryptionkeys",
            lambda: api.list_cluster_custom_object(GROUP, VERSION, ENCRYPTION_KEYS),
        )
    else:
        found = _call(
            f"encryptionkeys in {namespace}",
            lambda: api.list_namespaced_custom_object(GROUP, VERSION, namespace, ENCRYPTION_KEYS),
        )
    if found is None:  # the list itself is missing: so is the resource type
        raise ClusterUnreachable(
            "this cluster has no EncryptionKey resource type; install the CRDs "
            "(kubectl apply -k crds, or an overlay of manifests/)"
        )
    return list(found.get("items") or [])


def _events(name: str, namespace: str) -> list[dict[str, Any]]:
    core = client.CoreV1Api()
    found = _call(
        f"events in {namespace}",
        lambda: core.list_namespaced_event(
            namespace,
            field_selector=f"involvedObject.kind=EncryptionKey,involvedObject.name={name}",
        ),
    )
    if found is None:
        return []
    to_json = client.ApiClient().sanitize_for_serialization  # camelCase, times as text
    return [cast(dict[str, Any], to_json(e)) for e in found.items]  # type: ignore[no-untyped-call]


# -- output ---------------------------------------------------------------------------------


def _scope(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-n", "--namespace", help="default: the kubeconfig context's")
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="keys in every namespace"
    )


def _output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("json", "yaml"), help="default: a table")


def _dump(data: Any, output: str) -> str:
    if output == "json":
        return json.dumps(data, indent=2) + "\n"
    return yaml.safe_dump(data, sort_keys=False)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [list(header)] + [["-" if v is None or v == "" else str(v) for v in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def _sort_key(key: Mapping[str, Any]) -> tuple[str, str]:
    metadata = key.get("metadata") or {}
    return (str(metadata.get("namespace")), str(metadata.get("name")))


def _event_time(event: Mapping[str, Any]) -> str | None:
    """When the event last happened, spelled like the status times (…Z)."""
    for field in ("lastTimestamp", "eventTime", "firstTimestamp"):
        if event.get(field):
            return str(event[field]).replace("+00:00", "Z")
    created = (event.get("metadata") or {}).get("creationTimestamp")
    return str(created).replace("+00:00", "Z") if created else None


def _missing(name: str, namespace: str) -> str:
    return (
        f"error: no EncryptionKey {name} in namespace {namespace}; "
        f"`kubectl keyledger status -n {namespace}` lists the keys there"
    )
