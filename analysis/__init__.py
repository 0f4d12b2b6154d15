"""emergence-lab analysis: collect results, fit scale-dependent thresholds, test for metric artefacts,
and draw paper-ready figures and a report.

Runs on results alone: of emergence_lab it imports only the results contract (`emergence_lab.contract`),
and nothing here imports torch, Lightning or Hydra (wandb only when asked for); import-linter checks both.
Entry points: `emergence_lab.analysis.cli.analyze_main` (`emergence analyze`),
`emergence_lab.analysis.cli.figures_main` (`emergence figures`) and `python -m emergence_lab.analysis.bench`.
"""
