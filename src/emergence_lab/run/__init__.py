"""Running one model: a run folder in, a trained run folder out. Nothing here knows Hydra's launchers,
sweeps or the command line; the launch layer resolves those and calls `train.train(cfg, run_dir, ...)`."""
