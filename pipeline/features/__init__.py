"""Feature extraction: one module per view (eeg, mel, topo)."""
