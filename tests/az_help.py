"""Run ``az <command> --help`` for many commands in ONE process of the real Azure CLI.

Executed with ``.venv-azcli/bin/python`` (the CLI's own interpreter; not importable from the app's
venv): reads a JSON list of commands (lists of words) on stdin, writes ``{"<words>": {"code",
"stdout"}}`` on stdout. Each command goes through ``AzCli.invoke``, the entry point ``az`` itself
calls, so the help page is the one ``az <command> --help`` prints; loading the CLI once instead of
once per command is what makes checking every documented command affordable.
"""

import contextlib
import io
import json
import sys

from azure.cli.core import get_default_cli


def main() -> None:
    pages = {}
    for words in json.loads(sys.stdin.read()):
        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            try:
                code = get_default_cli().invoke([*words, "--help"], out_file=buffer)
            except SystemExit as exc:  # knack exits after printing help, or on an unknown command
                code = exc.code if isinstance(exc.code, int) else 1
        pages[" ".join(words)] = {"code": code, "stdout": buffer.getvalue()}
    json.dump(pages, sys.stdout)


if __name__ == "__main__":
    main()
