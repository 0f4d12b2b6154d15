"""Figures and report: read back, not blank, sized sensibly, and byte-identical when rebuilt."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emergence_lab.analysis.cli import analyze_main, figures_main

from analysis_helpers import png_pixels, small_sweep

KINDS = ("scale", "phase", "training", "artefact", "positions", "subtasks")
# Training frequencies given to the answer positions, so the subtasks figure has weighted subtasks to draw.
POSITION_WEIGHTS = {"pos0": 0.4, "pos1": 0.3, "pos2": 0.2, "pos3": 0.1}
FORMATS = ("png", "pdf", "svg")


@pytest.fixture(scope="module")
def analysed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("figs")
    sweep = small_sweep(root / "sweep")
    for run_json in sweep.glob("*/run.json"):
        info = json.loads(run_json.read_text())
        run_json.write_text(json.dumps({**info, "subtask_weights": POSITION_WEIGHTS}))
    out = root / "out"
    assert analyze_main([str(sweep), "--out", str(out), "--boot", "30", "--quiet", "--jobs", "1"]) == 0
    return out


def snapshot(out: Path) -> dict[str, bytes]:
    files = sorted(out.glob("figures/*")) + [out / n for n in ("report.md", "report.html", "thresholds.csv")]
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in files}


def test_every_figure_in_every_format(analysed: Path) -> None:
    names = {p.name for p in (analysed / "figures").iterdir()}
    assert names == {f"{k}_addition.{f}" for k in KINDS for f in FORMATS}


@pytest.mark.parametrize("kind", KINDS)
def test_png_is_sized_and_not_blank(analysed: Path, kind: str) -> None:
    pixels = png_pixels(analysed / "figures" / f"{kind}_addition.png")
    height, width = pixels.shape[:2]
    assert 300 <= height <= 3000 and 400 <= width <= 3000
    grey = pixels[..., :3].mean(axis=2)
    assert grey.var() > 1e-3  # not a blank canvas
    assert (grey < 0.5).mean() > 0.005  # some ink: lines, text, markers


def test_pdf_and_svg_are_valid(analysed: Path) -> None:
    for kind in KINDS:
        pdf = (analysed / "figures" / f"{kind}_addition.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and pdf.rstrip().endswith(b"%%EOF") and len(pdf) > 5000
        assert b"CreationDate" not in pdf  # no date: rebuilds are byte-identical
        root = ET.parse(analysed / "figures" / f"{kind}_addition.svg").getroot()
        assert root.tag.endswith("svg")
        assert float(root.attrib["width"].removesuffix("pt")) > 200
        assert len(list(root.iter())) > 100


def test_figures_command_rebuilds_identical_bytes(analysed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = snapshot(analysed)
    for path in (analysed / "figures").iterdir():
        path.unlink()
    (analysed / "report.md").unlink()
    capsys.readouterr()
    assert figures_main([str(analysed), "--quiet", "--jobs", "1"]) == 0
    printed = capsys.readouterr().out.split()
    assert str(analysed / "figures" / "scale_addition.pdf") in printed
    assert str(analysed / "report.html") in printed
    assert all(Path(p).exists() for p in printed)
    after = snapshot(analysed)
    assert after.keys() == before.keys()
    changed = [name for name in before if before[name] != after[name]]
    assert changed == []


def test_report_has_tables_figures_and_rebuild_command(analysed: Path) -> None:
    md = (analysed / "report.md").read_text()
    assert f"emergence figures {analysed}" in md
    assert "emergence analyze " in md
    assert "## Thresholds and classification" in md and "## Metric artefacts" in md
    for kind in KINDS:
        assert f"](figures/{kind}_addition.png)" in md
    assert "| max_sharpness | 1 |" in md
    html = (analysed / "report.html").read_text()
    assert html.count("<img ") == len(KINDS) and "<table>" in html


def test_tables_written(analysed: Path) -> None:
    thresholds = pd.read_csv(analysed / "thresholds.csv")
    need = {"task", "subtask", "metric", "x", "classification", "emergent", "threshold", "threshold_low"}
    need |= {"threshold_high", "sharpness_decades", "breakthroughness", "linearity", "best_fit", "n_points"}
    need |= {"n_seeds", "backtest_error"}
    assert need <= set(thresholds.columns)
    # two depths (the default groups by depth) x 2 splits x (6 metrics + 4 answer positions)
    assert len(thresholds) == 2 * 2 * (6 + 4)
    assert thresholds.groupby("depth").size().to_dict() == {1: 20, 2: 20}
    assert set(thresholds["x"]) == {"n_params"}
    ems = thresholds.query("split == 'test' and subtask == 'all' and metric == 'exact_match'")
    for _, em in ems.iterrows():
        assert em["classification"] == "emergent" and em["emergent"]
        assert em["threshold_low"] <= em["threshold"] <= em["threshold_high"]
    # the synthetic task turns on at ~10^5.35 parameters whatever the depth; 5 sizes 0.6 decades apart, so
    # the detector places exact match's jump (the product of the positions', a little later) within one step
    assert np.allclose(np.log10(ems["threshold"]), 5.35, atol=0.45)
    assert (ems["bracket_low"] <= ems["threshold"]).all() and (ems["threshold"] <= ems["bracket_high"]).all()
    check = pd.read_csv(analysed / "metric_check.csv")
    assert list(check["task"]) == ["addition", "addition"] and list(check["depth"]) == [1, 2]
    assert set(check["verdict"]) <= {"metric_induced", "persists", "no_jump"}
    assert list(check["answer_len"]) == [4, 4]
    results = pd.read_parquet(analysed / "results.parquet")
    assert len(results) == len(pd.read_csv(analysed / "results.csv")) == 10 * 2 * 3 * 2 * 10
    points = pd.read_csv(analysed / "points.csv")
    assert {"mean", "std", "n_seeds", "ci_low", "ci_high"} <= set(points.columns)
    assert np.all(points["ci_low"] <= points["mean"] + 1e-12)


@pytest.mark.slow
def test_worker_processes_give_the_same_bytes(analysed: Path, tmp_path: Path, monkeypatch) -> None:
    """Curves and figures spread over two spawned processes give exactly what one process gives."""
    import emergence_lab.analysis.curves
    import emergence_lab.analysis.figures

    monkeypatch.setattr(emergence_lab.analysis.curves, "PARALLEL_MIN_CURVES", 2)
    monkeypatch.setattr(emergence_lab.analysis.curves, "PARALLEL_MIN_FITS", 0)
    monkeypatch.setattr(emergence_lab.analysis.figures, "PARALLEL_MIN_FIGURES", 2)
    out = tmp_path / "parallel"
    out.mkdir()
    for name in ("results.parquet", "results.csv"):
        (out / name).write_bytes((analysed / name).read_bytes())
    assert figures_main([str(out), "--quiet", "--jobs", "2"]) == 0
    assert figures_main([str(analysed), "--quiet", "--jobs", "1"]) == 0
    one, two = snapshot(analysed), snapshot(out)
    assert {k: v for k, v in one.items() if k != "report.md" and k != "report.html"} == {
        k: v for k, v in two.items() if k != "report.md" and k != "report.html"
    }


def test_figures_draw_one_series_per_depth(analysed: Path) -> None:
    """The sweep has two depths: the scale and artefact figures name both in their legends, the positions
    figure shows the deepest (SVG keeps its text as text)."""
    text = {kind: (analysed / "figures" / f"{kind}_addition.svg").read_text() for kind in KINDS}
    assert "one series per depth (test split)" in text["scale"]
    assert ">depth 1<" in text["scale"] and ">depth 2<" in text["scale"]
    assert "depth 1 · check: " in text["artefact"] and "depth 2 · check: " in text["artefact"]
    assert "depth 2 (the deepest), test split" in text["positions"]
    assert "each subtask against scale" in text["subtasks"] and "depth 2, test split" in text["subtasks"]
    assert "frequency rank (1: most frequent)" in text["subtasks"] and "all (mean)" in text["subtasks"]
    assert "Curves are grouped by depth (`--by depth`)" in (analysed / "report.md").read_text()


def test_one_registry_gives_every_kind_its_drawing_cost_and_caption(analysed: Path) -> None:
    """Each kind is listed once (`figure_kinds.REGISTRY`), with one draw function bound in `figures.DRAW`;
    the report's captions are the registry's (grouped by depth: a kind's depth caption where it has one)."""
    from emergence_lab.analysis import figures, options
    from emergence_lab.analysis.figure_kinds import REGISTRY, figure_kind

    assert tuple(k.name for k in REGISTRY) == options.FIGURE_KINDS == KINDS == tuple(figures.DRAW)
    assert all(callable(figures.DRAW[k]) and figure_kind(k).cost > 0 for k in KINDS)
    assert figure_kind("nonsense") is None
    md = (analysed / "report.md").read_text()
    for kind in REGISTRY:
        caption = kind.depth_caption or kind.caption
        assert f"![{caption}](figures/{kind.name}_addition.png)" in md
        assert kind.caption_for("none") == kind.caption


def test_the_report_opens_with_each_tasks_verdicts_beside_its_scale_figure(analysed: Path) -> None:
    import html as html_lib
    import re

    md = (analysed / "report.md").read_text()
    order = [
        md.index("\n## addition\n"),
        md.index("](figures/scale_addition.png)"),
        md.index("\n## Figures\n"),
        md.index("\n## Thresholds and classification\n"),
        md.index("\n## Runs left out\n"),
    ]
    assert order == sorted(order)
    assert md.index("![") == md.index(
        "![", md.index("\n## addition\n")
    )  # the first image is the scale figure
    findings = md[order[0] : order[1]]
    sentences = [line[2:] for line in findings.splitlines() if line.startswith("- ")]
    # the main split, every metric and depth (exact match first), then one line for the ood split
    assert [s.split(":")[0] for s in sentences[:4]] == [
        "exact match, depth 1",
        "exact match, depth 2",
        "token accuracy, depth 1",
        "token accuracy, depth 2",
    ]
    assert len(sentences) == 2 * 6 + 1 and sentences[-1].startswith("ood split: ")
    ood = pd.read_csv(analysed / "thresholds.csv").query("split == 'ood' and subtask == 'all'")
    counts = ood["classification"].value_counts()
    assert sentences[-1].startswith(f"ood split: {counts['emergent']} emergent, ")
    thresholds = pd.read_csv(analysed / "thresholds.csv").set_index(["split", "subtask", "metric", "depth"])
    NUM = r"[\d.]+[kM]"
    for depth in (1, 2):
        row = thresholds.loc[("test", "all", "exact_match", depth)]
        said = re.match(
            rf"exact match, depth {depth}: emergent at ({NUM}) parameters \(95% CI ({NUM})-({NUM})[;)]",
            sentences[depth - 1],
        )
        assert said is not None, sentences[depth - 1]
        for number, column in zip(
            said.groups(), ("threshold", "threshold_low", "threshold_high"), strict=True
        ):
            value = float(number[:-1]) * {"k": 1e3, "M": 1e6}[number[-1]]
            assert value == pytest.approx(row[column], rel=0.06)
    page = (analysed / "report.html").read_text()
    finding = page[page.index("<div class='finding'>") :].split("</div>", 1)[0]
    assert "src='figures/scale_addition.png'" in finding
    for sentence in sentences:
        assert f"<li>{html_lib.escape(sentence)}</li>" in finding
    assert page.index("<div class='finding'>") < page.index("<table>")


def test_the_reports_tables_are_narrow_and_lead_with_the_main_split_and_emergent_curves(
    analysed: Path,
) -> None:
    md = (analysed / "report.md").read_text()
    table = md.split("\n## Thresholds and classification\n", 1)[1].split("\n### ", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("| ")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "split",
        "metric",
        "depth",
        "verdict",
        "threshold (95% CI)",
        "rise (decades)",
        "noise",
        "seeds",
        "reason",
    ]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[1:]]
    splits = [r[0] for r in rows]
    assert splits == sorted(splits, key=lambda s: s != "test") and len(rows) == 2 * 2 * 6
    test_verdicts = [r[3] for r in rows if r[0] == "test"]
    rank = {"emergent": 0, "smooth": 3, "absent": 4}
    assert test_verdicts == sorted(test_verdicts, key=rank.__getitem__) and test_verdicts[0] == "emergent"
    assert "breakthroughness" not in md and "p_change" not in md
    thresholds = pd.read_csv(analysed / "thresholds.csv")
    assert {"breakthroughness", "p_change", "reason"} <= set(thresholds.columns)  # the CSV keeps them all


