"""The repository stands alone: the published traces it uses are vendored intact, and nothing reads a folder beside it."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VENDORED = REPO / "data" / "thought-anchors"


def test_vendored_traces_match_their_checksums_and_keep_the_licence():
    sums = (VENDORED / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    assert len(sums) == 84
    for line in sums:
        digest, name = line.split(maxsplit=1)
        data = (VENDORED / name.removeprefix("./")).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, f"{name} differs from the published file"
    listed = {line.split(maxsplit=1)[1].removeprefix("./") for line in sums}
    on_disk = {
        str(p.relative_to(VENDORED))
        for p in VENDORED.rglob("*")
        if p.is_file() and p.name not in {"SHA256SUMS", "LICENSE.md", "PROVENANCE.md"}
    }
    assert on_disk == listed, "a vendored file is missing from SHA256SUMS, or listed but absent"
    assert "MIT License" in (VENDORED / "LICENSE.md").read_text(encoding="utf-8")
    assert len(list(VENDORED.glob("*/*_base_solution/problem_*"))) == 20


def test_no_tracked_file_reads_a_folder_beside_the_repository():
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    # The patterns are assembled so that this file does not match itself.
    beside, env = "../" + "shared", "COTSCOPE_" + "SHARED"
    files = (
        subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
        .stdout.decode()
        .split("\0")
    )
    offenders = []
    for name in filter(None, files):
        path = REPO / name
        if name.startswith("data/") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if beside in text or env in text:
            offenders.append(name)
    assert offenders == [], f"these files read a folder beside the repository: {offenders}"
