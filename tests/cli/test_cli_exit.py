"""The ``layerkit`` program ends with a hard exit (no interpreter teardown) without losing anything:
exit codes, flushed output, and threads still working are waited for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def _run(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False,
                          timeout=120)


def test_exit_codes_and_output_survive_the_hard_exit() -> None:
    ok = subprocess.run([sys.executable, "-m", "layerkit", "--version"], capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("layerkit, version ")
    usage = subprocess.run([sys.executable, "-m", "layerkit", "no-such-command"], capture_output=True, text=True,
                           check=False)
    assert usage.returncode == 2 and "No such command" in usage.stderr
    # everything written to a pipe arrives, however much (stdout is block-buffered there)
    big = _run("import layerkit.cli as c\n"
               "def main(argv=None):\n"
               "    print('x' * 100_000, end='')\n"
               "    raise SystemExit(3)\n"
               "c.main = main\n"
               "c.run()\n")
    assert big.returncode == 3 and len(big.stdout) == 100_000


def test_a_message_exit_is_printed_and_fails() -> None:
    proc = _run("import layerkit.cli as c\n"
                "def main(argv=None):\n"
                "    raise SystemExit('gone wrong')\n"
                "c.main = main\n"
                "c.run()\n")
    assert proc.returncode == 1 and proc.stderr.strip() == "gone wrong"


def test_a_thread_still_working_is_waited_for(tmp_path: Path) -> None:
    done = tmp_path / "done"
    proc = _run("import sys, threading, time\n"
                "import layerkit.cli as c\n"
                "def work():\n"
                "    time.sleep(0.3)\n"
                "    open(sys.argv[1], 'w').write('finished')\n"
                "def main(argv=None):\n"
                "    threading.Thread(target=work).start()\n"
                "c.main = main\n"
                "c.run()\n", str(done))
    assert proc.returncode == 0
    assert done.read_text() == "finished"


def test_the_program_raises_the_collectors_threshold_before_importing_the_command_line() -> None:
    proc = _run("import gc, sys, types\n"
                "import layerkit.__main__ as program\n"
                "cli = types.ModuleType('layerkit.cli')\n"
                "cli.run = lambda: print(gc.get_threshold()[0], 'click' in sys.modules)\n"
                "sys.modules['layerkit.cli'] = cli\n"
                "program.run()\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(50_000), "False"]
    # and the installed command goes through it (pyproject's console script)
    pyproject = (Path(__file__).parents[2] / "pyproject.toml").read_text()
    assert 'layerkit = "layerkit.__main__:run"' in pyproject
