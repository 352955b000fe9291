"""The ``onconode`` command: one sub-command per job, each a thin call into its package.

Errors that a person can fix (bad configuration, unreachable peer, unreadable file) are printed as
one line on stderr with a non-zero exit; tracebacks are for bugs only.
"""

from __future__ import annotations

import argparse
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from onconode.config import Role, Settings, load_settings
from onconode.events import configure_logging

Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    try:
        return load_settings(args.config, **overrides)
    except (FileNotFoundError, ValidationError) as err:
        raise UsageError(f"configuration: {err}") from err


def cmd_serve(args: argparse.Namespace) -> int:
    from onconode.api.server import ApiServerError
    from onconode.dicom_node.receivers import ReceiverError
    from onconode.dicom_node.tls import TLSError
    from onconode.models import ModelError
    from onconode.node import serve_forever
    from onconode.state import StateError
    from onconode.state.shared_storage import StorageMismatch

    settings = _settings(args, roles=args.roles) if args.roles else _settings(args)
    configure_logging(settings.log.level)
    try:
        serve_forever(settings)
    except (ModelError, ApiServerError, ReceiverError, TLSError, StorageMismatch) as err:
        raise UsageError(str(err)) from err
    except StateError as err:
        raise UsageError(f"state: {str(err).splitlines()[0]}") from err
    return 0


