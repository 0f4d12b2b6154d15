"""emergence-lab analysis: collect results, fit scale-dependent thresholds, test for metric artefacts,
and draw paper-ready figures and a report.

Runs on results alone: nothing in this package imports torch or lightning (wandb only when asked for).
Entry points: `analysis.cli.analyze_main` (`emergence analyze`), `analysis.cli.figures_main`
(`emergence figures`) and `python -m analysis.bench`.
"""
