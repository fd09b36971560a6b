"""``jump ssh``'s own throughput: a node's output to the client's stdout, against OpenSSH's
``ssh -J`` (through a Debian ``sshd`` jump host to another), same run.

``head -c SIZE /dev/zero`` on the node, the client's stdout a pipe read as fast as it comes
(by ``cat`` into /dev/null) and, separately, /dev/null itself. Best of ``--runs`` each. With
``--baseline DIR`` (a checkout of older code) its ``jump`` runs too, through the same
platform, so a change to the client is measured against what it replaces in the same run.
"""

import argparse
import os
import subprocess
import sys
import time

from bench.harness import BIN, jump_home, running


def _seconds(argv: list[str], env: dict[str, str], to_pipe: bool) -> float:
    """Wall time of ``argv`` with its stdout read to the end (or sent to /dev/null)."""
    began = time.monotonic()
    if to_pipe:
        client = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
        assert client.stdout is not None
        with client.stdout:
            subprocess.run(["cat"], stdin=client.stdout, stdout=subprocess.DEVNULL, timeout=600)
        code = client.wait(timeout=600)
    else:
        code = subprocess.run(argv, stdout=subprocess.DEVNULL, env=env, timeout=600).returncode
    took = time.monotonic() - began
    if code != 0:
        raise RuntimeError(f"{argv[0]} exited {code}")
    return took


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256, help="MiB streamed per run")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", help="a checkout of older jumpgate code to compare")
    args = parser.parse_args()
    stream = f"head -c {args.mib}M /dev/zero"
    with running() as bench:
        env = jump_home(bench)
        clients = {
            "jump ssh": ([str(BIN / "jump"), "ssh", "web-1", stream], env),
            "openssh ssh -J": (
                ["ssh", "-F", str(bench.openssh_ssh_config), "node", stream],
                dict(os.environ),
            ),
        }
        if args.baseline:
            older = {**env, "PYTHONPATH": os.path.abspath(args.baseline)}
            clients["jump ssh (baseline)"] = (
                [sys.executable, "-m", "jumpgate.cli.jump.main", "ssh", "web-1", stream],
                older,
            )
        print(f"client throughput, '{stream}', best of {args.runs}")
        for to_pipe in (True, False):
            best = {
                name: min(_seconds(argv, run_env, to_pipe) for _ in range(args.runs))
                for name, (argv, run_env) in clients.items()
            }
            where = "a pipe" if to_pipe else "/dev/null"
            for name, seconds in best.items():
                rate = args.mib * 1.048576 / seconds
                ratio = best["openssh ssh -J"] / seconds
                print(f"  to {where:9} {name:22} {rate:7.1f} MB/s  ({ratio:.2f} of OpenSSH)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