def _roles(text: str) -> list[Role]:
    """``--role`` values: one role or several separated by commas."""
    try:
        return [Role(name.strip()) for name in text.split(",") if name.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: roles are {', '.join(r.value for r in Role)}") from None


def cmd_models_list(args: argparse.Namespace) -> int:
    from onconode.models import ModelError, load_manifest

    folder = args.models or _settings(args).analysis.models
    manifests = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not manifests:
        print(f"no model manifest (*.yaml) in {folder}")
        return 0
    status = 0
    for path in manifests:
        try:
            m = load_manifest(path)
        except ModelError as err:
            print(f"{path.name}: unreadable: {err}")
            status = 1
            continue
        labels = ", ".join(label.name + ("*" if label.name in m.decision.positive_labels else "")
                           for label in m.labels)
        decision = f"threshold {m.decision.threshold}" if m.decision.verdict else "no verdict (ranks slices)"
        print(f"{m.name:<22} {m.version:<10} {m.modality:<3} {m.file:<28} {decision}  labels: {labels}")
        print(f"{'':<22} accepts: {m.accepts.summary(m.modality)}")
    return status


def cmd_models_verify(args: argparse.Namespace) -> int:
    from onconode.models import ModelError, load_manifest, verify

    folder = args.models or _settings(args).analysis.models
    manifests = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not manifests:
        raise UsageError(f"no model manifest (*.yaml) in {folder}")
    failed = 0
    for path in manifests:
        try:
            model = verify(load_manifest(path), folder)
        except ModelError as err:
            print(f"FAILED  {path.name}: {err}")
            failed += 1
            continue
        print(f"ok      {model.manifest.name} {model.manifest.version}: file present, sha256 matches, inputs, "
              "outputs and Grad-CAM head as the manifest says")
    return 1 if failed else 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from onconode.config import config_path
    from onconode.doctor import Finding, Level, examine

    settings = _settings(args)
    source = config_path(args.config) or "no file, the embedded defaults,"
    findings = [Finding(Level.OK, "config", f"{source} is valid")]
    findings += examine(settings, reach_destinations=not args.offline)
    for finding in findings:
        print(finding.line())
    problems = sum(f.level is Level.PROBLEM for f in findings)
    print(f"{problems} problem(s), {sum(f.level is Level.WARNING for f in findings)} warning(s)")
    return 1 if problems else 0


def cmd_send(args: argparse.Namespace) -> int:
    from onconode.dicom_node.scu import PeerAddress, SendError, send_paths

    try:
        peer = PeerAddress.parse(args.to)
        report = send_paths(args.paths, peer, calling_ae=args.calling_ae, tls=_client_tls(args))
    except (ValueError, SendError) as err:
        raise UsageError(str(err)) from err
    print(report.summary())
    return 0 if report.all_succeeded else 1


def cmd_echo(args: argparse.Namespace) -> int:
    from onconode.dicom_node.scu import PeerAddress, SendError, echo

    try:
        status = echo(PeerAddress.parse(args.peer), calling_ae=args.calling_ae, tls=_client_tls(args))
    except (ValueError, SendError) as err:
        raise UsageError(str(err)) from err
    print(f"C-ECHO {args.peer}: status 0x{status:04X}")
    return 0 if status == 0 else 1


def cmd_analyze(args: argparse.Namespace) -> int:
    from onconode.analyze import AnalyzeError, run_analyze

    settings = _settings(args)
    configure_logging(settings.log.level if args.verbose else "WARNING")
    try:
        return run_analyze(args.path, settings, models=args.models, out=args.out, as_json=args.json)
    except AnalyzeError as err:
        raise UsageError(str(err)) from err


def cmd_deadletter(args: argparse.Namespace) -> int:
    from onconode.state import DeliveryState, StateError, open_state

    settings = _settings(args)
    try:
        db = open_state(settings.state)
    except StateError as err:
        raise UsageError(str(err)) from err
    try:
        if args.action == "list":
            dead = db.deliveries(state=DeliveryState.DEAD)
            for d in dead:
                print(f"{d.id}\t{d.study_uid}\t{d.kind}\t{d.destination}\t{d.path.name}\t"
                      f"attempts={d.attempts}\t{d.last_error or ''}")
            print(f"{len(dead)} dead deliveries", file=sys.stderr)
            return 0
        ids = args.ids or None
        studies = db.replay_dead(ids)
        print(f"replayed dead deliveries of {len(studies)} studies; the running node sends them on its next pass")
        return 0
    finally:
        db.close()


def _client_tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    from onconode.dicom_node.tls import client_context

    if not args.tls_ca:
        return None
    return client_context(args.tls_ca, args.tls_cert, args.tls_key)


def _add_scu_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calling-ae", default="ONCONODE-SCU", help="our AE title (default ONCONODE-SCU)")
    parser.add_argument("--tls-ca", type=Path, help="CA certificate (PEM): use DICOM TLS and verify the peer")
    parser.add_argument("--tls-cert", type=Path, help="client certificate (PEM) for TLS")
    parser.add_argument("--tls-key", type=Path, help="client private key (PEM) for TLS")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onconode",
        description="OncoNode: AI cancer classification as a DICOM node. Research use only, not for diagnosis.")
    parser.add_argument("--config", type=Path, default=None,
                        help="YAML configuration (default: $ONCONODE_CONFIG, else config/onconode.yaml)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the node: DICOM listener, study assembler, analysis worker",
                           description="Listen for C-ECHO and C-STORE, store every instance durably, "
                                       "queue each study once it is stable, and analyse it.")
    serve.add_argument("--role", dest="roles", action="extend", type=_roles, metavar="ROLE[,ROLE]",
                       help="what this process runs: receive, analyse, deliver, api (repeat it or separate "
                            "with commas; default: roles in the configuration, all four unless set)")
    serve.set_defaults(func=cmd_serve)

    send = sub.add_parser("send", help="send DICOM files or folders with C-STORE",
                          description="C-STORE every DICOM file under PATH to a peer, as stored (same "
                                      "transfer syntax, same bytes).")
    send.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="files or folders (recursive)")
    send.add_argument("--to", required=True, metavar="AE@HOST:PORT", help="the destination")
    _add_scu_options(send)
    send.set_defaults(func=cmd_send)

    echo_parser = sub.add_parser("echo", help="C-ECHO a peer", description="Verify a DICOM peer answers.")
    echo_parser.add_argument("peer", metavar="AE@HOST:PORT")
    _add_scu_options(echo_parser)
    echo_parser.set_defaults(func=cmd_echo)

    models = sub.add_parser("models", help="list or verify the installed models",
                            description="Models are <name>.onnx + <name>.yaml (manifest) in analysis.models.")
    models_sub = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, func, text in (
            ("list", cmd_models_list, "print each manifest: name, version, modality, labels (* = positive)"),
            ("verify", cmd_models_verify, ("check each model as the node does at start: file present, sha256, "
                                           "graph inputs/outputs, Grad-CAM head; exit 1 if one fails"))):
        action = models_sub.add_parser(name, help=text, description=text)
        action.add_argument("--models", type=Path, help="models folder (default: analysis.models)")
        action.set_defaults(func=func)

    doctor = sub.add_parser("doctor", help="check configuration, models, ports, disk and destinations",
                            description="Check the configuration and what it points at, and say in plain words "
                                        "what is wrong. Exit 1 when a problem was found (warnings do not count).")
    doctor.add_argument("--offline", action="store_true", help="do not contact the destinations")
    doctor.set_defaults(func=cmd_doctor)

    analyze = sub.add_parser("analyze", help="analyse the DICOM studies in a folder, offline",
                             description="Route, select the series, run the ONNX model and Grad-CAM on "
                                         "every study under PATH, with no network. Prints a table (or "
                                         "JSON) and writes heat-map PNGs to --out.")
    analyze.add_argument("path", type=Path, metavar="PATH", help="a DICOM file or folder (recursive)")
    analyze.add_argument("--json", action="store_true", help="print JSON instead of a table")
    analyze.add_argument("--out", type=Path, help="folder for heat-map overlay PNGs")
    analyze.add_argument("--models", type=Path, help="models folder (default: analysis.models, 'models')")
    analyze.add_argument("-v", "--verbose", action="store_true", help="log at the configured level")
    analyze.set_defaults(func=cmd_analyze)

    dead = sub.add_parser("deadletter", help="list or replay deliveries that ran out of attempts",
                          description="A delivery that failed max_attempts times (or was refused for good) "
                                      "is dead. 'list' prints them; 'replay' makes them pending again with a "
                                      "fresh attempt count (all, or the given ids).")
    dead.add_argument("action", choices=["list", "replay"])
    dead.add_argument("ids", nargs="*", type=int, metavar="ID", help="delivery ids to replay (default: all)")
    dead.set_defaults(func=cmd_deadletter)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from onconode import runtime

    runtime.configure()
    args = build_parser().parse_args(argv)
    command: Command = args.func
    try:
        return command(args)
    except UsageError as err:
        print(f"onconode {args.command}: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
