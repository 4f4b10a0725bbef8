"""Run many `vaekit` command lines at the cost of one import: a server process imports vaekit once (about 2 of
the 3 seconds a `python -m vaekit` call takes here) and forks a child per command, which changes into the
command's folder, points its stdout and stderr at files and runs `vaekit.cli.main.main(argv)` as `python -m
vaekit` would. The server runs no tensor code before it forks, so each child starts as a fresh process would.
The README and docs example tests run their long lists of commands through it.
"""

from __future__ import annotations

import json
import select
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import TracebackType

SERVER = r"""
import json, os, sys
from vaekit.cli.main import main

def child(request):
    os.chdir(request["cwd"])
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    try:
        code = main(request["argv"])
    except SystemExit as exc:  # argparse's exits
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)

for line in sys.stdin:
    request = json.loads(line)
    pid = os.fork()
    if pid == 0:
        child(request)
    _, status = os.waitpid(pid, 0)
    print(os.waitstatus_to_exitcode(status), flush=True)
"""


class CliServer:
    """`with CliServer() as cli: out = cli.run(["train", ...], cwd)` -> CompletedProcess (stdout, stderr text)."""

    def __enter__(self) -> CliServer:
        self.folder = Path(tempfile.mkdtemp(prefix="vaekit-cli-"))
        self.process = subprocess.Popen([sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        return self

    def run(self, argv: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        assert self.process.stdin is not None and self.process.stdout is not None
        out, err = self.folder / "stdout", self.folder / "stderr"
        request = {"argv": argv, "cwd": str(cwd), "stdout": str(out), "stderr": str(err)}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            self.process.kill()
            raise subprocess.TimeoutExpired(["vaekit", *argv], timeout)
        code = int(self.process.stdout.readline())
        texts = [path.read_text() for path in (out, err)]
        return subprocess.CompletedProcess(["vaekit", *argv], code, *texts)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        self.process.wait(timeout=60)
        shutil.rmtree(self.folder, ignore_errors=True)
