"""The daemon around the pipeline: lifecycle, reload, wiring, health, metrics, systemd notify."""
