"""Test-only entry point while routeway.cli and helper-1's proxy modules are not in place.

Spawned workers re-import this file as their main module, so the stand-in is installed in
them too.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys

if importlib.util.find_spec("routeway.proxy.app") is None:
    import _standin_proxy

    sys.modules["routeway.proxy.runtime"] = _standin_proxy
    sys.modules["routeway.proxy.app"] = _standin_proxy


def main() -> int:
    from routeway.proxy import commands

    from routeway import serve

    parser = argparse.ArgumentParser(prog="routeway")
    sub = parser.add_subparsers(required=True)
    serve.register(sub)
    commands.register(sub)
    args = parser.parse_args()
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
