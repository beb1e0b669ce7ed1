"""`validate`: named checks that an artifact can resume training (checks), file and state-file integrity
(integrity), many artifacts at once (run), and CI reports (junit)."""
