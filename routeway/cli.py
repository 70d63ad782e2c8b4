"""The `routeway` command line.

`validate` and `render` live here (they are pure: files in, text out). The long-running
commands register themselves from their own packages: `serve` (routeway.serve), `proxy` and
`mock-backend` (routeway_proxy), `operator` (routeway_operator). Their `register` only declares
arguments; heavy imports (aiohttp apps, kopf) happen inside the command, so `validate` in a
pre-commit hook stays quick.

Exit codes: 0 success, 1 the input is invalid, 2 usage errors (argparse's convention).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Sequence

import yaml

from routeway.local import Evaluation, GatewayChoiceError, choose_gateway, evaluate
from routeway.render import render
from routeway.resources import GROUP

COMMAND_MODULES = (
    "routeway.serve",
    "routeway_proxy.commands",
    "routeway_proxy.mock_backend",
    "routeway_operator.commands",
    "routeway.rollout_cli",
)


def _add_files(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        metavar="PATH",
        help="manifest file or directory (recursive); '-' reads stdin; repeatable",
    )
    add_skip_foreign(parser)
    parser.add_argument("--assume-secrets", action="store_true", help=ASSUME_SECRETS_HELP)


SKIP_FOREIGN_HELP = (
    "leave out documents that are not Routeway's instead of reporting them, to point at a whole "
    "GitOps folder: other kinds (ConfigMap, HelmRelease, Application, kustomization.yaml, ...) and "
    "YAML that is no Kubernetes object (values files). Still checked: Routeway's kinds (also under "
    f"a wrong apiVersion), anything in {GROUP}, Secrets (SOPS-encrypted ones by key name); YAML "
    "that does not parse is still a problem. ExternalSecret and SealedSecret documents are read as "
    "declaring the Secret their controller makes"
)

ASSUME_SECRETS_HELP = (
    "take a Secret that backends or gateways refer to but that is not in the files (nor made by an "
    "ExternalSecret or SealedSecret in them) as existing in the cluster, with every key asked of it: "
    "for Secrets kept out of Git. Listed on stderr instead of reported as SecretNotFound; a Secret "
    "in the files is still checked as written"
)


def add_skip_foreign(parser: argparse.ArgumentParser, *, counted: bool = True) -> None:
    """The same flag on every command that reads manifests (validate, render, serve)."""
    counts = ". Prints how many documents were skipped, per kind, on stderr" if counted else ""
    parser.add_argument("--skip-foreign", action="store_true", help=SKIP_FOREIGN_HELP + counts)


def _report(args: argparse.Namespace, ev: Evaluation) -> None:
    """stderr lines on what was not checked as written: skipped documents, Secrets that are
    encrypted, made from other documents, or missing (assumed with --assume-secrets)."""
    if args.skip_foreign:
        print(ev.loaded.describe_skipped(), file=sys.stderr)
    elif ev.loaded.foreign:
        print(
            f"{ev.loaded.foreign} document(s) are not Routeway's; --skip-foreign leaves such documents out",
            file=sys.stderr,
        )
    for note in ev.notes():
        print(note, file=sys.stderr)


def run_validate(args: argparse.Namespace) -> int:
    ev = evaluate(args.files, skip_foreign=args.skip_foreign, assume_secrets=args.assume_secrets)
    for problem in ev.problems:
        print(problem)
    _report(args, ev)
    if ev.problems:
        print(f"{len(ev.problems)} problem(s) found", file=sys.stderr)
        return 1
    count = len(ev.loaded.objects)
    print(f"valid: {count} object(s) in {len(ev.loaded.files)} file(s)", file=sys.stderr)
    return 0


def run_render(args: argparse.Namespace) -> int:
    ev = evaluate(args.files, skip_foreign=args.skip_foreign, assume_secrets=args.assume_secrets)
    for problem in ev.problems:
        print(problem, file=sys.stderr)
    _report(args, ev)
    try:
        key = choose_gateway(ev.translation, args.gateway)
    except GatewayChoiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    document = render(ev.translation.gateways[key]).to_document()
    if args.output == "json":
        print(json.dumps(document, indent=2, sort_keys=True))
    else:
        print(yaml.safe_dump(document, sort_keys=True), end="")
    return 1 if ev.problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="routeway", description="Kubernetes-native AI model gateway: validate, render, serve, operate."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help="check manifests; one line per problem, exit 1 when any")
    _add_files(p)
    p.set_defaults(func=run_validate)

    p = sub.add_parser("render", help="print the ProxyConfig a gateway would serve (no credentials)")
    _add_files(p)
    p.add_argument("--gateway", metavar="NAME", help="gateway to render: NAME or NAMESPACE/NAME")
    p.add_argument("-o", "--output", choices=("json", "yaml"), default="yaml")
    p.set_defaults(func=run_render)

    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `routeway render | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
