"""Find a CPython of one minor version on this machine, offline.

``python3 tests/lambda_runtime/interpreter.py 3.13`` prints the interpreter's path (exit 0),
or says where it looked (exit 1). ``make test`` uses it to run the runtime suite on the
Lambda functions' Python; the bundle test uses :func:`find_python`.

Hand-written rather than ``uv python find``: uv stops at the first ``python3.X`` on ``PATH``
that fails to run, and pyenv's shims fail for every version that is installed but not
selected, which is how the test machines have it. Standard library only: it runs before any
environment exists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

EXPLICIT_VARIABLE = "LAMBDA_PYTHON"


def _patch(path: Path) -> tuple[int, ...]:
    match = re.search(r"(\d+)\.(\d+)\.(\d+)", str(path))
    return tuple(int(part) for part in match.groups()) if match else ()


def candidates(version: str) -> Iterator[Path]:
    """Where a ``python<version>`` may be: ``$LAMBDA_PYTHON``, ``PATH``, pyenv, uv, the system."""
    explicit = os.environ.get(EXPLICIT_VARIABLE)
    if explicit:
        yield Path(explicit)
    name = f"python{version}"
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        if directory:
            yield Path(directory) / name
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    uv_pythons = Path(
        os.environ.get("UV_PYTHON_INSTALL_DIR") or Path.home() / ".local/share/uv/python"
    )
    for pattern in (
        pyenv.glob(f"versions/{version}.*/bin/{name}"),
        uv_pythons.glob(f"cpython-{version}.*/bin/{name}"),
    ):
        yield from sorted(pattern, key=_patch, reverse=True)
    for prefix in ("/usr/local/bin", "/usr/bin"):
        yield Path(prefix) / name


def runs_as(path: Path, version: str) -> bool:
    """Whether ``path`` starts and is CPython ``version``."""
    if not path.is_file() or not os.access(path, os.X_OK):
        return False
    probe = (
        "import sys, platform; "
        "print(platform.python_implementation(), '%d.%d' % sys.version_info[:2])"
    )
    try:
        proc = subprocess.run(
            [str(path), "-I", "-c", probe], capture_output=True, text=True, timeout=30, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and proc.stdout.split() == ["CPython", version]


def find_python(version: str) -> Path | None:
    """The first working CPython ``version`` (``"3.13"``) among :func:`candidates`, if any."""
    seen: set[Path] = set()
    for path in candidates(version):
        if path not in seen:
            seen.add(path)
            if runs_as(path, version):
                return path
    return None


def where_looked(version: str) -> str:
    """What a skip message names: the places searched for ``python<version>``."""
    pyenv = os.environ.get("PYENV_ROOT") or "~/.pyenv"
    return (
        f"python{version} (CPython {version}) was not found in ${EXPLICIT_VARIABLE}, on PATH, "
        f"in {pyenv}/versions/{version}.*, in uv's managed Pythons or in /usr/bin"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not re.fullmatch(r"3\.\d+", argv[1]):
        print(f"usage: {argv[0]} 3.X", file=sys.stderr)
        return 2
    found = find_python(argv[1])
    if found is None:
        print(where_looked(argv[1]), file=sys.stderr)
        return 1
    print(found)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
