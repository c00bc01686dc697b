"""The README and the guides in docs/ give commands that the command line accepts, and links that exist."""

import re
import shlex
from pathlib import Path

import pytest

from cinefoley.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands(page: Path) -> list[str]:
    """Every ``cinefoley ...`` line of the page's bash blocks, continuation lines joined; of a ``torchrun ...
    --no-python cinefoley ...`` line, its ``cinefoley ...`` part."""
    found = []
    for block in re.findall(r"```bash\n(.*?)```", page.read_text(), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line.startswith("torchrun ") and " --no-python cinefoley " in line:
                line = line.split(" --no-python ", 1)[1]
            if line.startswith("cinefoley "):
                found.append(line)
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_command_parses(page):
    lines = commands(page)
    if page.name in ("README.md", "vggsound.md", "study.md"):
        assert lines, f"{page.name} gives no cinefoley command"
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        try:
            args = build_parser().parse_args(argv)
        except SystemExit as e:  # argparse exits 2 on a bad command line, 0 after --help
            assert e.code == 0, f"{page.name}: `{line}` is not a valid command"
            continue
        assert callable(args.func), line


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_links_to_files_exist(page):
    for target in re.findall(r"\]\(([^)#]+)\)", page.read_text()):
        if "://" not in target:
            assert (page.parent / target).exists(), f"{page.name} links to {target}, which does not exist"
