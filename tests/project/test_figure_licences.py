"""The committed figures show redistributable inputs only (docs/img/CREDITS.md).

The dev media and the training corpus may not be redistributed, so no script that writes
into docs/img may read them, every committed picture is accounted for in CREDITS.md, and
every picture the docs show exists."""

from __future__ import annotations

import re

from _paths import REPO

IMG = REPO / "docs" / "img"
# the names of dev-media / corpus files, and the variables that locate them
FORBIDDEN = re.compile(r"FACEGEO_MEDIA|FACEGEO_CORPUS|shared/media|shared/corpus|media_dir|"
                       r"\blp_[sd]\d+\b|3ddfa_\w+\.jpg")


def _figure_writers():
    """Scripts that write into docs/img: the docs' make_figures_* (except the zoo strips,
    which write to the ignored out/), and the figure functions of the benchmarks."""
    for p in sorted((REPO / "docs").glob("make_figures_*.py")):
        if p.name != "make_figures_zoo.py":
            yield p


def test_figure_scripts_read_no_media_or_corpus():
    bad = {p.name: sorted(set(FORBIDDEN.findall(p.read_text())))
           for p in _figure_writers() if FORBIDDEN.search(p.read_text())}
    assert not bad, f"figure scripts that read the dev media / corpus: {bad}"
    zoo = (REPO / "docs" / "make_figures_zoo.py").read_text()
    assert "docs/img" not in zoo.replace("never committed", "")


def test_benchmark_figures_come_from_figure_inputs():
    """The benchmarks that write docs/img pictures draw them from figure_inputs."""
    for name in ("bench_fitting.py", "bench_landmarks.py"):
        src = (REPO / "benchmarks" / name).read_text()
        assert "figure_inputs" in src, name


def test_every_committed_figure_is_credited_and_every_shown_figure_exists():
    credits = (IMG / "CREDITS.md").read_text()
    pngs = {p.name for p in IMG.glob("*.png")}
    assert pngs
    assert not [n for n in pngs if n not in credits], "figures missing from CREDITS.md"
    shown = set()
    for md in [*REPO.glob("*.md"), *(REPO / "docs").rglob("*.md")]:
        shown |= set(re.findall(r"img/([\w.-]+\.png)", md.read_text()))
    assert shown <= pngs, f"docs show missing figures: {sorted(shown - pngs)}"