def test_the_verdict_sentence() -> None:
    from emergence_lab.analysis.report import finding, size

    assert [size(v) for v in (768, 6088.6, 22_000, 42_793, 150_300, 1.5e6, 7e9, 1.2e15)] == [
        "768",
        "6.1k",
        "22k",
        "43k",
        "150k",
        "1.5M",
        "7B",
        "1.2e+15",
    ]
    row = {
        "metric": "exact_match",
        "depth": 2,
        "x": "n_params",
        "classification": "emergent",
        "threshold": 22_000.0,
        "threshold_low": 7_000.0,
        "threshold_high": 64_000.0,
    }
    assert finding(row, {"verdict": "persists"}) == (
        "exact match, depth 2: emergent at 22k parameters (95% CI 7k-64k); metric check: persists"
    )
    # fields a detector may add are read where present
    extra = {**row, "seed_threshold_low": 18_000.0, "seed_threshold_high": 30_000.0, "noise_source": "seeds"}
    assert finding(extra, {"verdict": "metric_induced"}) == (
        "exact match, depth 2: emergent at 22k parameters (95% CI 7k-64k; per-seed 18k-30k); noise: seeds; "
        "metric check: metric-induced"
    )
    # the other verdicts say why, in the detector's words (its reason, or its power statement)
    why = "changes significantly (p = 0.001) but not as a jump: its rise takes about 1.5 decades (> 1)"
    smooth = {"metric": "token_accuracy", "depth": None, "classification": "smooth", "reason": why}
    assert finding(smooth) == f"token accuracy: smooth ({why})"
    absent = {"metric": "loss", "depth": 1, "classification": "absent", "x": "flops", "reason": "no change"}
    assert finding(absent, {"verdict": "no_jump"}) == "loss, depth 1: absent (no change)"
    other = {
        "metric": "acc",
        "classification": "inconclusive",
        "reason": "jump-shaped, but a jump does not beat the line",
        "power_statement": "3 more seeds would decide.",
    }
    assert finding(other) == "acc: inconclusive (3 more seeds would decide.)"
    lm_eval = {"metric": "exact_match,strict-match", "classification": "absent", "reason": "no change"}
    assert finding(lm_eval) == "exact match (strict-match): absent (no change)"


def test_split_verdicts_are_grouped_and_wrapped_to_fit_over_a_panel() -> None:
    from emergence_lab.analysis.figures import TITLE_CHARS, _grouped_lines, verdict_lines

    splits = ["test", "step1", "step2", "train"]
    same = _grouped_lines({s: [s] for s in splits}, dict.fromkeys(splits, "smooth"), "")
    assert same == ["smooth: test, step1, step2, train"]
    mixed = _grouped_lines(
        {s: [s] for s in splits},
        {"test": "smooth", "step1": "emergent", "step2": "emergent", "train": "smooth"},
        "",
    )
    assert mixed == ["emergent: step1, step2", "smooth: test, train"]
    assert all(len(line) <= TITLE_CHARS for line in same + mixed)
    assert verdict_lines({1: "absent", 2: "emergent", 3: "emergent"}) == [
        "emergent: depth 2, 3 · absent: depth 1"
    ]
