"""One error prefix: click's own usage errors (unknown flag, bad value, missing argument, unknown command)
print like the project's errors, one line `error: <what> (msa-cache CMD): see 'msa-cache CMD --help'`,
exit 2, in a real process (the console script's path)."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("args, what, where", [
    (["fit", "--latnt", "3"], "No such option '--latnt'. Did you mean '--latent'?", "msa-cache fit"),
    (["compare", "--seeds", "0"], "Invalid value for '--seeds'", "msa-cache compare"),
    (["predict"], "Missing argument 'RUN'", "msa-cache predict"),
    (["nosuchcmd"], "No such command 'nosuchcmd'", "msa-cache"),
])
def test_usage_errors_are_one_line_with_our_prefix(args, what, where):
    out = subprocess.run([sys.executable, "-m", "msa_cache_cli.main", *args], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"error: {what}") and lines[0].endswith(f"({where}): see '{where} --help'")


def test_help_still_exits_zero():
    out = subprocess.run([sys.executable, "-m", "msa_cache_cli.main", "fit", "--help"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("Usage: msa-cache fit")
