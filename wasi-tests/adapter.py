"""Kiln adapter for the official wasi-testsuite runner (test-runner/wasi_test_runner.py).

The runner calls this script with `--version`, or with `--test-file FILE` and any number of
`--arg ARG`, `--env K=V` and `--dir DIR` options; it runs the test through `kiln run` and exits
with the program's status, its stdout and stderr passed through. The kiln binary comes from
$TEST_RUNTIME_EXE, else $KILN, else `kiln` on PATH; either variable may hold a command with
arguments (split like a shell would).
"""

import argparse
import os
import shlex
import subprocess
import sys


def kiln_command():
    for var in ("TEST_RUNTIME_EXE", "KILN"):
        value = os.environ.get(var)
        if value:
            return shlex.split(value)
    return ["kiln"]


VALUE_OPTIONS = ("--test-file", "--arg", "--env", "--dir")


def joined(argv):
    """Rewrites `--arg VALUE` as `--arg=VALUE`, so that a value starting with `-` (a program
    argument like `--help`) is taken as the value, not as another option."""
    out = []
    i = 0
    while i < len(argv):
        if argv[i] in VALUE_OPTIONS and i + 1 < len(argv):
            out.append(argv[i] + "=" + argv[i + 1])
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--version", action="store_true")
    parser.add_argument("--test-file", action="store")
    parser.add_argument("--arg", action="append", default=[])
    parser.add_argument("--env", action="append", default=[])
    parser.add_argument("--dir", action="append", default=[])
    args = parser.parse_args(joined(sys.argv[1:]))

    kiln = kiln_command()
    if args.version:
        # The runner expects "NAME VERSION" on one line; `kiln --version` prints "kiln X.Y.Z".
        result = subprocess.run(kiln[:1] + ["--version"], capture_output=True, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stderr)
            return result.returncode
        print(result.stdout.strip())
        return 0
    if not args.test_file:
        parser.error("--test-file is required")

    command = kiln + ["run"]
    for env in args.env:
        command += ["--env", env]
    for directory in args.dir:
        command += ["--dir", directory]
    # Everything after the module belongs to the program, as with `wasmtime run`.
    command += [args.test_file] + args.arg
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())
